"""A LoRA's update scaled row by row within one forward pass.

FlowEdit runs its source rows (the photo's own expression) and target rows (the request) in one UNet call.
With a person's LoRA on the target rows only (``--person-rows target``, docs/personalize.md), the source rows
must take the base model and the target rows the person: each LoRA layer's update (the output of its
``lora_B``, where :func:`mien.personalize.lora.add_lora` hooks :func:`scale_rows`) is multiplied by its row's
scale. Torch-only, so that guidance can use it without importing the personalisation package.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import nn

# The name of the per-row scale among a velocity's condition streams (mien.guidance.classifier_free.conditioned
# takes it out and runs the model inside :func:`row_scale`).
ROW_SCALE_STREAM = "lora_scale"
# The row scale of the forward passes run inside :func:`row_scale`; None: every row takes the LoRA as set. A
# context variable, so a request in one thread never changes another's.
_ROW_SCALE: ContextVar[torch.Tensor | None] = ContextVar("mien_lora_row_scale", default=None)


@contextmanager
def row_scale(scale: torch.Tensor | None) -> Iterator[None]:
    """Inside the block, row i of every batch a hooked LoRA layer sees takes the LoRA's update times
    ``scale[i]`` (on top of :func:`mien.personalize.lora.set_scale`): 0 gives that row the base model's output
    exactly, 1 leaves it as set. ``None`` changes nothing. The scale must have one entry per row of the
    model's batch."""
    token = _ROW_SCALE.set(scale)
    try:
        yield
    finally:
        _ROW_SCALE.reset(token)


def scale_rows(module: nn.Module, args, update: torch.Tensor) -> torch.Tensor | None:
    """``lora_B``'s forward hook: its output (the LoRA's update of every row) times the row scale in force."""
    scale = _ROW_SCALE.get()
    if scale is None:
        return None
    if scale.shape != (update.shape[0],):
        raise ValueError(f"the LoRA row scale has shape {tuple(scale.shape)}, but the layer sees {update.shape[0]} "
                         "rows: give one scale per row of the model's batch")
    return update * scale.to(update).reshape(-1, *[1] * (update.ndim - 1))
