"""Inside the network: what one unit of a network reads, and how its value is made, derived from the declared stages.

A unit is a position (row, col) in one channel of a stage's output. Its receptive field is the input patch that can
change it; a conv unit's value is a sum over its input channels (channel_contributions), each a 3x3 patch times
a kernel: the "often-overlooked intermediate computation" CNN Explainer's study found learners lose their way in.
"""
from __future__ import annotations

from torch import nn

from .model import ConvNet, model_spec


def _stage_geometry(model: nn.Module, stage: str) -> list[tuple[int, int, int]] | None:
    """(kernel, stride, padding) of each step from the input to stage's output, in order; None when stage comes after
    flatten (its units see the whole image). ValueError for a stage model does not declare."""
    steps = []
    for declared in model.stages:
        if declared.kind == "flatten":
            if declared.name == stage:
                return None
            break
        if declared.kind == "conv":
            conv = getattr(model, declared.module)
            steps.append((conv.kernel_size[0], conv.stride[0], conv.padding[0]))
        elif declared.kind == "pool":  # pool_same: 2x2, stride 2; SAME's padding is at the bottom/right only
            steps.append((2, 2, 0))
        if declared.name == stage:
            return steps
    if stage in (declared.name for declared in model.stages):
        return None  # declared after flatten: a dense layer
    raise ValueError(f"{type(model).__name__} has no stage called {str(stage)[:40]!r}: its stages are "
                     f"{', '.join(declared.name for declared in model.stages)}.")


def receptive_field(stage: str, row: int, col: int, model: nn.Module | None = None) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels that can change the unit at (row, col) of stage's output:
    half-open, in input pixels, clipped to the image. model: the network (None: the article's CNN).

    Walked back from the stage to the input: an output index i of a step with kernel k, stride s and padding p
    reads inputs i*s - p to i*s - p + k - 1. A stage after flatten sees the whole image.
    """
    model = model if model is not None else ConvNet()
    side = model_spec(model).side
    steps = _stage_geometry(model, stage)
    if steps is None:
        return 0, 0, side, side
    top, bottom, left, right = row, row + 1, col, col + 1  # half-open, in the stage's own cells
    for kernel, stride, padding in reversed(steps):
        top, bottom = top * stride - padding, (bottom - 1) * stride - padding + kernel
        left, right = left * stride - padding, (right - 1) * stride - padding + kernel
    return max(top, 0), max(left, 0), min(bottom, side), min(right, side)
