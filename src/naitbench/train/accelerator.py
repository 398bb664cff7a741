"""An `accelerate.Accelerator` per training call, with the precision that call asked for.

accelerate keeps its mixed-precision setting in process-wide state: a second `Accelerator`
in the same process with another `mixed_precision` raises ("AcceleratorState has already been
initialized and cannot be changed"). A notebook, LESS's warmup followed by its gradient
scoring, or cells run in one process all train more than once, so every call starts from a
fresh accelerator state. The process-level state (`PartialState`: device, process group of
`accelerate launch`) is kept: only the per-run settings are rebuilt.
"""

from __future__ import annotations

from typing import Any

ACCELERATE_PRECISIONS = ("no", "bf16", "fp16")


def fresh_accelerator(mixed_precision: str) -> Any:
    """A new `Accelerator` whose precision is `mixed_precision` ('no' | 'bf16' | 'fp16'),
    whatever an earlier accelerator in this process used."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, DistributedType, GradientState

    if mixed_precision not in ACCELERATE_PRECISIONS:
        raise ValueError(f"mixed_precision={mixed_precision!r}: use one of "
                         f"{ACCELERATE_PRECISIONS}")
    if AcceleratorState._shared_state:
        if AcceleratorState().distributed_type == DistributedType.DEEPSPEED:
            raise RuntimeError("this process runs DeepSpeed, whose precision is fixed by its "
                               "config: train in a new process to change it")
        # accelerate's own reset of the per-run state (the process group is untouched)
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=mixed_precision)
    if accelerator.mixed_precision != mixed_precision:
        raise RuntimeError(f"accelerate runs in {accelerator.mixed_precision!r}, not the "
                           f"requested {mixed_precision!r}")
    return accelerator
