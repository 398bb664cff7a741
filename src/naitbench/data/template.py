"""Prompt formats: how an (instruction, input) pair becomes the text a model is trained on.

One format (`pool.template`) renders the candidate pool and the target sets at preparation,
and features, training and scoring all read those rendered prompts, so activations, losses
and scores see one format. `alpaca` and `plain` are fixed texts; `chat` is the model's own
chat template (the tokenizer's), one user turn then the assistant's turn opened.
"""

from __future__ import annotations

from typing import Any

from naitbench.errors import ConfigError

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
CHAT = "chat"
TEMPLATES = ("alpaca", "plain", CHAT)


def format_prompt(instruction: str, input_text: str = "", template: str = "alpaca") -> str:
    """Render the prompt part (everything before the response) in a fixed-text format."""
    if template == "alpaca":
        if input_text:
            return ALPACA_WITH_INPUT.format(instruction=instruction, input=input_text)
        return ALPACA_NO_INPUT.format(instruction=instruction)
    if template == "plain":
        return f"{_user_text(instruction, input_text)}\n\n"
    if template == CHAT:
        raise ConfigError("pool.template=chat renders with the model's tokenizer: build a "
                          "PromptFormat with it")
    raise ConfigError(f"unknown prompt template pool.template={template!r}; choose one of "
                      f"{TEMPLATES}")


def _user_text(instruction: str, input_text: str) -> str:
    return f"{instruction}\n\n{input_text}" if input_text else instruction


class PromptFormat:
    """`pool.template` bound to the model's tokenizer (which only `chat` reads)."""

    def __init__(self, name: str, tokenizer: Any = None):
        if name not in TEMPLATES:
            raise ConfigError(f"unknown prompt template pool.template={name!r}; choose one of "
                              f"{TEMPLATES}")
        if name == CHAT:
            if tokenizer is None:
                raise ConfigError("pool.template=chat needs the model's tokenizer")
            if not getattr(tokenizer, "chat_template", None):
                raise ConfigError(f"pool.template=chat: the tokenizer of "
                                  f"{tokenizer.name_or_path} has no chat template; use "
                                  f"pool.template=alpaca or plain")
        self.name, self.tokenizer = name, tokenizer

    def __call__(self, instruction: str, input_text: str = "") -> str:
        if self.name != CHAT:
            return format_prompt(instruction, input_text, self.name)
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": _user_text(instruction, input_text)}],
            tokenize=False, add_generation_prompt=True)
        bos = self.tokenizer.bos_token
        if bos and text.startswith(bos) and _adds_bos(self.tokenizer):
            text = text[len(bos):]   # encoding puts it back: one BOS, as in the other formats
        return text


def _adds_bos(tokenizer: Any) -> bool:
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and ids[:1] == [tokenizer.bos_token_id]
