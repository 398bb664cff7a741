"""Base models: the embedded GGUF models converted to plain HF directories, hub ids, tiny
random models for tests, and architectures built on the meta device for config checks."""

from naitbench.models.load import load_model, load_tokenizer, model_source_dir

__all__ = ["load_model", "load_tokenizer", "model_source_dir"]
