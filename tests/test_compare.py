"""The comparison view's engine (cnn/compare.py): shifted images, shift curves, the kept curve files, the table.

Unit tests use SYNTHETIC data (tests/conftest.py synthetic_mnist) and small models; the one test marked `mnist`
measures the bundled 1-epoch models on real MNIST, because the issue's point (the CNN keeps its accuracy when the
digits move, the MLP and the softmax do not) is a fact about trained networks and real digits.
"""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnn import compare, storage
from cnn.checkpoint import load_checkpoint, make_card, save_checkpoint
from cnn.config import ARTICLE, SOFTMAX
from cnn.model import build_model
from cnn.runs import RunInfo
from cnn.train import evaluate, train
from tests.conftest import synthetic_mnist


# ---------------------------------------------------------------- shift_images


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(1, 256, size=(3, 28, 28), dtype=np.uint8)  # no black pixel: 0 = moved in


def explicit_shift(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """The expected image, written out as one numpy slice per case (an independent reference)."""
    e = np.zeros_like(a)
    if (dx, dy) == (2, 0):  # right
        e[:, :, 2:] = a[:, :, :-2]
    elif (dx, dy) == (-3, 0):  # left
        e[:, :, :-3] = a[:, :, 3:]
    elif (dx, dy) == (0, 4):  # down
        e[:, 4:, :] = a[:, :-4, :]
    elif (dx, dy) == (0, -1):  # up
        e[:, :-1, :] = a[:, 1:, :]
    elif (dx, dy) == (5, -6):  # right and up
        e[:, :-6, 5:] = a[:, 6:, :-5]
    elif (dx, dy) == (0, 0):
        e[...] = a
    return e


@pytest.mark.parametrize("dx, dy", [(2, 0), (-3, 0), (0, 4), (0, -1), (5, -6), (0, 0)])
def test_shift_images_equals_an_explicit_numpy_slice_with_a_black_border(images, dx, dy):
    expected = explicit_shift(images, dx, dy)
    before = images.copy()
    moved = compare.shift_images(images, dx, dy)
    assert moved.dtype == np.uint8 and moved.shape == images.shape
    np.testing.assert_array_equal(moved, expected)
    np.testing.assert_array_equal(images, before)  # nothing changed in place
    # No wrap-around: exactly the rows/columns that came in at the border are black.
    assert (moved == 0).sum() == 3 * (28 * 28 - (28 - abs(dx)) * (28 - abs(dy)))


def test_shift_images_takes_torch_tensors_and_moves_them_the_same_way(images):
    moved = compare.shift_images(torch.from_numpy(images), 2, -1)
    assert isinstance(moved, torch.Tensor) and moved.dtype == torch.uint8
    expected = np.zeros_like(images)
    expected[:, :-1, 2:] = images[:, 1:, :-2]
    np.testing.assert_array_equal(moved.numpy(), expected)


def test_shift_images_out_of_the_frame_is_all_black_and_a_fraction_is_refused(images):
    assert not compare.shift_images(images, 28, 0).any()
    assert not compare.shift_images(images, 0, -40).any()
    for bad in (1.5, True, "2"):
        with pytest.raises(ValueError, match="whole number of pixels"):
            compare.shift_images(images, bad, 0)


# ---------------------------------------------------------------- shift_curve


@pytest.fixture(scope="module")
def trained_softmax():
    """Softmax regression trained for a few steps on the synthetic bars: it reads them well when they do not move."""
    data = synthetic_mnist(n_train=512, n_test=200)
    result = train(SOFTMAX.replace(epochs=2, eval_every=0), data, device=torch.device("cpu"))
    return result.model, data


def padded_crop(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """An independent reference for a shift: pad with black by 6 on every side, then cut the window back out."""
    padded = F.pad(images, (6, 6, 6, 6))
    return padded[:, 6 - dy:6 - dy + 28, 6 - dx:6 - dx + 28]


def test_shift_curve_at_zero_equals_evaluate_and_each_shift_is_the_mean_of_four_directions(trained_softmax):
    model, data = trained_softmax
    curve = compare.shift_curve(model, data.test_images, data.test_labels)
    assert [point["shift"] for point in curve] == list(range(7))
    assert curve[0]["accuracy"] == evaluate(model, data.test_images, data.test_labels)["accuracy"]
    assert curve[0]["accuracy"] > 0.9  # the bars are learned where they are
    for d in (1, 3, 6):
        reference = [evaluate(model, padded_crop(data.test_images, dx, dy), data.test_labels)["accuracy"]
                     for dx, dy in ((d, 0), (-d, 0), (0, d), (0, -d))]
        assert curve[d]["accuracy"] == pytest.approx(sum(reference) / 4, abs=1e-12)
    # Each class is a bar at its own row: moved 6 rows up or down it is read as another class.
    assert curve[6]["accuracy"] < curve[0]["accuracy"] - 0.2


def test_shift_curve_reports_its_progress_up_to_the_end(trained_softmax):
    model, data = trained_softmax
    seen = []
    compare.shift_curve(model, data.test_images[:20], data.test_labels[:20], shifts=(0, 2),
                        progress=lambda fraction, message: seen.append((fraction, message)))
    assert [f for f, _ in seen] == [0.0, 0.5, 1.0]
    assert "2 pixels" in seen[1][1]


# ---------------------------------------------------------------- the kept curve


def saved_run(folder, config=ARTICLE, **card_fields):
    """A model.pt with its card, as training leaves it: (checkpoint path, model, card as loaded)."""
    model = build_model(config, generator=torch.Generator().manual_seed(1))
    card = make_card(config, model, status="finished", epochs=1, **card_fields)
    path = save_checkpoint(folder / "model.pt", model, card)
    return (path, *load_checkpoint(path))


def test_a_measured_curve_is_kept_beside_a_run_and_read_back_without_measuring(tmp_path, trained_softmax):
    _, data = trained_softmax
    path, model, card = saved_run(tmp_path / "run", SOFTMAX)
    assert compare.curve_path(path) == tmp_path / "run" / "model.shift.json"
    assert compare.read_curve(path, card) is None
    curve = compare.measured_curve(path, model, card, data.test_images, data.test_labels)
    record = json.loads(compare.curve_path(path).read_text())
    assert record["weights_sha256"] == card["weights_sha256"] and record["images"] == compare.SHIFT_IMAGES
    assert record["accuracy"] == [point["accuracy"] for point in curve]

    class Refuses(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("a kept curve must not be measured again")

    assert compare.measured_curve(path, Refuses(), card, data.test_images, data.test_labels) == curve


@pytest.mark.parametrize("change", [
    {"weights_sha256": "0" * 64},  # another version of the weights
    {"accuracy": [0.5] * 6},  # six numbers, not seven
    {"accuracy": [0.5] * 6 + [1.5]},  # not an accuracy
    {"accuracy": [0.5] * 6 + [float("nan")]},
    {"accuracy": [0.5] * 6 + [True]},
    {"images": 500},  # measured on other images
    {"dataset": "fashion"},
    {"shifts": [0, 1, 2, 3, 4, 5, 7]},
])
def test_a_curve_file_that_does_not_fit_the_weights_is_not_used(tmp_path, change):
    path, _, card = saved_run(tmp_path / "run")
    good = {"weights_sha256": card["weights_sha256"], "dataset": "mnist", "images": compare.SHIFT_IMAGES,
            "shifts": list(range(7)), "accuracy": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]}
    compare.curve_path(path).write_text(json.dumps(good))
    assert [p["accuracy"] for p in compare.read_curve(path, card)] == good["accuracy"]
    compare.curve_path(path).write_text(json.dumps({**good, **change}))
    assert compare.read_curve(path, card) is None


def test_a_damaged_curve_file_is_not_used_and_an_unwritable_folder_only_costs_a_measurement(tmp_path, monkeypatch):
    path, _, card = saved_run(tmp_path / "run")
    compare.curve_path(path).write_text("{not json")
    assert compare.read_curve(path, card) is None
    compare.curve_path(path).write_bytes(b" " * (compare.MAX_CURVE_BYTES + 1))
    assert compare.read_curve(path, card) is None

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "atomic_write", full_disk)  # every small record of ours is written through it
    assert compare.save_curve(path, card, [{"shift": d, "accuracy": 0.5} for d in range(7)]) is False


def test_bundled_models_keep_their_curves_in_models_compare():
    for name, (network, path) in compare.BUNDLED_COMPARISON.items():
        assert compare.curve_path(path).parent == compare.COMPARE_DIR
        _, card = load_checkpoint(path)
        assert card["network"] == network and card["dataset"] == "mnist" and card["epochs"] == 1
        assert compare.read_curve(path, card) is not None, f"{name}'s kept curve does not fit its weights"
    assert compare.curve_path(compare.BUNDLED_COMPARISON["cnn-1epoch"][1]).name == "epoch-1.shift.json"


def test_bundled_cards_say_how_each_was_made():
    commands = {name: json.loads(path.with_suffix(".json").read_text())["command"]
                for name, (_, path) in compare.BUNDLED_COMPARISON.items() if path.parent == compare.COMPARE_DIR}
    assert commands == {
        "softmax-1epoch": "python -m cnn train --network softmax --epochs 1 --seed 0 --out softmax-1epoch",
        "mlp-1epoch": "python -m cnn train --network mlp --preset article --epochs 1 --out mlp-1epoch",
        "lenet-1epoch": "python -m cnn train --network lenet --preset fast --epochs 1 --out lenet-1epoch",
        "one-conv-1epoch": "python -m cnn train --network one-conv --preset article --epochs 1 --out one-conv-1epoch"}


# ---------------------------------------------------------------- comparison_rows


def compared(tmp_path, name, config, dataset="mnist", **card_fields):
    _, model, card = saved_run(tmp_path / name, config.replace(dataset=dataset), **card_fields)
    return compare.ComparedRun(name, model, card)


def test_comparison_rows_name_networks_count_parameters_and_use_the_datasets_class_names(tmp_path):
    per_class = [i / 10 for i in range(10)]
    runs = [compared(tmp_path, "soft", SOFTMAX, "fashion", accuracy=0.8, per_class_accuracy=per_class,
                     wall_seconds=12.5),
            compared(tmp_path, "net", ARTICLE.replace(architecture="mlp"), "fashion", accuracy=0.85,
                     per_class_accuracy=per_class)]
    rows = compare.comparison_rows(runs)
    soft, mlp = rows
    assert soft["network"] == soft["label"] == "softmax regression" and mlp["network"] == "an MLP"
    assert soft["dataset"] == "Fashion-MNIST" and soft["epochs"] == 1
    assert soft["parameters"] == 28 * 28 * 10 + 10  # one weight per pixel and class, a bias per class
    assert mlp["parameters"] == (784 * 625 + 625) + (625 * 10 + 10)
    assert soft["seconds"] == 12.5 and mlp["seconds"] is None  # the card's wall_seconds, none when it has none
    assert list(soft["per_class"]) == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                       "Sneaker", "Bag", "Ankle boot"]
    assert soft["per_class"]["Ankle boot"] == 0.9
    table = compare.table_rows(rows)
    assert table[0] == {"network": "softmax regression", "run": "soft", "recipe": "softmax baseline",
                        "trained": "1 epoch, 12 s", "accuracy": "80.00%", "weights": "7,850"}
    assert table[1]["trained"] == "1 epoch"  # its card has no time: nothing made up
    assert table[1]["recipe"] == "ARTICLE"  # another network and dataset are not a change of recipe
    chart = compare.per_class_values(rows)
    assert len(chart) == 20 and {"network": "an MLP", "class": "Trouser", "accuracy": 0.1} in chart


def test_the_recipe_column_says_when_a_run_changed_its_presets_recipe(tmp_path):
    from cnn.config import FAST

    runs = [compared(tmp_path, "today", FAST.replace(epochs=2, seed=3)),
            compared(tmp_path, "old-fast", FAST.replace(batch_size=128, learning_rate=0.01, epoch_images=0))]
    table = compare.table_rows(compare.comparison_rows(runs))
    assert [row["recipe"] for row in table] == ["FAST", "FAST, changed"]


def test_comparison_rows_refuse_runs_of_different_datasets_with_a_sentence(tmp_path):
    runs = [compared(tmp_path, "digits", SOFTMAX, "mnist"), compared(tmp_path, "clothes", SOFTMAX, "fashion")]
    with pytest.raises(ValueError, match=r"different datasets \(Fashion-MNIST and MNIST\).*Choose one dataset"):
        compare.comparison_rows(runs)


def test_a_card_without_per_class_accuracy_is_evaluated_on_the_test_data(tmp_path):
    data = synthetic_mnist(n_train=16, n_test=100)
    run = compared(tmp_path, "bare", SOFTMAX)
    assert "per_class_accuracy" not in run.card
    row, = compare.comparison_rows([run], test_data=(data.test_images, data.test_labels))
    with torch.no_grad():  # the reference: the model called directly, class by class
        predicted = run.model(data.test_images.float().div(255).unsqueeze(1)).argmax(1)
    assert row["accuracy"] == pytest.approx(float((predicted == data.test_labels).float().mean()))
    for label in range(10):
        mask = data.test_labels == label
        assert row["per_class"][str(label)] == pytest.approx(float((predicted[mask] == label).float().mean()))
    assert compare.comparison_rows([run])[0]["per_class"] == {}  # no test data: nothing made up


def test_two_runs_of_one_network_are_told_apart_by_their_names(tmp_path):
    runs = [compared(tmp_path, "a", SOFTMAX), compared(tmp_path, "b", SOFTMAX), compared(tmp_path, "c", ARTICLE)]
    assert compare.run_labels(runs) == {"a": "softmax regression (a)", "b": "softmax regression (b)",
                                        "c": "the article's CNN"}
    assert compare.color_scale(["x", "y"])["domain"] == ["x", "y"]
    assert len(set(compare.color_scale(["x", "y"])["range"])) == 2


# ---------------------------------------------------------------- what to see


def curve(*accuracies):
    return [{"shift": d, "accuracy": a} for d, a in enumerate(accuracies)]


def test_the_sentences_follow_the_numbers_not_the_network_names(tmp_path):
    runs = [compared(tmp_path, "soft", SOFTMAX), compared(tmp_path, "cnn", ARTICLE)]
    sentences = compare.shift_sentences(runs, {"soft": curve(.9, .8, .6, .4, .2, .1, .1),
                                               "cnn": curve(.95, .94, .9, .8, .6, .5, .3)})
    assert sentences[0].startswith("Moved by 4 pixels, softmax regression falls most, from 90.0% to 20.0%")
    assert "neighbours" in sentences[0]
    assert sentences[1].startswith("The article's CNN keeps the most, 60.0% (from 95.0%)")
    assert "3 pooling" in sentences[1]
    # Swap the numbers: the sentences say what was measured, and give no reason that would contradict it.
    swapped = compare.shift_sentences(runs, {"soft": curve(.9, .9, .9, .9, .85, .8, .8),
                                             "cnn": curve(.95, .9, .7, .5, .3, .2, .1)})
    assert swapped[0] == "Moved by 4 pixels, the article's CNN falls most, from 95.0% to 30.0%."
    assert swapped[1] == "Softmax regression keeps the most, 85.0% (from 90.0%)."
    assert compare.shift_sentences(runs[:1], {"soft": curve(*[.5] * 7)}) == []
    # The biggest fall need not end lowest (the bundled MLP falls 71 points to 22.0%, softmax 71 to 19.2%).
    both = compare.shift_sentences(runs, {"soft": curve(.80, .7, .5, .3, .15, .1, .1),
                                          "cnn": curve(.95, .9, .7, .5, .20, .2, .1)})
    assert both[0] == ("Moved by 4 pixels, the article's CNN falls most, from 95.0% to 20.0%. Softmax regression, "
                       "which started lower, ends lowest, at 15.0%.")


def test_shift_values_are_one_row_per_run_and_shift():
    values = compare.shift_values({"a": curve(*[.5] * 7), "b": curve(*[.4] * 7)}, {"a": "an MLP", "b": "x"})
    assert len(values) == 14 and values[0] == {"network": "an MLP", "shift": 0, "accuracy": .5}


# ---------------------------------------------------------------- what can be compared


def test_candidates_are_the_bundled_set_then_finished_runs_with_an_epoch(tmp_path):
    path, _, card = saved_run(tmp_path / "done")
    runs = [RunInfo("done", tmp_path / "done", path, card),
            RunInfo("running", tmp_path, path, {**card, "status": "running"}),
            RunInfo("no-epoch", tmp_path, path, {**card, "epochs": 0}),
            RunInfo("broken", tmp_path, None, None, "Run 'broken' cannot be shown."),
            RunInfo("fashion-run", tmp_path, path, {**card, "dataset": "fashion"})]
    found = compare.candidates(runs, bundled_models={})
    keys = [c.key for c in found]
    assert keys == ["compare:softmax-1epoch", "compare:mlp-1epoch", "compare:lenet-1epoch", "compare:one-conv-1epoch",
                    "compare:cnn-1epoch", "done", "fashion-run"]
    assert found[0].label == "softmax regression, 1 epoch (bundled)" and found[0].run == ""
    assert found[5].label == "done: the article's CNN (1 epoch)" and found[5].run == "done"
    assert [c.dataset for c in found] == ["mnist"] * 6 + ["fashion"]
    assert compare.default_choice(found) == keys[:5]
    assert compare.default_choice([c for c in found if c.dataset == "fashion"]) == ["fashion-run"]
    assert compare.shown_name("compare:mlp-1epoch") == "mlp-1epoch" and compare.shown_name("done") == "done"


# ---------------------------------------------------------------- real MNIST


@pytest.mark.mnist
def test_after_one_epoch_the_cnn_keeps_more_accuracy_at_4_pixels_than_the_mlp_and_the_softmax(real_mnist):
    """The issue's point, measured here on the first 1,000 real test digits, never read from the kept files."""
    images, labels = real_mnist.test_images[:1000], real_mnist.test_labels[:1000]
    measured = {}
    for name in ("softmax-1epoch", "mlp-1epoch", "cnn-1epoch"):
        path = compare.BUNDLED_COMPARISON[name][1]
        model, card = load_checkpoint(path)
        measured[name] = compare.shift_curve(model, images, labels, shifts=(0, 4))
        kept = compare.read_curve(path, card)  # what the page shows without measuring: the same numbers
        assert [kept[0]["accuracy"], kept[4]["accuracy"]] == pytest.approx(
            [p["accuracy"] for p in measured[name]], abs=1e-6)
    at4 = {name: curve[1]["accuracy"] for name, curve in measured.items()}
    assert at4["cnn-1epoch"] > at4["mlp-1epoch"] and at4["cnn-1epoch"] > at4["softmax-1epoch"], at4
    for name, curve in measured.items():  # every one of them is a real reader of unmoved digits
        assert curve[0]["accuracy"] > 0.85 and math.isfinite(curve[1]["accuracy"]), (name, curve)


# ---------------------------------------------------------------- the page (AppTest)


@pytest.fixture
def app(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    address = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")  # a laptop: its one user is the teacher
    yield AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    config.set_option("server.address", address)
    st.cache_resource.clear()


@pytest.mark.mnist  # the page loads MNIST's test images for the shift curves
def test_the_page_offers_a_finished_run_and_drops_forged_choices(app, tmp_path):
    saved_run(tmp_path / "runs" / "my-softmax", SOFTMAX, accuracy=0.9, per_class_accuracy=[0.9] * 10, wall_seconds=3.0)
    app.session_state["kept.compare_dataset"] = "../etc"  # a browser can send any value: forged, then stale
    app.session_state["kept.compare_runs"] = ["compare:softmax-1epoch", "no-such-run", "compare:../x"]
    app.session_state["compare_default_for"] = "mnist"
    app.run()
    app.switch_page("pages/compare.py").run()
    assert not app.exception
    assert app.selectbox(key="kept.compare_dataset").value == "mnist"
    runs = app.multiselect(key="kept.compare_runs")
    assert runs.value == ["compare:softmax-1epoch"]
    assert any(option.startswith("my-softmax: softmax regression") for option in runs.options)
    runs.set_value(["compare:cnn-1epoch", "my-softmax"]).run()
    assert not app.exception and not app.error
    table = next(m.value for m in app.markdown if m.value.startswith("| network"))
    _, cnn_card = load_checkpoint(compare.BUNDLED_COMPARISON["cnn-1epoch"][1])
    assert (f"| the article's CNN | cnn-1epoch | ARTICLE | 1 epoch, {cnn_card['wall_seconds']:.0f} s "
            f"| {100 * cnn_card['accuracy']:.2f}% | 1,378,698 |") in table
    assert "| softmax regression | my-softmax | softmax baseline | 1 epoch, 3 s | 90.00% | 7,850 |" in table
    # The new run's curve was measured on this view and kept beside its checkpoint for the next one.
    assert (tmp_path / "runs" / "my-softmax" / "model.shift.json").is_file()
    assert any(m.value.startswith("Moved by 4 pixels,") for m in app.markdown)


def test_a_forged_choice_keeps_each_offered_run_once():
    """Repeats would each cost a full evaluation (a student sent one run 5,000 times): each offered key once."""
    offered = {"compare:mlp-1epoch": 1, "mine": 2}
    forged = ["mine"] * 50 + ["../x", 7, None, "compare:mlp-1epoch", "mine", "compare:../../x"]
    assert compare.offered_once(forged, offered) == ["mine", "compare:mlp-1epoch"]
    assert compare.offered_once("mine", offered) == [] and compare.offered_once(None, offered) == []


def test_the_trained_cell_says_only_what_the_card_holds():
    assert compare.trained_words(2, 95.4) == "2 epochs, 1 min 35 s"
    assert compare.trained_words(1, None) == "1 epoch"
    assert compare.trained_words(None, 12.0) == "12 s"
    assert compare.trained_words(None, float("nan")) == "-"
