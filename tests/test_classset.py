"""cnn.classset: the class's own handwriting saved, reloaded, scored and exported (SYNTHETIC drawings)."""
import io

import numpy as np
import pytest
import torch

from cnn.classset import (ClassSetError, class_set_npz, label_drawing, load_class_set, remove_sample, reset_class_set,
                          sample_files, save_sample, score_class_set, scored_class_set, undo_last_save)
from cnn.model import ConvNet
from cnn.settings import ServerSettings


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
    model = ConvNet().eval()
    score = score_class_set(model, samples)
    # The reference: the model called directly on the loaded images, not through score_class_set's evaluate.
    with torch.no_grad():
        expected = model(torch.from_numpy(samples.images).float().div(255).unsqueeze(1)).argmax(1).numpy()
    assert score["n"] == 5 and score["counts"][:3] == [2, 2, 1]
    assert score["accuracy"] == pytest.approx(float((expected == samples.labels).mean()))
    assert score["mistakes"] == [(i, int(samples.labels[i]), int(expected[i]))
                                 for i in range(5) if expected[i] != samples.labels[i]]
    with np.load(io.BytesIO(class_set_npz(samples))) as npz:
        assert npz["images"].shape == (5, 28, 28) and npz["labels"].tolist() == samples.labels.tolist()


def test_bad_samples_are_refused(tmp_path):
    with pytest.raises(ValueError, match="digit from 0 to 9"):
        save_sample(tmp_path, np.zeros((28, 28), np.uint8), 10)
    with pytest.raises(ValueError, match="28x28"):
        save_sample(tmp_path, np.zeros((10, 10), np.uint8), 1)
    assert score_class_set(ConvNet().eval(), load_class_set(tmp_path))["n"] == 0


def test_saves_are_capped_per_session_and_in_total(tmp_path):
    limits = ServerSettings(class_samples_per_session=3, class_samples_total=5)
    image = np.zeros((28, 28), np.uint8)
    for saved in range(3):
        save_sample(tmp_path, image, 1, saved_by_session=saved, settings=limits)
    with pytest.raises(ClassSetError, match=r"saved 3 drawings, the most one student may save \(3\)"):
        save_sample(tmp_path, image, 1, saved_by_session=3, settings=limits)
    for saved in range(2):  # a second student fills the set
        save_sample(tmp_path, image, 2, saved_by_session=saved, settings=limits)
    with pytest.raises(ClassSetError, match=r"class set is full \(5 drawings\)"):
        save_sample(tmp_path, image, 3, saved_by_session=0, settings=limits)
    assert len(sample_files(tmp_path)) == 5 and not list(tmp_path.rglob("*.tmp"))


def test_set_and_score_are_cached_until_the_folder_or_the_model_changes(tmp_path):
    model = ConvNet().eval()
    save_sample(tmp_path, np.zeros((28, 28), np.uint8), 1)
    first = scored_class_set(tmp_path, model, ("model.pt", 1.0))
    assert scored_class_set(tmp_path, model, ("model.pt", 1.0)) is first  # nothing read or scored again
    assert not first[0].images.flags.writeable  # shared by every session: read-only
    assert scored_class_set(tmp_path, model, ("model.pt", 2.0)) is not first  # a new version of the model
    saved = save_sample(tmp_path, np.full((28, 28), 255, np.uint8), 7)
    samples, score = scored_class_set(tmp_path, model, ("model.pt", 1.0))
    assert score["n"] == 2 and score["counts"][7] == 1
    remove_sample(tmp_path, saved.name)
    assert scored_class_set(tmp_path, model, ("model.pt", 1.0))[1]["n"] == 1


def test_remove_accepts_only_names_of_ours_and_reset_leaves_other_files(tmp_path):
    image = np.zeros((28, 28), np.uint8)
    kept = save_sample(tmp_path, image, 4)
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"teacher's file")
    for name in ("../secret.png", "secret.png", str(kept), "4/" + kept.name, kept.name + "\n", ""):
        with pytest.raises(ClassSetError, match="not the name of a saved class drawing"):
            remove_sample(tmp_path, name)
    with pytest.raises(ClassSetError, match="not in the class set"):
        remove_sample(tmp_path, "20240101-120000-0123abcd.png")
    assert kept.exists() and secret.exists()
    remove_sample(tmp_path, kept.name)
    assert not kept.exists()
    for label in (0, 5, 5):
        save_sample(tmp_path, image, label)
    (tmp_path / "5" / "notes.png").write_bytes(b"not ours")
    assert reset_class_set(tmp_path) == 3
    assert sample_files(tmp_path) == [] and secret.exists() and (tmp_path / "5" / "notes.png").exists()


def test_a_new_drawing_is_read_and_scored_alone_not_the_whole_set(tmp_path, monkeypatch):
    """Near the 5,000 cap, every save made each session's next rerun read and score every drawing again (8 s)."""
    import torch

    import cnn.classset as classset

    rng = np.random.default_rng(1)
    for i in range(12):
        save_sample(tmp_path, rng.integers(0, 256, (28, 28), dtype=np.uint8), i % 10)
    seen = []

    class Counting(torch.nn.Module):
        """The model, counting the images it is asked to read."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            seen.append(len(x))
            return self.model(x)

    torch.manual_seed(0)
    model = Counting(ConvNet(init_std=0.2).eval()).eval()
    decoded = []
    read = classset._read_sample
    monkeypatch.setattr(classset, "_read_sample", lambda path: decoded.append(path) or read(path))
    scored_class_set(tmp_path, model, ("counting.pt", 1.0))
    assert sum(seen) == 12 and len(decoded) == 12
    seen.clear(), decoded.clear()
    newest = save_sample(tmp_path, rng.integers(0, 256, (28, 28), dtype=np.uint8), 3)
    samples, score = scored_class_set(tmp_path, model, ("counting.pt", 1.0))
    assert sum(seen) == 1 and decoded == [newest]  # only the new drawing was decoded and read
    # The same answer as reading and scoring everything from scratch, with the model called directly.
    with torch.inference_mode():
        expected = model.model(torch.tensor(samples.images).float()[:, None] / 255).argmax(1).numpy()
    assert score["n"] == 13 and score["accuracy"] == pytest.approx(float((expected == samples.labels).mean()))
    assert [m[0] for m in score["mistakes"]] == np.nonzero(expected != samples.labels)[0].tolist()
    remove_sample(tmp_path, newest.name)
    assert scored_class_set(tmp_path, model, ("counting.pt", 1.0))[1]["n"] == 12


def saved_labels(folder) -> list[int]:
    """The label of every sample on disk, read from the folders (independent of the session's own record)."""
    return sorted(int(path.parent.name) for path in sample_files(folder))


def drawing(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)


def test_the_same_drawing_saved_twice_by_one_session_is_one_sample(tmp_path):
    saves = {}
    assert label_drawing(tmp_path, drawing(0), 3, saves) == "Saved as a 3 to the class's handwriting set."
    assert label_drawing(tmp_path, drawing(0).copy(), 3, saves) is None  # a double click: the same pixels again
    assert saved_labels(tmp_path) == [3]
    label_drawing(tmp_path, drawing(1), 3, saves)  # another drawing with the same label is a sample of its own
    assert saved_labels(tmp_path) == [3, 3]
    assert label_drawing(tmp_path, drawing(0), 3, {}) is not None  # another session's save is its own
    assert saved_labels(tmp_path) == [3, 3, 3]


def test_a_second_label_on_the_same_drawing_replaces_the_first(tmp_path):
    saves = {}
    label_drawing(tmp_path, drawing(0), 3, saves)
    first = sample_files(tmp_path)
    said = label_drawing(tmp_path, drawing(0), 8, saves)
    assert said == "Saved as an 8 to the class's handwriting set (instead of a 3)."
    assert saved_labels(tmp_path) == [8] and not first[0].exists()
    assert np.array_equal(load_class_set(tmp_path).images[0], drawing(0))


def test_taking_a_label_back_and_undo_remove_exactly_that_sample(tmp_path):
    other = save_sample(tmp_path, drawing(9), 5)  # another student's sample: never touched
    saves = {}
    for seed, label in ((0, 1), (1, 2), (2, 4)):
        label_drawing(tmp_path, drawing(seed), label, saves)
    assert label_drawing(tmp_path, drawing(1), None, saves).startswith("Took back your 2")  # the pill un-chosen
    assert saved_labels(tmp_path) == [1, 4, 5]
    assert undo_last_save(tmp_path, saves).startswith("Took back your 4")  # the last one saved
    assert saved_labels(tmp_path) == [1, 5]
    label_drawing(tmp_path, drawing(0), 7, saves)  # relabelled: now the last one saved
    label_drawing(tmp_path, drawing(3), 6, saves)
    remove_sample(tmp_path, sample_files(tmp_path)[-1].name)  # the teacher removed the 7 meanwhile
    assert undo_last_save(tmp_path, saves).startswith("Took back your 6")
    assert undo_last_save(tmp_path, saves).startswith("Took back your 7")  # gone already: no error
    assert undo_last_save(tmp_path, saves) is None and saves == {}
    assert saved_labels(tmp_path) == [5] and other.exists()


def test_the_session_cap_counts_the_samples_it_has_now(tmp_path):
    limits = ServerSettings(class_samples_per_session=2, class_samples_total=100)
    saves = {}
    label_drawing(tmp_path, drawing(0), 1, saves, settings=limits)
    label_drawing(tmp_path, drawing(1), 1, saves, settings=limits)
    label_drawing(tmp_path, drawing(1), 2, saves, settings=limits)  # relabelling adds nothing
    with pytest.raises(ClassSetError, match=r"the most one student may save \(2\)"):
        label_drawing(tmp_path, drawing(2), 1, saves, settings=limits)
    undo_last_save(tmp_path, saves)
    label_drawing(tmp_path, drawing(2), 1, saves, settings=limits)
    assert saved_labels(tmp_path) == [1, 1]


def test_the_class_set_holds_digits_and_says_so_to_a_fashion_model(tmp_path):
    """The folders 0-9 are MNIST's classes: a Fashion model is not scored on them (its answers would be clothes),
    and the page's sentence says why; an MNIST model still is."""
    from cnn.classset import class_set_note

    save_sample(tmp_path, np.zeros((28, 28), np.uint8), 3)
    samples = load_class_set(tmp_path)
    assert class_set_note("mnist") is None
    note = class_set_note("fashion")
    assert note.startswith("The class's handwriting set holds digits, so it is for MNIST models")
    assert "Fashion-MNIST" in note
    fashion = ConvNet().eval()
    fashion.dataset = "fashion"
    with pytest.raises(ValueError, match="holds digits"):
        score_class_set(fashion, samples)
    with pytest.raises(ValueError, match="holds digits"):
        scored_class_set(tmp_path, fashion, ("fashion-model", 0))
    assert score_class_set(ConvNet().eval(), samples)["n"] == 1
