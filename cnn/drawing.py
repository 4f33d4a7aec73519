"""Drawings and uploads to the 28x28 inputs of the model's dataset, the way its makers prepared their images.

The dataset's spec names the recipe (DatasetSpec.preparation):
- "digit", MNIST's: crop to the ink -> scale the longer side to 20 px (anti-aliased, aspect kept) -> paste into
  28x28 so that the centre of mass sits at the centre.
- "fit", Fashion-MNIST's: crop to the item -> scale the longer side to 28 px (aspect kept) -> centre its box in
  28x28. Fashion-MNIST's items fill the frame (their longer side spans 27-28 px, their box centred), and they are
  filled shapes, so the digit shape checks (a filled box, pieces, loops, a scribble's pen path) do not apply.

A photo of paper first goes through the paper chain (photo_steps): even out the paper's light, find the ink
with Otsu's threshold, keep the digit's pieces; only then MNIST's recipe.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import math
import struct
import threading
import warnings
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from scipy import ndimage

from .data import MNIST_SPEC, DatasetSpec

DIGIT_BOX = 20  # MNIST digits fit a 20x20 box ...
FIELD = MNIST_SPEC.side  # ... centred by mass in a 28x28 field (both datasets' side)
FIT_BOX = FIELD  # Fashion-MNIST's items: the longer side spans the whole field (measured: 27.7-27.9 px on average)
PREPARATIONS = ("digit", "fit")  # DatasetSpec.preparation's values: MNIST's recipe, fit-to-box
INK_LEVEL = 40  # grey level (0-255) above which a pixel counts as ink
MIN_INK_FRACTION = 0.08  # the ink's bounding box must span >= 8% of the canvas: smaller is a dot
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_PIXELS = 4 * 1024 * 1024  # 4 Mpx (2048x2048): a 4096x4096 PNG of 65 KB cost the server +720 MB and 2 s
UPLOAD_FORMATS = {"PNG", "JPEG"}
UPLOAD_WORKING_SIDE = 1024  # a photo is read at about this size: a digit needs 20 px, and 4 Mpx arrays cost ~50 MB each
LIGHT_BACKGROUND = 127  # an upload whose median is lighter than this is paper (dark ink: inverted) ...
DARK_BACKGROUND = 64  # ... darker than this, a dark background with light ink; between, the ink's side decides
UPLOAD_CACHE_ENTRIES = 32  # uploads whose 28x28 steps are kept (a few MB each at most)
STAGE_SIDE = 512  # a photo's in-between stages are kept this small: shown in a ~250 px column, ~2 MB per upload

# Everything the app decodes is small: a 280x280 canvas, a photo of one digit, 28x28 class samples. Pillow's own
# guard (89 Mpx by default, an error only at twice that) would let a 2 MB file claim 178 Mpx; lower it for the
# whole process. read_upload and read_canvas check the header's size first, so this is the net under them.
Image.MAX_IMAGE_PIXELS = MAX_UPLOAD_PIXELS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_URL_PREFIX = "data:image/png;base64,"
MAX_CANVAS_SCALE = 3  # the canvas sends width x height (Fabric's toDataURL, multiplier 1); allow up to 3x (devicePixelRatio)
MAX_CANVAS_BYTES = 2 * 1024 * 1024  # a 280x280 drawing is ~5-30 KB; even 840x840 of noise stays under 2 MB

# "Does this look like one digit?" Measured on 10,000 real MNIST test digits drawn back at 280x280 (tests/test_drawing.py).
MIN_DIGIT_FRACTION = 0.2  # the ink's longer side spans >= 20% of the canvas (56 of 280 px); a tap or a 5 px drag is less
MAX_BOX_FILL = 0.8  # ink covers at most 80% of its box (a few of 10,000 MNIST digits reach it, mostly thin "1"s)...
MIN_FILLED_ASPECT = 0.4  # ... checked only when the box is not a thin bar (a "1" fills its narrow box)
MAX_PIECES = 3  # separate pieces of ink (MNIST's test digits: at most 2)
MAX_LOOPS = 3  # closed loops (an 8 has two; a few sloppy MNIST digits three)
MAX_STROKES = 5  # pen strokes: a digit takes 1-3 (a 4, a 5 or a crossed 7 a few more)
MAX_PEN_PATH = 6.0  # the pen's path as a multiple of the drawing's longer side: a 0 is ~2.7, an 8 ~3.1
_FOUR_NEIGHBOURS = ndimage.generate_binary_structure(2, 1)  # a region's pixels touch by a side
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)  # ... or by a corner
SHAPE_GRID = 40  # pieces and loops are counted with the ink's box scaled to 40 px: strokes ~4 cells wide

# Photos of paper. The light on a sheet changes slowly (a shadow, a lamp on one side); strokes are thin. So the bare
# paper's level is estimated over windows far wider than any stroke, on a small copy, and divided out.
PAPER_WINDOW = 0.2  # the paper is estimated over windows 1/5 of the photo's longer side (a stroke is far thinner)
# A piece of clothing is a filled shape, often half the photo wide: an opening over 1/5 would take its inside for
# paper and leave only its outline. Over 3/5 only an item wider than that is lost (the light then is evened less).
FIT_PAPER_WINDOW = 0.6
PAPER_SIDE = 128  # ... on a copy with this longer side: the light needs no more detail
MIN_PAPER_LIGHT = 32  # evening out never divides by less than this (a near-black corner is not blown up into ink)
MIN_INK_CONTRAST = 0.25  # ink is >= 25% darker than the paper around it (a pen: 60-90%); noise and JPEG stay far under
COMPONENT_SIDE = 256  # the ink's pieces are found on a copy this small (max-pooled: no stroke vanishes, none breaks)
MIN_PIECE_SHARE = 0.03  # a piece under 3% of the digit's largest piece is a speck
PIECE_REACH = 0.5  # a piece farther than half the largest piece's longer side from it is another mark on the page
PAGE_EDGE_CONTACT = 0.5  # ink along half of a side of the photo or more is the page's edge or a shadow, not a digit
MIN_PHOTO_DIGIT = 0.02  # the digit spans >= 2% of the photo's longer side (and >= 10 px): smaller is dust
DIGIT_INK_PERCENTILE = 90  # the ink's level at this percentile becomes full white, as MNIST's strokes are

# What each stage of the expander shows, in words a 15-year-old follows; the page numbers the stages a path has
# (a photo has all seven, the canvas grey, cropped, scaled and centred).
STEP_CAPTIONS: dict[str, str] = {
    "grey": "the picture in grey, ink light on dark",
    "evened": "the paper evened out",
    "ink": "ink found (Otsu's threshold)",
    "kept": "the digit's pieces kept",
    "cropped": "cropped to the ink",
    "scaled": "longer side made 20 px",
    "centred": "centred by mass in 28x28",
}
# The fit-to-box recipe's captions where they differ (same keys, same order).
FIT_STEP_CAPTIONS: dict[str, str] = {
    **STEP_CAPTIONS,
    "kept": "the item's pieces kept",
    "cropped": "cropped to the item",
    "scaled": "longer side made 28 px",
    "centred": "its box centred in 28x28",
}


def step_captions(spec: DatasetSpec = MNIST_SPEC) -> dict[str, str]:
    """What each step of spec's recipe shows, by step key (STEP_CAPTIONS for digits, FIT_STEP_CAPTIONS for "fit")."""
    return FIT_STEP_CAPTIONS if _recipe(spec) == "fit" else STEP_CAPTIONS


def _recipe(spec: DatasetSpec) -> str:
    """spec.preparation, checked: a recipe this module does not know is a programming error, not a digit."""
    if spec.preparation not in PREPARATIONS:
        raise ValueError(f"Unknown preparation {spec.preparation!r}: use one of {', '.join(PREPARATIONS)}.")
    return spec.preparation


def canvas_hint(spec: DatasetSpec = MNIST_SPEC) -> str:
    """What the Draw page says over an empty canvas."""
    if _recipe(spec) == "digit":
        return "Draw a digit in the black square: one digit, as large as the square allows."
    return (f"{spec.draw_prompt} in the black square, as large as the square allows, and colour it in: "
            f"{spec.title}'s pictures are filled shapes, light on black.")


def no_ink_in_photo(spec: DatasetSpec = MNIST_SPEC) -> str:
    """What the page says when an upload holds no ink at all."""
    thing = "digit" if _recipe(spec) == "digit" else spec.item_noun
    return f"No {thing} found in that picture: it looks blank. Try a darker pen or a closer photo."


class UploadError(ValueError):
    """An upload that cannot be used; the message is a sentence for the user."""


class CanvasError(ValueError):
    """A canvas value that is not what the drawing canvas sends; the message is a sentence for the user."""


def to_grey(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) or (H, W, 3) uint8 -> (H, W) uint8 ink level; transparent pixels count as background."""
    image = np.asarray(rgba)
    if image.ndim == 2:
        return image.astype(np.uint8)
    level = image[..., 0]
    if (image.dtype == np.uint8 and (image.shape[-1] == 3 or (image[..., 3] == 255).all())
            and (image[..., 1] == level).all() and (image[..., 2] == level).all()):
        # Grey and opaque, as the canvas's white ink on black always is: the weighted sum of three equal levels is
        # that level. ~0.1 ms instead of ~0.6 ms for the canvas's 280x280, and 1-2 ms while a browser shares the CPU.
        return level.astype(np.uint8)
    rgb = image[..., :3].astype(np.float32)
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if image.shape[-1] == 4:
        grey *= image[..., 3].astype(np.float32) / 255.0
    return np.clip(grey.round(), 0, 255).astype(np.uint8)


def ink_box(grey: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), half-open, of the pixels above INK_LEVEL in a (H, W) grey image; None without ink."""
    rows, cols = np.nonzero(grey > INK_LEVEL)
    if len(rows) == 0:
        return None
    return int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1


def preprocess_steps(rgba: np.ndarray, spec: DatasetSpec = MNIST_SPEC) -> dict[str, np.ndarray] | None:
    """Every stage of the canvas's pipeline, by spec's recipe, as uint8 images (for the page's expander), or None
    without real ink.

    Keys: grey (H, W), cropped (h, w), scaled (<=20, <=20; "fit": <=28, <=28), centred (28, 28).
    """
    grey = to_grey(rgba)
    box = ink_box(grey)
    if box is None:
        return None
    top, bottom, left, right = box
    if max(bottom - top, right - left) < MIN_INK_FRACTION * max(grey.shape):
        return None  # a dot or a speck, not a digit
    return {"grey": grey, **prepare(grey[top:bottom, left:right], spec)}


def prepare(cropped: np.ndarray, spec: DatasetSpec = MNIST_SPEC) -> dict[str, np.ndarray]:
    """(h, w) uint8 ink cropped to its box -> {cropped, scaled, centred (28, 28)} by spec's recipe."""
    return fit_steps(cropped) if _recipe(spec) == "fit" else mnist_steps(cropped)


def mnist_steps(cropped: np.ndarray) -> dict[str, np.ndarray]:
    """MNIST's recipe on (h, w) uint8 ink cropped to its box: {cropped, scaled (<=20, <=20), centred (28, 28)}."""
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
    return {"cropped": cropped, "scaled": scaled, "centred": centred}


def fit_steps(cropped: np.ndarray) -> dict[str, np.ndarray]:
    """Fit-to-box on (h, w) uint8 ink cropped to its box: {cropped, scaled (longer side FIT_BOX), centred (28, 28)}.

    Fashion-MNIST's recipe as its pictures show it: the item's longer side fills the frame, its box is centred
    (not its mass: a shoe's heavy heel must not push it off the frame), the aspect kept.
    """
    h, w = cropped.shape
    scale = FIT_BOX / max(h, w)
    size = (min(FIT_BOX, max(1, round(w * scale))), min(FIT_BOX, max(1, round(h * scale))))  # PIL: (width, height)
    scaled = np.asarray(Image.fromarray(cropped).resize(size, Image.Resampling.LANCZOS))
    scaled = np.clip(scaled.astype(np.float32) * (255.0 / max(float(scaled.max()), 1.0)), 0, 255).astype(np.uint8)
    centred = np.zeros((FIELD, FIELD), dtype=np.uint8)
    top, left = (FIELD - scaled.shape[0]) // 2, (FIELD - scaled.shape[1]) // 2
    centred[top:top + scaled.shape[0], left:left + scaled.shape[1]] = scaled
    return {"cropped": cropped, "scaled": scaled, "centred": centred}


# ---------------------------------------------------------------- photos of paper

def photo_steps(grey: np.ndarray, spec: DatasetSpec = MNIST_SPEC) -> dict[str, np.ndarray] | None:
    """An upload, (H, W) uint8 white ink on black as read_upload_grey gives it -> every stage, or None without a digit.

    Keys, in order: grey (H, W), evened, ink (255 where ink), kept (the digit's ink levels), these three shown at
    most STAGE_SIDE px on the longer side; then spec's recipe: cropped (h, w), scaled, centred (28, 28).
    None: no ink (plain paper, noise, a shadow) or only dust.
    """
    evened = even_paper(grey, FIT_PAPER_WINDOW if _recipe(spec) == "fit" else PAPER_WINDOW)
    ink = find_ink(evened)
    kept = keep_digit(ink)
    if kept is None:
        return None
    digit = digit_levels(evened, kept)
    top, bottom, left, right = ink_box(digit) or (0, grey.shape[0], 0, grey.shape[1])
    shown = {"evened": evened, "ink": ink.astype(np.uint8) * 255, "kept": digit}
    return {"grey": grey, **{key: _shrink(image, STAGE_SIDE) for key, image in shown.items()},
            **prepare(digit[top:bottom, left:right], spec)}


def paper_level(grey: np.ndarray, window_share: float = PAPER_WINDOW) -> np.ndarray:
    """(H, W) uint8, ink light on dark -> (H, W) float32: the bare paper's level at every pixel.

    A morphological opening (the darkest level in a wide window, then the lightest of those) removes every light
    feature narrower than the window (window_share of the longer side), i.e. the strokes, and leaves a smooth or
    linear shadow exactly as it is.
    """
    h, w = grey.shape
    scale = min(1.0, PAPER_SIDE / max(h, w))
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(grey).resize(small_size, Image.Resampling.BOX), dtype=np.float32)
    window = 2 * max(1, round(window_share * max(small.shape) / 2)) + 1
    opened = _sliding(_sliding(small, window, np.min), window, np.max)
    smooth = _sliding(_sliding(opened, window, np.mean), window, np.mean)  # the opening's flat steps, smoothed
    return np.asarray(Image.fromarray(smooth).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _sliding(image: np.ndarray, window: int, reduce) -> np.ndarray:
    """(h, w) float32 -> reduce over a window x window square around each pixel (separable: rows, then columns).

    The edges are extended by odd reflection, which continues a slope: a shadow falling off towards the edge
    is then estimated as well there as in the middle.
    """
    half = window // 2
    out = image
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (half, half)
        padded = np.pad(out, pad, mode="reflect", reflect_type="odd")
        out = reduce(np.lib.stride_tricks.sliding_window_view(padded, window, axis=axis), axis=-1)
    return out.astype(np.float32)


def even_paper(grey: np.ndarray, window_share: float = PAPER_WINDOW) -> np.ndarray:
    """(H, W) uint8, ink light on dark -> (H, W) uint8: how much darker than its own paper each pixel was, 0-255.

    Divides rather than subtracts: a shadow dims paper and ink alike, so the ink's share of the paper's light is
    what stays the same under it. For a dark picture with light ink (no paper) this is a plain subtraction.
    """
    paper = paper_level(grey, window_share)
    light = np.maximum(255.0 - paper, MIN_PAPER_LIGHT)  # the paper's brightness in the photo
    evened = (grey.astype(np.float32) - paper) / light * 255.0
    return np.clip(evened.round(), 0, 255).astype(np.uint8)


def otsu_threshold(image: np.ndarray) -> int:
    """Otsu's threshold of a uint8 image: the level that best splits its histogram into two classes."""
    counts = np.bincount(image.ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    below = np.cumsum(counts)  # pixels at or under each level
    mass = np.cumsum(counts * levels)
    total, total_mass = below[-1], mass[-1]
    above = total - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (total_mass * below - total * mass) ** 2 / (below * above)  # between-class variance, x total^2
    between[~np.isfinite(between)] = -1.0
    return int(np.argmax(between))


def find_ink(evened: np.ndarray) -> np.ndarray:
    """(H, W) uint8 evened paper -> (H, W) bool ink: over Otsu's threshold and over MIN_INK_CONTRAST.

    The floor is what makes bare paper "no ink": Otsu's threshold always splits a histogram, even one of noise.
    A 3x3 median first, so single noisy pixels and JPEG's ringing do not count.
    """
    smooth = np.asarray(Image.fromarray(evened).filter(ImageFilter.MedianFilter(3)))
    floor = round(MIN_INK_CONTRAST * 255)
    return smooth > max(otsu_threshold(smooth), floor)


def keep_digit(ink: np.ndarray) -> np.ndarray | None:
    """(H, W) bool ink -> (H, W) bool: only the digit's pieces, or None when no piece is large enough for a digit.

    The digit is the largest piece that is not the page's edge (a table or a shadow band along a side of the photo),
    with the pieces near it (a 5's flag, a broken stroke); specks and other marks farther away are dropped.
    """
    h, w = ink.shape
    factor = max(1, math.ceil(max(h, w) / COMPONENT_SIDE))  # found on a max-pooled copy: cheap, no stroke lost
    pooled = np.pad(ink, ((0, -h % factor), (0, -w % factor)))
    pooled = pooled.reshape(pooled.shape[0] // factor, factor, pooled.shape[1] // factor, factor).any(axis=(1, 3))
    labels, sizes = _component_labels(pooled, diagonal=True)
    if not sizes:
        return None
    sizes, boxes = np.asarray(sizes), _label_boxes(labels, len(sizes))  # boxes: (n, 4) top, bottom, left, right
    page_edge = _along_an_edge(labels, len(sizes))
    spans = factor * np.maximum(boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2])
    large = spans >= max(10, MIN_PHOTO_DIGIT * max(h, w))
    candidates = np.flatnonzero(large & ~page_edge) if (large & ~page_edge).any() else np.flatnonzero(large)
    if len(candidates) == 0:
        return None  # dust or noise, not a digit
    main = int(candidates[np.argmax(sizes[candidates])])
    top, bottom, left, right = boxes[main]
    reach = PIECE_REACH * max(bottom - top, right - left)
    gap_y = np.maximum(0, np.maximum(boxes[:, 0] - bottom, top - boxes[:, 1]))
    gap_x = np.maximum(0, np.maximum(boxes[:, 2] - right, left - boxes[:, 3]))
    chosen = (sizes >= MIN_PIECE_SHARE * sizes[main]) & (np.maximum(gap_y, gap_x) <= reach)
    chosen &= ~page_edge | page_edge[main]  # a page edge's box can span the digit's: near by box, not a piece of it
    keep = np.concatenate([[False], chosen])[labels]  # label 0 is no ink
    keep = np.repeat(np.repeat(keep, factor, axis=0), factor, axis=1)[:h, :w]
    return ink & keep


def _along_an_edge(labels: np.ndarray, count: int) -> np.ndarray:
    """(count,) bool: regions lying along at least PAGE_EDGE_CONTACT of one side of the picture (a table, a band
    of shadow). A digit cut by the frame, or cropped tightly, only touches it where its strokes end."""
    contact = np.zeros(count + 1)
    for side in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        contact = np.maximum(contact, np.bincount(side, minlength=count + 1) / len(side))
    return contact[1:] >= PAGE_EDGE_CONTACT


def digit_levels(evened: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(H, W) uint8 evened paper and bool kept ink -> (H, W) uint8: the digit's grey levels, its strokes at full white.

    The kept ink widened by 2 px keeps the strokes' soft edges (MNIST's digits are anti-aliased); the rest is black.
    """
    rows, cols = np.nonzero(kept)
    top, left = max(int(rows.min()) - 2, 0), max(int(cols.min()) - 2, 0)  # widen only around the digit: cheaper
    bottom, right = int(rows.max()) + 3, int(cols.max()) + 3
    around = np.zeros(kept.shape, dtype=bool)
    box = Image.fromarray(kept[top:bottom, left:right].astype(np.uint8) * 255)
    around[top:bottom, left:right] = np.asarray(box.filter(ImageFilter.MaxFilter(5))) > 0
    full = max(float(np.percentile(evened[kept], DIGIT_INK_PERCENTILE)), 1.0)
    levels = np.where(around, evened.astype(np.float32) * (255.0 / full), 0.0)
    return np.clip(levels.round(), 0, 255).astype(np.uint8)


def preprocess_drawing(rgba: np.ndarray, spec: DatasetSpec = MNIST_SPEC) -> torch.Tensor | None:
    """(H, W, 4) uint8 RGBA, white ink on black -> (1, 1, 28, 28) float32 in [0, 1] by spec's recipe, or None when
    there is no real ink."""
    steps = preprocess_steps(rgba, spec)
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
    grey = read_upload_grey(data, name)
    rgba = np.zeros(grey.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = grey[..., None]
    rgba[..., 3] = 255
    return rgba


def read_upload_grey(data: bytes, name: str = "upload") -> np.ndarray:
    """A PNG/JPEG upload -> (H, W) uint8 ink level, white on black, at most UPLOAD_WORKING_SIDE on its longer side.

    The size is checked from the header before any pixel is decoded; a JPEG is decoded straight to grey and
    already shrunk (Image.draft), so a 4 Mpx photo costs a few MB, not a few hundred. UploadError as read_upload.
    """
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is 2 MB. Crop or shrink the photo first.")
    if not data:
        raise UploadError(f"{name} is empty.")
    too_large = (f"{name} has too many pixels to read safely; the limit is {MAX_UPLOAD_PIXELS / 2**20:.0f} million "
                 "(for example 2048x2048). Please upload a smaller picture.")
    try:
        with warnings.catch_warnings():
            # Between the limit and twice it Pillow only warns; our own check below says it with the size.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format not in UPLOAD_FORMATS:
                    raise UploadError(f"{name} is a {image.format or 'unknown'} file; please upload a PNG or JPEG image.")
                if image.width * image.height > MAX_UPLOAD_PIXELS:
                    raise UploadError(f"{name} is {image.width}x{image.height} pixels; the limit is "
                                      f"{MAX_UPLOAD_PIXELS / 2**20:.0f} million (for example 2048x2048). "
                                      "Please upload a smaller picture.")
                if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
                    raise UploadError(f"{name} is animated; please upload a single still picture of one digit.")
                if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale, in grey: the cheapest read
                    image.draft("L", (UPLOAD_WORKING_SIDE, UPLOAD_WORKING_SIDE))
                image.load()
                grey = _to_grey_8bit(image)
    except UploadError:
        raise
    except UnidentifiedImageError as exc:
        raise UploadError(f"{name} is not an image this app can read; please upload a PNG or JPEG.") from exc
    except Image.DecompressionBombError as exc:
        raise UploadError(too_large) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadError(f"{name} could not be read (it may be truncated or damaged); please upload it again.") from exc
    grey = _shrink(grey, UPLOAD_WORKING_SIDE)
    if _background_is_light(grey):
        grey = 255 - grey  # MNIST is white ink on black
    return grey


def _shrink(grey: np.ndarray, side: int) -> np.ndarray:
    """(H, W) uint8 -> the same picture with its longer side at most side (area-averaged, aspect kept)."""
    h, w = grey.shape
    if max(h, w) <= side:
        return grey
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(grey).resize(size, Image.Resampling.BOX))


class LruCache:
    """A small least-recently-used cache, safe across sessions' threads (each session's script runs in its own)."""

    def __init__(self, entries: int):
        self.entries, self._items, self._lock = entries, OrderedDict(), threading.Lock()

    def get(self, key) -> tuple[bool, object]:
        """(True, value) when key is cached, else (False, None)."""
        with self._lock:
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key]

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)


_UPLOAD_STEPS = LruCache(UPLOAD_CACHE_ENTRIES)  # sha256 of an upload's bytes -> its steps


def read_upload_steps(data: bytes, name: str = "upload", spec: DatasetSpec = MNIST_SPEC) -> dict[str, np.ndarray] | None:
    """An upload's photo_steps by spec's recipe (read-only arrays), or None when it holds no ink; UploadError as
    read_upload.

    Cached by the bytes' SHA-256 and the recipe, so the rerun after every click does not decode the same file again.
    """
    key = (hashlib.sha256(data).hexdigest(), _recipe(spec))
    found, steps = _UPLOAD_STEPS.get(key)
    if not found:
        steps = photo_steps(read_upload_grey(data, name), spec)
        for array in (steps or {}).values():
            array.flags.writeable = False  # shared by every session that uploads the same file
        _UPLOAD_STEPS.put(key, steps)
    return steps


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header (its first 24 bytes), decoding nothing; ValueError if it is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return struct.unpack(">II", data[16:24])


def canvas_png(value: object, size: int) -> bytes | None:
    """The canvas component's "drawing" value -> its PNG bytes, checked before anything is decoded; None for none yet.

    The browser sends {"raw": <Fabric JSON>, "data": "data:image/png;base64,..."} over the WebSocket, and anyone
    can send anything instead. Refused with CanvasError: not that shape, not a PNG data URL, over MAX_CANVAS_BYTES,
    or a PNG header that is not square with a side from size to MAX_CANVAS_SCALE * size pixels.
    """
    if value is None:
        return None
    data_url = value.get("data") if isinstance(value, dict) else value
    if data_url is None:
        return None
    if not isinstance(data_url, str) or not data_url.startswith(DATA_URL_PREFIX):
        raise CanvasError("That drawing did not arrive as a picture from the canvas; please press Clear and draw again.")
    if len(data_url) > len(DATA_URL_PREFIX) + 4 * (MAX_CANVAS_BYTES + 2) // 3:  # base64 is 4 characters per 3 bytes
        raise CanvasError("That drawing is far larger than the canvas can send; please press Clear and draw again.")
    try:
        png = base64.b64decode(data_url[len(DATA_URL_PREFIX):], validate=True)
        width, height = png_size(png)
    except (binascii.Error, ValueError) as exc:
        raise CanvasError("That drawing is not a picture this app can read; please press Clear and draw again.") from exc
    if not (width == height and size <= width <= MAX_CANVAS_SCALE * size):
        raise CanvasError(f"That drawing is {width}x{height} pixels, but the canvas is {size}x{size}; "
                          "it did not come from the canvas. Please press Clear and draw again.")
    return png


def read_canvas(value: object, size: int) -> np.ndarray | None:
    """The canvas component's "drawing" value -> (H, W, 4) uint8 RGBA, or None before the first stroke.

    canvas_png checks it first; CanvasError with a sentence for anything the canvas would not send.
    """
    png = canvas_png(value, size)
    if png is None:
        return None
    try:
        with Image.open(io.BytesIO(png), formats=["PNG"]) as image:
            image.load()
            return np.asarray(image.convert("RGBA"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CanvasError("That drawing could not be read (it may be damaged); please press Clear and draw again.") from exc


def refusal_lead(spec: DatasetSpec = MNIST_SPEC) -> str:
    """How every shape refusal begins: "That doesn't look like one digit: ", "... like a piece of clothing: "."""
    return "That doesn't look like one digit: " if _recipe(spec) == "digit" else f"That doesn't look like {spec.item}: "


def drawing_problem(image: np.ndarray, spec: DatasetSpec = MNIST_SPEC) -> str | None:
    """Why a drawing does not look like one of spec's images, as a sentence, or None when it could be (or is blank).

    image: (H, W, 4) RGBA, (H, W, 3) RGB or (H, W) grey, white ink on black. Refused: ink too small (a tap), for
    any recipe; for digits also ink filling most of its box (a filled shape, a coloured-in scribble), too many
    separate pieces or loops. Clothes are filled shapes with holes (a bag's handle), so "fit" checks only the size.
    """
    grey = to_grey(image)
    box = ink_box(grey)
    if box is None:
        return None
    top, bottom, left, right = box
    ink = grey > INK_LEVEL
    h, w = bottom - top, right - left
    lead = refusal_lead(spec)
    if max(h, w) < MIN_DIGIT_FRACTION * max(grey.shape):
        if _recipe(spec) == "fit":
            return lead + f"it is too small. Draw {spec.item} as large as the square allows."
        return lead + "it is too small. Draw one digit as large as the square allows."
    if _recipe(spec) == "fit":
        return None
    if min(h, w) >= MIN_FILLED_ASPECT * max(h, w) and ink[top:bottom, left:right].mean() > MAX_BOX_FILL:
        return lead + "the ink fills almost all of its box. Write the digit with lines, as on paper."
    pieces, loops = count_pieces_and_loops(grey[top:bottom, left:right])
    if pieces > MAX_PIECES:
        return lead + f"it has {pieces} separate pieces. Draw a single digit, in one or two strokes."
    if loops > MAX_LOOPS:
        return lead + f"it has {loops} closed loops, and even an 8 has only two. Draw a single digit."
    return None


def stroke_problem(raw: object, spec: DatasetSpec = MNIST_SPEC) -> str | None:
    """Why the canvas's pen strokes are not one digit, as a sentence, or None when they could be (or can't be read).

    Digits only: colouring in a T-shirt takes many strokes back and forth, so for "fit" this is always None.

    raw: the canvas's Fabric JSON, {"objects": [{"type": "path", "path": [["M", x, y], ["Q", x1, y1, x2, y2], ...]}]}.
    The pixels hide how a drawing was made; the strokes do not: a digit takes at most a few strokes, and its pen
    path is at most ~3-4 times its height (an 8 is two small circles), while a scribble goes back and forth.
    Anything malformed (a forged value) gives None: the pixel checks in drawing_problem still apply.
    """
    if _recipe(spec) != "digit":
        return None
    try:
        paths = [item["path"] for item in raw["objects"] if str(item.get("type")).lower() == "path"]  # Fabric 6: "Path"
        length, xs, ys = 0.0, [], []
        for path in paths[:MAX_STROKES + 1]:
            previous = None
            for command in path:
                x, y = float(command[-2]), float(command[-1])  # every command ends at its end point
                if previous is not None:
                    length += math.hypot(x - previous[0], y - previous[1])
                previous = (x, y)
                xs.append(x), ys.append(y)
    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
        return None
    lead = "That doesn't look like one digit: "
    if len(paths) > MAX_STROKES:
        return lead + f"it took {len(paths)} strokes, more than a digit needs. Press Clear and write one digit."
    if not xs:
        return None
    size = max(max(xs) - min(xs), max(ys) - min(ys))
    if size > 0 and length > MAX_PEN_PATH * size:
        return lead + "the pen went back and forth like a scribble. Press Clear and write one digit."
    return None


def count_pieces_and_loops(cropped: np.ndarray) -> tuple[int, int]:
    """(separate pieces of ink, closed loops) of a (h, w) uint8 grey crop, on a SHAPE_GRID-px copy.

    Specks under 3% of the ink are not pieces; holes of fewer than 4 grid cells are not loops.
    """
    h, w = cropped.shape
    scale = SHAPE_GRID / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    ink = np.pad(np.asarray(Image.fromarray(cropped).resize(size, Image.Resampling.BOX)) > INK_LEVEL, 1)
    pieces = [n for n in _component_sizes(ink, diagonal=True) if n >= 0.03 * ink.sum()]
    # Background is 4-connected where ink is 8-connected (so a diagonal stroke closes a loop). The padded border
    # makes the outside one component, found first from the corner; the others are holes inside the ink.
    holes = _component_sizes(~ink, diagonal=False)[1:]
    return len(pieces), sum(n >= 4 for n in holes)


def _component_sizes(mask: np.ndarray, diagonal: bool) -> list[int]:
    """Sizes of the connected regions of a small boolean (h, w) mask, in row-major order of their first pixel."""
    return _component_labels(mask, diagonal)[1]


def _component_labels(mask: np.ndarray, diagonal: bool) -> tuple[np.ndarray, list[int]]:
    """(labels (h, w) int32: 0 off the mask, k for the k-th region in row-major order of its first pixel, sizes).

    scipy's labelling, in C: a pure-Python flood fill took 0.5-2.5 ms of each stroke's answer, longer while the
    server's other threads held the interpreter (tests/test_drawing.py checks it against a flood fill)."""
    labels, count = ndimage.label(mask, structure=_EIGHT_NEIGHBOURS if diagonal else _FOUR_NEIGHBOURS)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return labels.astype(np.int32, copy=False), sizes.tolist()


def _label_boxes(labels: np.ndarray, count: int) -> np.ndarray:
    """(count, 4) int: each region's (top, bottom, left, right), half-open, from _component_labels' labels."""
    ys, xs = np.nonzero(labels)
    which = labels[ys, xs] - 1
    boxes = np.empty((count, 4), dtype=np.int64)
    boxes[:, [0, 2]] = np.iinfo(np.int64).max
    boxes[:, [1, 3]] = -1
    np.minimum.at(boxes[:, 0], which, ys)
    np.maximum.at(boxes[:, 1], which, ys + 1)
    np.minimum.at(boxes[:, 2], which, xs)
    np.maximum.at(boxes[:, 3], which, xs + 1)
    return boxes


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
    """True for dark ink on a light background (paper), False for light ink on a dark one (a canvas, a board).

    The background is what most of the picture is (the ink is thin), so its median. Dim paper in a shadow can be
    darker than mid-grey: between LIGHT_BACKGROUND and DARK_BACKGROUND the ink decides, as what lies farthest from
    the background's level (a dark table around the page lies on the ink's side too, and is dropped later).
    """
    calm = np.asarray(Image.fromarray(grey).filter(ImageFilter.MedianFilter(3)))  # single noisy pixels are not ink
    background = float(np.median(calm))
    if background > LIGHT_BACKGROUND or background < DARK_BACKGROUND:
        return background > LIGHT_BACKGROUND
    darkest, lightest = np.percentile(calm, [0.01, 99.99])
    return background - float(darkest) > float(lightest) - background
