"""Synthetic photos of a digit written on paper, made from a 28x28 MNIST digit (for tests and benchmarks).

What a phone sees: dark ink on off-white paper, light falling off towards a side or a corner, sensor noise,
a slightly turned digit, small somewhere on a larger page, saved as a JPEG.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class PhotoLook:
    """How one synthetic photo looks; photo_look draws one at random."""

    paper: float  # brightness of the lit paper, 0-255 (a sheet under classroom light: ~200-235)
    ink: float  # brightness of the ink where it is darkest, 0-255 (a pen: 20-80)
    shadow: float  # how much darker the far end of the shadow is, 0-1 (0.35: 35% darker)
    shadow_from: str  # where the light falls off towards: "left", "right", "top", "bottom" or a corner "top-left" ...
    noise: float  # standard deviation of the sensor noise, in grey levels
    angle: float  # rotation of the digit, degrees
    digit_px: int  # height of the digit's 20 px MNIST box on the page, in pixels
    page: tuple[int, int]  # (height, width) of the photo, pixels
    where: tuple[float, float]  # where the digit sits, as fractions (0-1) of the free room down and across
    quality: int  # JPEG quality
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # colour of the paper and light (RGB factors)


SIDES = ("left", "right", "top", "bottom", "top-left", "top-right", "bottom-left", "bottom-right")


def photo_look(rng: np.random.Generator, **fixed) -> PhotoLook:
    """A random PhotoLook within the ranges of issue 11's test set; keywords fix any field."""
    height, width = int(rng.integers(300, 601)), int(rng.integers(300, 601))
    drawn = dict(paper=float(rng.uniform(200, 235)), ink=float(rng.uniform(20, 80)),
                 shadow=float(rng.uniform(0.0, 0.35)), shadow_from=str(rng.choice(SIDES)),
                 noise=float(rng.uniform(2.0, 6.0)), angle=float(rng.uniform(-10, 10)),
                 digit_px=int(rng.integers(40, 121)), page=(height, width),
                 where=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
                 quality=int(rng.integers(60, 91)),
                 tint=(1.0, float(rng.uniform(0.97, 1.0)), float(rng.uniform(0.90, 0.98))))
    drawn.update(fixed)
    return PhotoLook(**drawn)


def light(look: PhotoLook) -> np.ndarray:
    """(H, W) float32 in [1 - shadow, 1]: full light at one end, falling off linearly towards shadow_from."""
    height, width = look.page
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys, xs = ys / max(height - 1, 1), xs / max(width - 1, 1)
    towards = {"left": 1 - xs, "right": xs, "top": 1 - ys, "bottom": ys}
    parts = [towards[side] for side in look.shadow_from.split("-")]
    ramp = sum(parts) / len(parts)  # a corner: darkest in that corner, full light in the opposite one
    return 1.0 - look.shadow * ramp


def photo_pixels(digit: np.ndarray | None, look: PhotoLook, rng: np.random.Generator) -> np.ndarray:
    """(28, 28) uint8 MNIST digit (white on black), or None for blank paper -> (H, W, 3) uint8 photo, dark on light."""
    height, width = look.page
    ink = np.zeros((height, width), dtype=np.float32)  # 0: paper, 1: fully inked
    if digit is not None:
        side = round(28 * look.digit_px / 20)  # the 28x28 field holds the 20 px box
        big = Image.fromarray(np.asarray(digit, dtype=np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
        big = np.asarray(big.rotate(look.angle, resample=Image.Resampling.BICUBIC, expand=True), dtype=np.float32)
        big = big[:height, :width] / 255.0
        top = round(look.where[0] * (height - big.shape[0]))
        left = round(look.where[1] * (width - big.shape[1]))
        ink[top:top + big.shape[0], left:left + big.shape[1]] = big
    reflectance = 1.0 - ink * (1.0 - look.ink / look.paper)  # ink absorbs light; the paper reflects it
    grey = look.paper * light(look) * reflectance
    rgb = grey[..., None] * np.asarray(look.tint, dtype=np.float32)
    rgb = rgb + rng.normal(0.0, look.noise, rgb.shape).astype(np.float32)
    return np.clip(rgb.round(), 0, 255).astype(np.uint8)


def synthetic_photo(digit: np.ndarray | None, rng: np.random.Generator, **fixed) -> tuple[bytes, PhotoLook]:
    """(28, 28) uint8 MNIST digit (or None: blank paper) -> (JPEG bytes as a phone would upload them, its look)."""
    look = photo_look(rng, **fixed)
    buffer = io.BytesIO()
    Image.fromarray(photo_pixels(digit, look, rng)).save(buffer, format="JPEG", quality=look.quality)
    return buffer.getvalue(), look
