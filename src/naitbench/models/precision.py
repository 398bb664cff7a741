"""Which numeric precision a stage computes in, and how a stage records what it ran.

`auto` means bf16 autocast only where the hardware computes bf16 natively: a CUDA GPU that
supports it, or a CPU with AVX512-BF16 or AMX-BF16 instructions. On any other CPU bf16 is
emulated (slower than fp32), so `auto` keeps fp32 there.

Every features, train and evaluate stage writes `compute_record(...)` under the key
`COMPUTE` ("compute": {"precision": fp32 | bf16 | fp16, "device": cpu | cuda}) into its
metrics or manifest, so the report can say which precision made every score.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from naitbench.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
COMPUTE = "compute"
PRECISION_NAMES = {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16",
                   torch.float16: "fp16"}


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, str]:
    """The first CPU's fields of Linux /proc/cpuinfo ("model name", "flags", ...); empty
    where the file cannot be read."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def native_bf16_flags(info: dict[str, str]) -> list[str]:
    """Which of the native bf16 instruction flags a `cpu_info` result advertises."""
    flags = info.get("flags", "").split()
    return [flag for flag in NATIVE_BF16_CPU_FLAGS if flag in flags]


@functools.cache
def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises native bf16 arithmetic (Linux /proc/cpuinfo flags)."""
    return bool(native_bf16_flags(cpu_info(cpuinfo)))


def resolve_autocast(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` ('cpu' or 'cuda...'); None means fp32."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: use one of {PRECISIONS}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None


def autocast(precision: str, device: str) -> torch.autocast:
    """An autocast context for `precision` on `device` (disabled where it resolves to fp32)."""
    dtype = resolve_autocast(precision, device)
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def compute_record(dtype: torch.dtype | None, device: str | torch.device) -> dict[str, str]:
    """What a stage computed in: its resolved precision (`dtype` None: fp32) and device type."""
    return {"precision": PRECISION_NAMES[dtype], "device": torch.device(device).type}
