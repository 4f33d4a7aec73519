"""cnn.drawing: MNIST-style preprocessing of SYNTHETIC RGBA drawings, and upload checks."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnn.drawing import (MAX_UPLOAD_BYTES, UploadError, centre_of_mass, preprocess_drawing, preprocess_steps,
                         read_upload, read_upload_steps)


def canvas(size=280):
    rgba = np.zeros((size, size, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # the canvas's black background is opaque
    return rgba


def ink(rgba, rows, cols):
    rgba[rows, cols, :3] = 255
    return rgba


def png_bytes(array, mode=None, **save):
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def test_output_contract():
    x = preprocess_drawing(ink(canvas(), slice(40, 240), slice(120, 150)))
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.float32
    assert x.min().item() >= 0.0 and x.max().item() == pytest.approx(1.0)


def test_off_centre_stroke_comes_out_centred_by_mass():
    rgba = ink(canvas(), slice(10, 90), slice(10, 30))  # a short bar in the top-left corner
    rgba = ink(rgba, slice(10, 25), slice(10, 60))
    out = preprocess_steps(rgba)["centred"]
    row, col = centre_of_mass(out)
    assert abs(row - 13.5) <= 0.75 and abs(col - 13.5) <= 0.75
    original_row, original_col = centre_of_mass(preprocess_steps(rgba)["grey"])
    assert original_row < 60 and original_col < 60  # it really was off-centre


def test_aspect_ratio_is_kept_and_longer_side_is_20():
    rgba = ink(canvas(), slice(40, 240), slice(100, 150))  # 200 tall, 50 wide: 4:1
    out = preprocess_steps(rgba)
    assert out["scaled"].shape == (20, 5)
    rows, cols = np.nonzero(out["centred"] > 40)
    assert rows.max() - rows.min() + 1 in (19, 20, 21)
    assert cols.max() - cols.min() + 1 in (4, 5, 6)
    wide = preprocess_steps(ink(canvas(), slice(120, 160), slice(20, 260)))  # 40 tall, 240 wide
    assert wide["scaled"].shape == (3, 20)


def test_blank_and_dot_give_none():
    assert preprocess_drawing(canvas()) is None
    assert preprocess_drawing(ink(canvas(), slice(130, 145), slice(130, 145))) is None  # a 15 px dot
    transparent = np.zeros((280, 280, 4), dtype=np.uint8)
    transparent[100:200, 100:110, :3] = 255  # white but fully transparent: not ink
    assert preprocess_drawing(transparent) is None


def test_inverted_upload_is_handled():
    paper = np.full((100, 80), 255, dtype=np.uint8)
    paper[15:85, 35:45] = 0  # a dark "1" on light paper
    rgba = read_upload(png_bytes(paper))
    assert rgba[0, 0, 0] == 0 and rgba[50, 40, 0] == 255  # now white ink on black
    x = preprocess_drawing(rgba)
    assert x is not None and x[0, 0, 14, 13:15].max() > 0.9


def test_jpeg_and_16_bit_uploads():
    photo = np.zeros((60, 60, 3), dtype=np.uint8)
    photo[10:50, 25:35] = 255
    assert preprocess_drawing(read_upload(png_bytes(photo, format="JPEG"))) is not None
    deep = np.zeros((60, 60), dtype=np.uint16)
    deep[10:50, 25:35] = 65535
    rgba = read_upload(png_bytes(deep))  # saved as a 16-bit greyscale PNG
    assert rgba.dtype == np.uint8 and rgba[30, 30, 0] == 255 and rgba[0, 0, 0] == 0


@pytest.mark.parametrize("data, message", [
    (b"%PDF-1.4 not an image", "not an image"),
    (b"", "empty"),
    (b"x" * (MAX_UPLOAD_BYTES + 1), "the limit is 2 MB"),
])
def test_bad_uploads_get_a_sentence(data, message):
    with pytest.raises(UploadError, match=message):
        read_upload(data, "file")


def test_truncated_upload():
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (200, 200), dtype=np.uint8))
    with pytest.raises(UploadError, match="truncated"):
        read_upload(data[: len(data) // 2], "half.png")


def test_decompression_bomb_is_refused():
    bomb = png_bytes(np.zeros((5000, 5000), dtype=np.uint8), optimize=True)  # 25 Mpx, a few KB
    assert len(bomb) < MAX_UPLOAD_BYTES
    with pytest.raises(UploadError, match="bomb.png has too many pixels .*the limit is 4 million"):
        read_upload(bomb, "bomb.png")


@pytest.mark.parametrize("side", [2100, 4096])  # 4.4 Mpx: our own check; 16.7 Mpx: Pillow's lowered limit
def test_uploads_over_4_megapixels_are_refused_before_decoding(side):
    big = png_bytes(np.zeros((side, side), dtype=np.uint8), optimize=True)
    assert len(big) < MAX_UPLOAD_BYTES  # the old check (2 MB, 16.7 Mpx) let both through
    with pytest.raises(UploadError, match="the limit is 4 million"):
        read_upload_steps(big, "big.png")


def test_animated_and_other_formats_are_refused():
    frames = [Image.fromarray(np.full((20, 20), v, dtype=np.uint8)) for v in (0, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(UploadError, match="animated"):
        read_upload(buffer.getvalue(), "anim.png")
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF")
    with pytest.raises(UploadError, match="PNG or JPEG"):
        read_upload(gif.getvalue(), "still.gif")
