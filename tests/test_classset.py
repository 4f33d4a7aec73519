"""cnn.classset: the class's own handwriting saved, reloaded, scored and exported (SYNTHETIC drawings)."""
import io

import numpy as np
import pytest

from cnn.classset import class_set_npz, load_class_set, save_sample, score_class_set
from cnn.model import ConvNet


def test_round_trip_score_and_export(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for i, image in enumerate(images):
        save_sample(tmp_path, image, i % 3)
    (tmp_path / "4").mkdir()
    (tmp_path / "4" / "broken.png").write_bytes(b"not a png")  # skipped, not fatal
    samples = load_class_set(tmp_path)
    assert len(samples.labels) == 5 and sorted(samples.labels.tolist()) == [0, 0, 1, 1, 2]
    assert any(np.array_equal(images[0], image) for image in samples.images)
    score = score_class_set(ConvNet().eval(), samples)
    assert score["n"] == 5 and 0 <= score["accuracy"] <= 1 and score["counts"][:3] == [2, 2, 1]
    assert len(score["mistakes"]) == round(5 * (1 - score["accuracy"]))
    with np.load(io.BytesIO(class_set_npz(samples))) as npz:
        assert npz["images"].shape == (5, 28, 28) and npz["labels"].tolist() == samples.labels.tolist()


def test_bad_samples_are_refused(tmp_path):
    with pytest.raises(ValueError, match="digit from 0 to 9"):
        save_sample(tmp_path, np.zeros((28, 28), np.uint8), 10)
    with pytest.raises(ValueError, match="28x28"):
        save_sample(tmp_path, np.zeros((10, 10), np.uint8), 1)
    assert score_class_set(ConvNet().eval(), load_class_set(tmp_path))["n"] == 0
