"""Prompt templates: how an (instruction, input) pair becomes the text a model is trained on.

from naitbench.config import ConfigError
The same template formats the candidate pool, the target sets and training, so activations,
losses and scores all see one format.
"""

from __future__ import annotations

from naitbench.config import ConfigError

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
TEMPLATES = ("alpaca", "plain")


def format_prompt(instruction: str, input_text: str = "", template: str = "alpaca") -> str:
    """Render the prompt part (everything before the response) for one sample."""
    if template == "alpaca":
        if input_text:
            return ALPACA_WITH_INPUT.format(instruction=instruction, input=input_text)
        return ALPACA_NO_INPUT.format(instruction=instruction)
    if template == "plain":
        body = f"{instruction}\n\n{input_text}" if input_text else instruction
        return f"{body}\n\n"
    raise ConfigError(f"unknown prompt template {template!r}; choose one of {TEMPLATES}")
