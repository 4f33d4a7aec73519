"""The hidden layer's map (cnn/projection.py): hidden values, PCA and t-SNE maps, Procrustes alignment, placing new
images, the kept files, the chart's rows and clicks.

Unit tests use small SYNTHETIC images and untrained networks; the tests marked `mnist` use real MNIST, because
"the classes separate once the network has learned" is a fact about a trained network and real digits.
"""
import json
import os

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier

from cnn import projection
from cnn.config import ARTICLE
from cnn.data import to_float
from cnn.model import build_model
from cnn.projection import (PROJECTIONS, Projection, alignment, cached_projection, fit_projection,
                            hidden_layer, kept_projection, hidden_projection, hidden_values, map_points, neighbour_accuracy,
                            picked_point, projection_file, projection_key, read_projection, save_projection)
from tests.conftest import synthetic_mnist


def network(architecture: str = "cnn", seed: int = 0):
    """An untrained network of ARTICLE's recipe, weights from a fixed seed, in eval mode."""
    return build_model(ARTICLE.replace(architecture=architecture), torch.Generator().manual_seed(seed)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return to_float(synthetic_mnist(n_train=8, n_test=120).test_images)  # (120, 1, 28, 28) in [0, 1]


# ---------------------------------------------------------------- the hidden layer


def test_the_hidden_layer_is_the_last_dense_one_before_the_logits():
    assert hidden_layer(network("cnn")) == "fc"  # the article's FC 625
    assert hidden_layer(network("lenet")) == "fc2"  # LeNet's 84, not its first dense layer
    assert hidden_layer(network("mlp")) == "fc"


def test_hidden_values_equal_the_layer_applied_by_hand(images):
    mlp = network("mlp")
    expected = torch.relu(mlp.fc(images.flatten(1))).detach().numpy()  # 784 pixels -> FC 625 -> ReLU
    values = hidden_values(mlp, images)
    assert values.shape == (len(images), 625) and values.dtype == np.float32
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def test_a_model_in_training_mode_is_read_without_dropout_and_left_as_it_was(images):
    model = network("cnn").train()
    first, second = hidden_values(model, images[:20]), hidden_values(model, images[:20])
    np.testing.assert_array_equal(first, second)  # dropout would make them differ
    np.testing.assert_array_equal(first, hidden_values(network("cnn"), images[:20]))
    assert model.training  # a shared model is never switched


def test_softmax_regression_is_refused_with_a_sentence(images):
    with pytest.raises(ValueError) as refused:
        hidden_projection(network("softmax"), images, "pca")
    words = str(refused.value)
    assert words.startswith("Softmax regression has no hidden layer") and words.endswith(".")
    assert "Traceback" not in words and "/" not in words


def test_an_unknown_method_is_refused(images):
    with pytest.raises(ValueError, match="Unknown projection"):
        hidden_projection(network(), images, "umap-of-my-own")


# ---------------------------------------------------------------- maps


@pytest.mark.parametrize("method", list(PROJECTIONS))
def test_a_map_has_one_point_per_image_and_is_the_same_for_a_seed(images, method):
    model = network()
    reports = []
    first = hidden_projection(model, images, method, progress=lambda fraction, words: reports.append(fraction))
    again = hidden_projection(model, images, method)
    assert first.shape == (len(images), 2) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    assert first.std(axis=0).min() > 0  # not collapsed onto a line or a point
    assert reports and reports == sorted(reports) and 0 <= reports[0] and reports[-1] == 1.0


def test_the_pca_map_is_the_two_main_directions_of_the_hidden_values(images):
    model = network()
    hidden = hidden_values(model, images).astype(np.float64)
    centred = hidden - hidden.mean(axis=0)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)  # independent of scikit-learn
    expected = centred @ directions[:2].T
    points = hidden_projection(model, images, "pca")
    for axis in range(2):  # a direction's sign is arbitrary
        sign = np.sign(np.dot(points[:, axis], expected[:, axis]))
        np.testing.assert_allclose(sign * points[:, axis], expected[:, axis], rtol=1e-3, atol=1e-3)


def test_neighbour_accuracy_is_one_for_apart_classes_and_chance_for_mixed_ones():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    apart = rng.normal(size=(200, 2)) * 0.1 + np.stack([labels * 10.0, np.zeros(200)], axis=1)
    assert neighbour_accuracy(apart, labels) == 1.0
    mixed = rng.normal(size=(200, 2))
    assert neighbour_accuracy(mixed, labels) < 0.45  # chance is 0.25


# ---------------------------------------------------------------- alignment


@pytest.mark.parametrize("flip", [False, True])
def test_alignment_recovers_a_known_turn_scale_and_shift(flip):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(300, 2))
    angle = 1.1
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    if flip:  # a projection's axes have no sign: a mirrored map must come back too
        rotation = rotation @ np.diag([1.0, -1.0])
    target = 2.5 * points @ rotation + np.array([4.0, -7.0])
    scale, found, shift = alignment(points, target)
    assert scale == pytest.approx(2.5, rel=1e-5)
    np.testing.assert_allclose(found, rotation, atol=1e-5)
    np.testing.assert_allclose(shift, [4.0, -7.0], atol=1e-4)


def test_an_aligned_map_shows_and_places_in_the_target_frame(images):
    model = network()
    fitted = fit_projection(model, images, "pca")
    angle = 0.7
    turn = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    target = 3.0 * fitted.points @ turn + 5.0
    aligned = fitted.aligned_to(target)
    np.testing.assert_allclose(aligned.points, target, atol=1e-3)
    np.testing.assert_allclose(aligned.place(model, images[:5]), target[:5], atol=1e-3)  # the star follows too
    np.testing.assert_array_equal(fitted.points, fit_projection(model, images, "pca").points)  # not changed


def test_maps_of_other_images_cannot_be_aligned():
    with pytest.raises(ValueError, match="same images"):
        alignment(np.zeros((5, 2)), np.zeros((6, 2)))


# ---------------------------------------------------------------- kept on disk


def _refit(*_args, **_kwargs):
    raise AssertionError("fitted again, though a good kept map was there")


@pytest.mark.parametrize("method", list(PROJECTIONS))
def test_a_kept_map_round_trips_and_is_not_fitted_again(tmp_path, images, method, monkeypatch):
    model = network()
    fitted = cached_projection(model, images, method, folder=tmp_path, shipped=None)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    monkeypatch.setattr(projection, "fit_projection", _refit)
    kept = cached_projection(model, images, method, folder=tmp_path, shipped=None)
    np.testing.assert_array_equal(kept.points, fitted.points)
    new = images[:3] * 0.5  # the kept map places new images where the fitted one does
    np.testing.assert_allclose(kept.place(model, new), fitted.place(model, new), atol=0.05)


def test_a_corrupt_or_pickled_kept_file_is_fitted_again_never_unpickled(tmp_path, images, monkeypatch):
    model = network()
    key = projection_key(model, images, "pca")
    path = projection_file(tmp_path, key)
    fitted = cached_projection(model, images, "pca", folder=tmp_path, shipped=None)
    calls = []
    real_fit = projection.fit_projection
    monkeypatch.setattr(projection, "fit_projection", lambda *a, **k: calls.append(1) or real_fit(*a, **k))
    for damage in (b"not a zip at all", path.read_bytes()[:200]):  # garbage, and a truncated file
        path.write_bytes(damage)
        assert read_projection(path, key) is None
        again = cached_projection(model, images, "pca", folder=tmp_path, shipped=None)
        np.testing.assert_array_equal(again.points, fitted.points)
        assert read_projection(path, key) is not None  # written back whole
    assert len(calls) == 2
    # An object array would need pickle to load: np.load(allow_pickle=False) refuses it, so it is fitted again.
    np.savez(path, key=np.array(json.dumps(key, sort_keys=True)), points=np.array([{"evil": 1}], dtype=object),
             mean=fitted.mean, components=fitted.components)
    assert read_projection(path, key) is None


def test_a_kept_map_for_other_weights_images_or_shapes_is_not_used(tmp_path, images):
    model = network()
    key = projection_key(model, images, "pca")
    fitted = fit_projection(model, images, "pca")
    path = tmp_path / "map.npz"
    save_projection(path, fitted, key)
    assert read_projection(path, key) is not None
    assert read_projection(path, projection_key(network(seed=1), images, "pca")) is None  # other weights
    assert read_projection(path, projection_key(model, images[:-1], "pca")) is None  # other images
    wrong = Projection("pca", fitted.raw_points[:-1], fitted.mean, fitted.components, None)
    save_projection(path, wrong, key)  # a file whose points do not fit its own key
    assert read_projection(path, key) is None


def test_kept_file_names_come_only_from_a_digest_and_a_known_method(tmp_path, images):
    key = projection_key(network(), images, "tsne")
    assert projection_file(tmp_path, key).parent == tmp_path
    for forged in ({**key, "weights_sha256": "../../etc/passwd"}, {**key, "method": "../x"}):
        with pytest.raises(ValueError):
            projection_file(tmp_path, forged)


def test_the_cache_folder_keeps_only_the_newest_maps(tmp_path, monkeypatch, images):
    monkeypatch.setattr(projection, "MAX_CACHE_FILES", 3)
    for seed in range(5):
        cached_projection(network(seed=seed), images[:30], "pca", folder=tmp_path, shipped=None)
    assert len(list(tmp_path.glob("*.npz"))) == 3


# ---------------------------------------------------------------- the chart


def test_map_points_are_rounded_and_name_their_class_image_and_the_star():
    rows = map_points(np.array([[1.23456, -0.004], [2.0, 3.0]]), np.array([3, 0]), ["zero", "one", "two", "three"],
                      star=np.array([0.514, 9.0]), star_words="a drawing")
    assert rows == [{"x": 1.23, "y": -0.0, "class": "three", "image": 0, "star": ""},
                    {"x": 2.0, "y": 3.0, "class": "zero", "image": 1, "star": ""},
                    {"x": 0.51, "y": 9.0, "class": "", "image": -1, "star": "a drawing"}]
    assert len(map_points(np.zeros((1, 2)), [0], ["zero"])) == 1  # no star asked for, none added


def test_the_map_extent_holds_every_point_with_a_margin():
    points = np.array([[0.0, -2.0], [10.0, 2.0], [4.0, 0.0]])
    (x_low, x_high), (y_low, y_high) = projection.map_extent(points)
    assert (x_low, x_high, y_low, y_high) == (-0.3, 10.3, -2.12, 2.12)
    (x_low, x_high), _ = projection.map_extent(np.array([[1.0, 1.0]]))  # one point: still a span, never empty
    assert x_low < 1.0 < x_high


@pytest.mark.parametrize("selection, expected", [
    ([{"image": 17}], 17), ([{"image": 17.0}], 17), ([{"image": 0}], 0),
    ([], None), (None, None), ({"image": 3}, None), ([{"image": 1}, {"image": 2}], None),
    ([{"image": 100}], None), ([{"image": -1}], None), ([{"image": 2.5}], None), ([{"image": "3"}], None),
    ([{"image": True}], None), ([{"image": float("nan")}], None), ([{"image": float("inf")}], None), (["3"], None)])
def test_a_clicked_point_is_checked_before_it_opens_an_image(selection, expected):
    assert picked_point(selection, 100) == expected


# ---------------------------------------------------------------- real MNIST


@pytest.fixture(scope="module")
def mnist_subset(real_mnist):
    """The first 2,000 test images (floats) and labels: enough to measure separation, quick to map."""
    return to_float(real_mnist.test_images[:2000]), real_mnist.test_labels[:2000].numpy()


@pytest.mark.mnist
@pytest.mark.parametrize("method", list(PROJECTIONS))
def test_the_trained_model_separates_the_classes_far_better_than_an_untrained_one(mnist_subset, method):
    from cnn.checkpoint import load_model
    images, labels = mnist_subset
    trained, _ = load_model()
    trained_accuracy = neighbour_accuracy(hidden_projection(trained, images, method), labels)
    untrained_accuracy = neighbour_accuracy(hidden_projection(network(), images, method), labels)
    # Measured on these 2,000: PCA 0.81 vs 0.32, t-SNE 0.99 vs 0.85. Random conv features already group digits a
    # little; the trained network's map makes less than half the untrained one's mistakes, with either method.
    assert trained_accuracy > untrained_accuracy + 0.05
    assert 1 - trained_accuracy < 0.5 * (1 - untrained_accuracy)
    assert trained_accuracy > (0.75 if method == "pca" else 0.95)


@pytest.mark.mnist
@pytest.mark.parametrize("method", list(PROJECTIONS))
def test_a_placed_training_image_lands_among_its_own_class(mnist_subset, real_mnist, method):
    from cnn.checkpoint import load_model
    images, labels = mnist_subset
    model, _ = load_model()
    fitted = fit_projection(model, images, method)
    train_images, train_labels = to_float(real_mnist.train_images[:300]), real_mnist.train_labels[:300].numpy()
    placed = fitted.place(model, train_images)  # images the map has never seen
    vote = KNeighborsClassifier(n_neighbors=5).fit(fitted.points, labels).predict(placed)
    agreement = float((vote == train_labels).mean())
    within = np.isfinite(placed).all() and (placed.min(axis=0) >= fitted.points.min(axis=0) - 1).all()
    assert within and agreement > (0.75 if method == "pca" else 0.95)


@pytest.mark.mnist
def test_the_shipped_maps_of_the_bundled_models_are_read_not_fitted(real_mnist, monkeypatch, tmp_path):
    from cnn.checkpoint import BUNDLED_MODEL, load_model
    monkeypatch.setattr(projection, "fit_projection", _refit)  # a stale or missing shipped map fails here
    images, labels = to_float(real_mnist.test_images), real_mnist.test_labels.numpy()
    final = {}
    for path in [BUNDLED_MODEL, *sorted(BUNDLED_MODEL.parent.glob("epoch-*.pt"))]:  # as the page asks: final first
        model, _ = load_model(path)
        for method in PROJECTIONS:
            start = final.get(method) if method == "tsne" else None  # an epoch's t-SNE starts from the final map
            kept = cached_projection(model, images, method, folder=tmp_path, start=start)
            assert kept.points.shape == (len(images), 2)
            final.setdefault(method, kept.points)
            if path == BUNDLED_MODEL:  # the map ships with what it shows: the classes apart
                assert neighbour_accuracy(kept.points, labels) > (0.8 if method == "pca" else 0.97)
            elif method == "tsne":  # aligned frames: each digit's cloud stays near where the final map has it
                aligned = kept.aligned_to(final["tsne"]).points
                spread = np.linalg.norm(final["tsne"] - final["tsne"].mean(axis=0), axis=1).mean()
                for digit in range(10):
                    shift = np.linalg.norm(aligned[labels == digit].mean(axis=0)
                                           - final["tsne"][labels == digit].mean(axis=0))
                    assert shift < 0.5 * spread, (path.name, digit, shift / spread)
    assert not list(tmp_path.iterdir())  # nothing had to be fitted or kept


# ---------------------------------------------------------------- the page (AppTest)

from tests.test_app_pages import app, save_run  # noqa: E402,F401 - the app fixture and a run saver, shared


def open_map_view(app, run: str | None = None, method: str = "pca"):
    """Inside the network on the hidden layer's map (the view and the method chosen as a user would leave them)."""
    if run is not None:
        app.session_state["active_run"] = run
    app.session_state["kept.inside_view"] = "map"
    app.session_state["kept.map_method"] = method
    return app.switch_page("pages/inside.py").run()


@pytest.mark.mnist
def test_the_map_view_refuses_softmax_regression_with_its_sentence(app, tmp_path):
    from cnn.config import SOFTMAX
    save_run(tmp_path / "runs", "soft", config=SOFTMAX)
    open_map_view(app, "soft")
    assert not app.exception
    assert any(info.value.startswith("Softmax regression has no hidden layer") for info in app.info)


@pytest.mark.mnist
def test_a_new_runs_map_is_fitted_once_kept_on_disk_and_read_back(app, tmp_path, monkeypatch):
    model = save_run(tmp_path / "runs", "mlp-run", config=ARTICLE.replace(architecture="mlp"))
    open_map_view(app, "mlp-run")
    assert not app.exception
    assert any(text.value.startswith("Class separation for this model: for ") for text in app.markdown)
    assert any("placed by its FC 625 values" in caption.value for caption in app.caption)
    kept_files = list((tmp_path / "runs" / ".projections").glob("*.pca.npz"))
    assert [path.name for path in kept_files] == [f"{projection.state_digest(model.state_dict())}.pca.npz"]
    from pages.inside_map import remembered_map
    remembered_map.clear()  # as after a server restart: only the disk remembers
    monkeypatch.setattr(projection, "fit_projection", _refit)
    app.run()
    assert not app.exception
    assert any(text.value.startswith("Class separation for this model: for ") for text in app.markdown)


def test_a_map_read_again_is_kept_while_maps_written_since_are_dropped(tmp_path, monkeypatch, images):
    """The cache drops the least recently used map, not the oldest written: a map the class keeps opening stays while
    a student cycles through other checkpoints (each refit of a t-SNE map is seconds of both cores)."""
    monkeypatch.setattr(projection, "MAX_CACHE_FILES", 3)
    popular, others = network(seed=0), [network(seed=seed) for seed in range(1, 5)]
    cached_projection(popular, images[:30], "pca", folder=tmp_path, shipped=None)
    popular_file = projection_file(tmp_path, projection_key(popular, images[:30], "pca"))
    past = popular_file.stat().st_mtime - 100
    os.utime(popular_file, (past, past))  # written long ago
    for other in others:
        cached_projection(other, images[:30], "pca", folder=tmp_path, shipped=None)
        assert kept_projection(popular, images[:30], "pca", folder=tmp_path, shipped=None) is not None  # read again
    assert popular_file.exists() and len(list(tmp_path.glob("*.npz"))) == 3


def test_a_maps_lock_is_released_when_a_run_is_stopped_as_its_wait_ends(monkeypatch):
    """As the unit lock (tests/test_optvis.py): a session waiting for another's t-SNE fit is stopped by Streamlit in
    the spinner's closing call, just after taking the map's lock; the lock must be free again, or that map would
    never be drawn for anyone."""
    import contextlib
    import threading

    import pages.inside_map as inside_map

    lock = threading.Lock()
    monkeypatch.setattr(inside_map, "fitting_lock", lambda version, method: lock)

    def not_kept(*args, **kwargs):
        raise inside_map.NotKept

    monkeypatch.setattr(inside_map, "remembered_map", not_kept)

    class Stopped(Exception):
        """Stands for Streamlit's StopException / RerunException, raised by an st call."""

    @contextlib.contextmanager
    def spinner(text):
        lock.release()  # the other session's fit is done while this one waits
        yield
        raise Stopped

    monkeypatch.setattr(inside_map.st, "spinner", spinner)
    lock.acquire()  # another session is fitting
    with pytest.raises(Stopped):
        inside_map.fitted_map("v", "tsne", "mnist", None, None, "this model's", None)
    assert lock.acquire(blocking=False), "the lock was left held"
    lock.release()
