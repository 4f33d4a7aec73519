"""What the experiments share: checking the images a caller passes, a forward pass that leaves a shared model alone,
and the quick accuracy that an edited network, a filter sweep and a page's "beside the original" are measured with.

The experiments themselves: cnn.surgery (edit or ablate filters), cnn.transforms (move, turn, thicken, noise the
image), cnn.adversarial (fool the network). None of them changes a model it is given: an edit is made on a copy.
"""
from __future__ import annotations

import torch
from torch import nn

from .model import model_spec
from .train import bf16_native

QUICK_BATCH = 512  # images per forward in quick_accuracy: ~2x faster than 1,000 on this CPU (cache-sized maps)


def check_images(model: nn.Module, images, labels=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """images as (N, 1, side, side) float32 in [0, 1] for model's dataset, labels as (N,) int64 in [0, classes);
    ValueError with a sentence for anything else (a wrong shape, a value outside [0, 1], a label out of range)."""
    spec = model_spec(model)
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (1, spec.side, spec.side):
        raise ValueError(f"The images must be a (N, 1, {spec.side}, {spec.side}) tensor of values in [0, 1].")
    if not images.is_floating_point():
        raise ValueError("The images must be floats in [0, 1] (divide uint8 images by 255).")
    if images.numel() and (images.min() < 0 or images.max() > 1 or not torch.isfinite(images).all()):
        raise ValueError("The images must be values in [0, 1].")
    if labels is None:
        return images.float(), None
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),) or labels.is_floating_point():
        raise ValueError(f"The labels must be ({len(images)},) whole numbers, one per image.")
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise ValueError(f"The labels must be classes 0 to {spec.num_classes - 1}.")
    return images.float(), labels.long()


def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, classes) logits of x (N, 1, side, side) through every stage but dropout, with gradients when enabled:
    the eval forward without calling .eval() on a model other sessions share (its mode is never touched)."""
    # The network's own run of its stages (a ReLU before a pool runs after it: 4x fewer numbers, the same result).
    return model._run(x, tuple(stage for stage in model.stages if stage.kind != "dropout"))  # noqa: SLF001


def quick_predictions(model: nn.Module, images: torch.Tensor, batch_size: int = QUICK_BATCH,
                      fast: bool = True) -> torch.Tensor:
    """(N,) predicted classes of (N, 1, side, side) float images, in bfloat16 where this machine runs it natively.

    About 2x faster than float32 on this CPU (0.8 s against 1.7 s for the article CNN on 10,000 images, measured by
    `python -m cnn bench`); on the bundled models no test prediction differs from float32's (tests/test_experiments).
    fast=False: float32, the numbers cnn.train.evaluate gives. Dropout is skipped and the model's mode untouched."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    convolves = any(stage.kind == "conv" for stage in model.stages)
    out = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                enabled=fast and convolves and bf16_native(device)):
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].to(device)
            if convolves:
                batch = batch.contiguous(memory_format=torch.channels_last)
            out.append(eval_logits(model, batch).argmax(1).cpu())
    # Joined outside inference mode: a plain tensor the caller may change (an inference tensor refuses in-place edits).
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def quick_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of (N, 1, side, side) float images in [0, 1] that model reads as their (N,) labels, measured
    with quick_predictions. What the experiments compare an edited network with its original by: both the same way."""
    images, labels = check_images(model, images, labels)
    if not len(labels):
        return float("nan")
    return float((quick_predictions(model, images) == labels).float().mean())
