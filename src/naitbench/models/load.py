"""Loading a base model and its tokenizer from a local directory or a hub id."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from naitbench.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_source_dir(model_cfg: Mapping[str, Any]) -> str:
    """Where downstream stages load the model from: the prepared directory or a hub id."""
    return str(model_cfg["dir"])


def resolve_dtype(name: str) -> torch.dtype:
    """fp32 on CPU; on a GPU `auto` picks bf16 where supported, else fp16."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; choose auto or one of {sorted(DTYPES)}")
    return DTYPES[name]


def _loaded(load: Any, path: str | Path, **kwargs: Any) -> Any:
    """`load(path)` (a from_pretrained), with a missing local directory or an unknown hub id
    reported as the user's mistake it is."""
    if looks_local(path) and not Path(path).exists():
        raise FileNotFoundError(f"model directory {path} does not exist: run the "
                                f"prepare_model stage first (dvc repro prepare_model)")
    try:
        return load(str(path), **kwargs)
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"model.dir={path}: not a model directory or hub id that loads "
                          f"offline ({first})") from error


def load_tokenizer(path: str | Path) -> Any:
    """Tokenizer with a pad token (the EOS token where the model has none), padding right."""
    from transformers import AutoTokenizer

    tokenizer = _loaded(AutoTokenizer.from_pretrained, path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def looks_local(path: str | Path) -> bool:
    """A path, not a hub id: absolute, relative with a dot, or deeper than `namespace/name`."""
    text = str(path)
    return Path(text).is_absolute() or text.startswith(".") or text.count("/") >= 2


def load_model(path: str | Path, dtype: str = "auto", device: str | None = None) -> Any:
    """A causal LM in eval mode on `device` (the GPU when present, else the CPU)."""
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = _loaded(AutoModelForCausalLM.from_pretrained, path, dtype=resolve_dtype(dtype))
    return model.to(device).eval()


def build_on_meta(config_file: str | Path) -> Any:
    """The architecture described by a config.json, on the meta device (no weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    data = json.loads(Path(config_file).read_text())
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def num_layers(model_or_config: Any) -> int:
    """Number of transformer blocks (what layer indices in configs refer to)."""
    config = getattr(model_or_config, "config", model_or_config)
    return int(config.num_hidden_layers)
