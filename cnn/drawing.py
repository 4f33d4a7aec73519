"""Drawings and uploads to MNIST-style 28x28 inputs, the way MNIST's makers prepared their digits.

crop to the ink -> scale the longer side to 20 px (anti-aliased, aspect kept) -> paste into 28x28
so that the centre of mass sits at the centre.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

DIGIT_BOX = 20  # MNIST digits fit a 20x20 box ...
FIELD = 28  # ... centred by mass in a 28x28 field
INK_LEVEL = 40  # grey level (0-255) above which a pixel counts as ink
MIN_INK_FRACTION = 0.08  # the ink's bounding box must span >= 8% of the canvas: smaller is a dot
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4096 * 4096  # above this a PNG/JPEG is treated as a decompression bomb
UPLOAD_FORMATS = {"PNG", "JPEG"}


class UploadError(ValueError):
    """An upload that cannot be used; the message is a sentence for the user."""


def to_grey(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) or (H, W, 3) uint8 -> (H, W) uint8 ink level; transparent pixels count as background."""
    image = np.asarray(rgba)
    if image.ndim == 2:
        return image.astype(np.uint8)
    rgb = image[..., :3].astype(np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if image.shape[-1] == 4:
        grey *= image[..., 3].astype(np.float32) / 255.0
    return np.clip(grey.round(), 0, 255).astype(np.uint8)


def preprocess_steps(rgba: np.ndarray) -> dict[str, np.ndarray] | None:
    """Every stage of the pipeline as uint8 images (for the page's expander), or None without real ink.

    Keys: grey (H, W), cropped (h, w), scaled (<=20, <=20), centred (28, 28).
    """
    grey = to_grey(rgba)
    ink = grey > INK_LEVEL
    if not ink.any():
        return None
    rows, cols = np.nonzero(ink)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if max(bottom - top, right - left) < MIN_INK_FRACTION * max(grey.shape):
        return None  # a dot or a speck, not a digit
    cropped = grey[top:bottom, left:right]
    h, w = cropped.shape
    scale = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # PIL wants (width, height)
    scaled = np.asarray(Image.fromarray(cropped).resize(size, Image.Resampling.LANCZOS))
    scaled = np.clip(scaled.astype(np.float32) * (255.0 / max(float(scaled.max()), 1.0)), 0, 255).astype(np.uint8)
    centred = np.zeros((FIELD, FIELD), dtype=np.uint8)
    centre_y, centre_x = centre_of_mass(scaled)
    offset_y = int(round(FIELD / 2 - 0.5 - centre_y))
    offset_x = int(round(FIELD / 2 - 0.5 - centre_x))
    offset_y = min(max(offset_y, 0), FIELD - scaled.shape[0])  # keep the whole digit in the field
    offset_x = min(max(offset_x, 0), FIELD - scaled.shape[1])
    centred[offset_y:offset_y + scaled.shape[0], offset_x:offset_x + scaled.shape[1]] = scaled
    return {"grey": grey, "cropped": cropped, "scaled": scaled, "centred": centred}


def preprocess_drawing(rgba: np.ndarray) -> torch.Tensor | None:
    """(H, W, 4) uint8 RGBA, white ink on black -> (1, 1, 28, 28) float32 in [0, 1], or None when there is no real ink."""
    steps = preprocess_steps(rgba)
    if steps is None:
        return None
    return torch.from_numpy(steps["centred"]).to(torch.float32).div_(255.0).view(1, 1, FIELD, FIELD)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    """(row, column) centre of mass of a grey image."""
    mass = np.asarray(image, dtype=np.float64)
    ys, xs = np.indices(mass.shape)
    return float((ys * mass).sum() / mass.sum()), float((xs * mass).sum() / mass.sum())


def read_upload(data: bytes, name: str = "upload") -> np.ndarray:
    """A PNG/JPEG upload -> (H, W, 4) uint8 RGBA, white ink on black (dark-on-light images are inverted).

    Raises UploadError with a sentence for anything else: too large, not an image, truncated,
    a decompression bomb, animated, or of another format.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is 2 MB. Crop or shrink the photo first.")
    if not data:
        raise UploadError(f"{name} is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in UPLOAD_FORMATS:
                    raise UploadError(f"{name} is a {image.format or 'unknown'} file; please upload a PNG or JPEG image.")
                if image.width * image.height > MAX_UPLOAD_PIXELS:
                    raise UploadError(f"{name} is {image.width}x{image.height} pixels, too large to read safely; please upload a smaller picture.")
                if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                    raise UploadError(f"{name} is animated; please upload a single still picture of one digit.")
                image.load()
                grey = _to_grey_8bit(image)
    except UploadError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise UploadError(f"{name} is not an image this app can read; please upload a PNG or JPEG.") from exc
        raise UploadError(f"{name} is too large in pixels to read safely; please upload a smaller picture.") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(f"{name} could not be read (it may be truncated or damaged); please upload it again.") from exc
    if _background_is_light(grey):
        grey = 255 - grey  # MNIST is white ink on black
    rgba = np.zeros(grey.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = grey[..., None]
    rgba[..., 3] = 255
    return rgba


def _to_grey_8bit(image: Image.Image) -> np.ndarray:
    """Any PIL mode (16-bit, palette, alpha) -> (H, W) uint8 grey; transparent pixels become the background."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if values.max() > 255 else 255.0
        return np.clip(values / top * 255.0, 0, 255).round().astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA", "P"):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        if alpha.min() < 255:  # put transparent parts on a background opposite to the ink
            grey = np.asarray(rgba.convert("L"), dtype=np.float64)
            opaque = alpha > 0
            ink_is_dark = opaque.any() and grey[opaque].mean() < 128
            background = 255.0 if ink_is_dark else 0.0
            weight = alpha / 255.0
            return (grey * weight + background * (1 - weight)).round().astype(np.uint8)
        image = rgba
    return np.asarray(ImageOps.exif_transpose(image).convert("L"), dtype=np.uint8)


def _background_is_light(grey: np.ndarray) -> bool:
    """True when the border of the picture is mostly light, i.e. dark ink on light paper."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border)) > 127
