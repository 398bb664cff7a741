"""The prepare_model and prepare_raters stages: make the configured base model (or a
SelectIT rater, `rater=<name>`) an ordinary HF directory."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from naitbench.cli import reported_errors
from naitbench.config import CONF_DIR
from naitbench.errors import ConfigError
from naitbench.models.gguf import convert_gguf, packaged_gguf
from naitbench.models.tiny import build_tiny

#: a model.name_or_path that starts so is a local directory, never a hub id
LOCAL_PREFIXES = ("/", "./", "../", "~")


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
        source = Path(str(model_cfg.name_or_path)).expanduser()
        if str(model_cfg.name_or_path).startswith(LOCAL_PREFIXES) and not source.is_dir():
            raise ConfigError(f"model.name_or_path={model_cfg.name_or_path!r}: no such "
                              f"directory (a local model is a directory holding config.json; "
                              f"a hub model is <owner>/<name>)")
        if source.is_dir():
            shutil.rmtree(model_cfg.dir, ignore_errors=True)
            shutil.copytree(source, model_cfg.dir)
            return str(model_cfg.dir)
        from huggingface_hub import snapshot_download

        snapshot_download(model_cfg.name_or_path, local_dir=model_cfg.dir,
                          allow_patterns=["*.json", "*.safetensors", "*.model", "*.jinja"])
        return str(model_cfg.dir)
    raise ConfigError(f"model.kind={kind!r}: use gguf, tiny or hub")


def check_model_parts(model_dir: str | Path, specs: list[str]) -> None:
    """Refuse, at the first stage, a model without a part the feature specs hook (blocks,
    MLP output projections, final norm: naitbench.models.anatomy); built from its config on
    the meta device, so no weights are read."""
    from naitbench.features.capture import parse_specs
    from naitbench.models.anatomy import anatomy
    from naitbench.models.load import build_on_meta

    anatomy(build_on_meta(Path(model_dir) / "config.json"),
            {spec.site for spec in parse_specs(list(specs))})


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    with reported_errors():
        model_cfg = cfg.model if cfg.get("rater") is None else cfg.raters[cfg.rater]
        ready = prepare_model(model_cfg)
        if cfg.get("rater") is None:   # the base model: what the features stage will hook
            check_model_parts(ready, list(cfg.features.specs))
        print(f"model ready: {ready}")


if __name__ == "__main__":
    main()
