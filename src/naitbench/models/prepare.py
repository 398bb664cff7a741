"""The prepare_model and prepare_raters stages: make the configured base model (or a
SelectIT rater, `rater=<name>`) an ordinary HF directory."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from naitbench.cli import reported_errors
from naitbench.config import CONF_DIR, ConfigError
from naitbench.models.gguf import convert_gguf, packaged_gguf
from naitbench.models.tiny import build_tiny


def prepare_model(model_cfg: DictConfig) -> str:
    """Convert a packaged GGUF model, build the tiny model, copy a local model directory or
    download a hub model; return the local directory every later stage loads."""
    kind = model_cfg.kind
    if kind == "gguf":
        gguf = packaged_gguf(model_cfg.package, model_cfg.gguf_filename, model_cfg.assemble)
        return str(convert_gguf(gguf, model_cfg.dir))
    if kind == "tiny":
        from transformers import AutoTokenizer

        gguf = packaged_gguf(model_cfg.package, model_cfg.gguf_filename)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        out = Path(model_cfg.dir)
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            built = build_tiny(tokenizer, Path(tmp) / "model", layers=model_cfg.layers,
                               hidden=model_cfg.hidden, intermediate=model_cfg.intermediate,
                               heads=model_cfg.heads, seed=model_cfg.seed)
            shutil.rmtree(out, ignore_errors=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(built), out)
        return str(out)
    if kind == "hub":
        source = Path(str(model_cfg.name_or_path))
        if source.is_dir():
            shutil.rmtree(model_cfg.dir, ignore_errors=True)
            shutil.copytree(source, model_cfg.dir)
            return str(model_cfg.dir)
        from huggingface_hub import snapshot_download

        snapshot_download(model_cfg.name_or_path, local_dir=model_cfg.dir,
                          allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja"])
        return str(model_cfg.dir)
    raise ConfigError(f"model.kind={kind!r}: use gguf, tiny or hub")


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    with reported_errors():
        model_cfg = cfg.model if cfg.get("rater") is None else cfg.raters[cfg.rater]
        print(f"model ready: {prepare_model(model_cfg)}")


if __name__ == "__main__":
    main()
