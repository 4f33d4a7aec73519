"""REAL MNIST test digits drawn back onto the Draw page's 280x280 canvas are read as themselves (>= 97% of 1,000).

Real MNIST, because the question is whether preprocess_drawing undoes what a big canvas does to digits people
wrote: enlarged, anywhere on the canvas, a little wider or taller; synthetic strokes cannot answer that.
"""
import numpy as np
import pytest
import torch
from PIL import Image

import cnn
from cnn.drawing import preprocess_drawing

pytestmark = pytest.mark.mnist

CANVAS = 280  # the Draw page's canvas, in pixels
DIGITS = 1_000
MIN_ACCURACY = 0.97


def draw_on_canvas(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(28, 28) uint8 MNIST digit -> (280, 280, 4) uint8 RGBA as the canvas sends it: white ink on opaque black.

    Like a student's drawing: 5-10x larger (bicubic, so strokes stay smooth and grey at their edges), up to 15%
    wider or taller, anywhere on the canvas as long as all the ink stays on it.
    """
    scale = rng.uniform(5.0, 10.0)
    aspect = rng.uniform(0.85, 1.15)
    size = (round(28 * scale * aspect), round(28 * scale / aspect))  # PIL: (width, height)
    big = np.asarray(Image.fromarray(digit).resize(size, Image.Resampling.BICUBIC))
    rows, cols = np.nonzero(big)
    ink = big[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    ink = ink[:CANVAS, :CANVAS]  # the widest digits at 10x can overhang by a few px: the canvas edge cuts them
    top = rng.integers(0, CANVAS - ink.shape[0] + 1)
    left = rng.integers(0, CANVAS - ink.shape[1] + 1)
    rgba = np.zeros((CANVAS, CANVAS, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # the canvas's background is opaque black
    rgba[top:top + ink.shape[0], left:left + ink.shape[1], :3] = ink[..., None]
    return rgba


def test_draw_on_canvas_keeps_the_digit_and_moves_it():
    """The helper itself: white on black, every canvas different, the ink spread over 80-280 px."""
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[4:24, 12:16] = 255  # a "1": 20 px tall
    rng = np.random.default_rng(0)
    canvases = [draw_on_canvas(digit, rng) for _ in range(5)]
    for rgba in canvases:
        assert rgba.shape == (CANVAS, CANVAS, 4) and rgba.dtype == np.uint8 and (rgba[..., 3] == 255).all()
        rows = np.nonzero(rgba[..., 0] > 128)[0]
        assert 80 <= rows.max() - rows.min() + 1 <= CANVAS  # 20 px of ink x 5 / 1.15 at the least
    assert len({np.nonzero(rgba[..., 0])[1].min() for rgba in canvases}) > 1  # not always in the same place


def test_real_test_digits_drawn_on_the_canvas_are_read(real_mnist):
    model, _ = cnn.load_model()
    rng = np.random.default_rng(2024)
    chosen = rng.choice(len(real_mnist.test_labels), DIGITS, replace=False)
    inputs, labels, refused = [], [], 0
    for index in chosen.tolist():
        x = preprocess_drawing(draw_on_canvas(real_mnist.test_images[index].numpy(), rng))
        if x is None:  # refused as "not one digit": counted as read wrong
            refused += 1
            continue
        inputs.append(x)
        labels.append(int(real_mnist.test_labels[index]))
    with torch.inference_mode():
        predicted = model(torch.cat(inputs)).argmax(1)
    accuracy = int((predicted == torch.tensor(labels)).sum()) / DIGITS
    assert accuracy >= MIN_ACCURACY, f"{accuracy:.1%} of {DIGITS} drawn digits read right ({refused} refused)"
