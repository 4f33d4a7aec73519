"""Photos of a digit on paper (issue 11): SYNTHETIC photos of REAL MNIST test digits are read as themselves.

Real MNIST digits, because the question is whether the paper chain (cnn.drawing.photo_steps) hands the network
the digit a person wrote, after shading, noise, a turn, a big page and JPEG; a synthetic bar cannot answer that.
The photos go in as bytes, through read_upload_steps, exactly as an upload does.
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image

import cnn
from cnn.drawing import read_upload_steps
from cnn.photos import PhotoLook, light, photo_look, photo_pixels, synthetic_photo

PHOTOS = 240  # issue 11 asks for at least 200
MIN_ACCURACY = 0.95


@pytest.fixture(scope="module")
def model():
    return cnn.load_model()[0]


def read(model, data: bytes) -> int | None:
    """An upload's bytes -> the digit the bundled model reads, or None when the chain finds no digit."""
    steps = read_upload_steps(data, "photo.jpg")
    if steps is None:
        return None
    x = torch.from_numpy(steps["centred"].astype(np.float32) / 255.0).view(1, 1, 28, 28)
    with torch.inference_mode():
        return int(model(x).argmax())


def photo_score(model, mnist, count: int, seed: int, **look) -> tuple[float, list[int]]:
    """(share read right, test-set indices read wrong) of count photos of digits spread over the whole test set."""
    rng = np.random.default_rng(seed)
    chosen = np.linspace(0, len(mnist.test_labels) - 1, count).round().astype(int)  # every part of the test set
    wrong = [int(i) for i in chosen
             if read(model, synthetic_photo(mnist.test_images[i].numpy(), rng, **look)[0]) != int(mnist.test_labels[i])]
    return 1 - len(wrong) / count, wrong


def test_the_photo_maker_makes_paper_shadow_and_a_small_dark_digit():
    """The helper itself, on a synthetic "1" without noise: the paper's level, the shadow's depth, the digit's place."""
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[4:24, 12:16] = 255
    look = photo_look(np.random.default_rng(0), paper=220.0, ink=40.0, shadow=0.3, shadow_from="bottom-right",
                      noise=0.0, angle=0.0, digit_px=60, page=(400, 500), where=(0.25, 0.75), tint=(1.0, 1.0, 1.0))
    pixels = photo_pixels(digit, look, np.random.default_rng(0))[..., 0].astype(float)
    assert pixels.shape == (400, 500)
    assert pixels[0, 0] == pytest.approx(220, abs=1)  # the lit corner is the paper's own brightness
    assert pixels[-1, -1] == pytest.approx(220 * 0.7, abs=1)  # the far corner 30% darker
    assert light(look).min() == pytest.approx(0.7, abs=1e-6) and light(look).max() == pytest.approx(1.0)
    rows, cols = np.nonzero(pixels < 0.5 * (220 * light(look)))  # clearly darker than the paper there: the ink
    assert 55 <= rows.max() - rows.min() + 1 <= 65  # the "1" is 20 of 20 px of the box: 60 px
    assert 0.15 * 400 < rows.mean() < 0.45 * 400 and cols.mean() > 0.55 * 500  # upper right, as placed
    darkest = np.unravel_index(np.argmin(pixels), pixels.shape)
    assert pixels[darkest] == pytest.approx(40 * light(look)[darkest], abs=1)  # full ink: the ink's own brightness
    data, drawn = synthetic_photo(digit, np.random.default_rng(1))
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.size == (drawn.page[1], drawn.page[0])
    assert 200 <= drawn.paper <= 235 and 40 <= drawn.digit_px <= 120 and abs(drawn.angle) <= 10


@pytest.mark.mnist
def test_photos_of_real_test_digits_on_paper_are_read(model, real_mnist):
    """>= 95% of 240 photos: off-white paper (200-235), a shadow up to 35% from a side or a corner, noise, a turn of
    up to 10 degrees, a 40-120 px digit anywhere on a 300-600 px page, JPEG quality 60-90. The old chain: 16%."""
    accuracy, wrong = photo_score(model, real_mnist, PHOTOS, seed=11)
    assert accuracy >= MIN_ACCURACY, f"{accuracy:.1%} of {PHOTOS} photos read right; wrong: {wrong[:20]}"


@pytest.mark.mnist
@pytest.mark.parametrize("name, look", [
    ("dim paper", dict(paper=150.0, ink=30.0)),
    ("a deep shadow in a corner", dict(shadow=0.35, shadow_from="bottom-left")),
    ("a deep shadow in the other corner", dict(shadow=0.35, shadow_from="top-right")),
])
def test_dim_paper_and_corner_shadows_are_read(model, real_mnist, name, look):
    accuracy, wrong = photo_score(model, real_mnist, 40, seed=12, **look)
    assert accuracy >= MIN_ACCURACY, f"{name}: {accuracy:.1%} of 40 read right; wrong: {wrong}"


@pytest.mark.mnist
def test_a_pure_white_png_still_reads_right(model, real_mnist):
    """The case that worked before: a black digit on pure white, saved as a PNG (no shading, no noise)."""
    chosen = np.linspace(3, len(real_mnist.test_labels) - 4, 60).round().astype(int)
    wrong = []
    for i in chosen:
        page = np.full((300, 300), 255, dtype=np.uint8)
        digit = Image.fromarray(real_mnist.test_images[i].numpy()).resize((224, 224), Image.Resampling.BICUBIC)
        page[38:262, 38:262] = 255 - np.asarray(digit)
        buffer = io.BytesIO()
        Image.fromarray(page).save(buffer, format="PNG")
        if read(model, buffer.getvalue()) != int(real_mnist.test_labels[i]):
            wrong.append(int(i))
    assert len(wrong) <= 2, f"{len(wrong)} of 60 white PNGs read wrong: {wrong}"


@pytest.mark.parametrize("seed", range(12))
def test_plain_paper_with_shading_and_noise_has_no_ink(seed):
    """No digit on the page: shading, noise and JPEG's blocks must not be taken for ink."""
    rng = np.random.default_rng(100 + seed)
    look = dict(shadow=float(rng.uniform(0.2, 0.5)), noise=float(rng.uniform(3, 10)), quality=int(rng.integers(40, 91)))
    data, drawn = synthetic_photo(None, rng, **look)
    assert isinstance(drawn, PhotoLook) and drawn.shadow >= 0.2
    assert read_upload_steps(data, "paper.jpg") is None
