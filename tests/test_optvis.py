"""cnn.optvis: what a unit wants to see. Pictures, measures and patches are checked against independent references:
forward_with_activations for a unit's value, a brute-force ranking for the top patches, and input pixels changed
outside a patch's box for its receptive field. Synthetic images and freshly built networks unless a test says why
it needs the bundled model and real MNIST."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cnn.config import FAST
from cnn.data import to_float
from cnn.model import NETWORKS, build_model
from cnn.optvis import (Recipe, beating_fraction, check_units, layer_maxima, layer_of, tiles_grid, top_patches,
                        unit_activation, visualisable_layers, visualize_unit)

QUICK = Recipe(steps=48)  # the loop's behaviour, not its quality: a few steps are enough


def built(network: str = "cnn", dataset: str = "mnist", seed: int = 0):
    """A freshly built network with He-initialised weights (FAST's init), in eval mode, as load_model returns one."""
    model = build_model(FAST.replace(architecture=network, dataset=dataset), generator=torch.Generator().manual_seed(seed))
    return model.eval()


def synthetic_images(count: int, seed: int = 0) -> torch.Tensor:
    """SYNTHETIC (count, 1, 28, 28) float in [0, 1]: dark noise with one bright bar each, at a random place and angle."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 28, 28, generator=generator) * 0.2
    rows = torch.randint(0, 24, (count,), generator=generator)
    cols = torch.randint(0, 24, (count,), generator=generator)
    for i in range(count):
        r, c = int(rows[i]), int(cols[i])
        if i % 2:
            images[i, 0, r:r + 4, c:c + 2] = 1.0
        else:
            images[i, 0, r:r + 2, c:c + 4] = 1.0
    return images


def first_stage(model, kind: str) -> str:
    return next(stage.name for stage in model.stages if stage.kind == kind)


@pytest.mark.parametrize("network", list(NETWORKS))
def test_a_picture_is_a_side_by_side_image_in_0_1_and_the_same_for_a_seed(network):
    model = built(network)
    stage = first_stage(model, "conv") if any(s.kind == "conv" for s in model.stages) else "logits"
    first = visualize_unit(model, stage, 1, seed=3, recipe=QUICK)
    again = visualize_unit(model, stage, 1, seed=3, recipe=QUICK)
    other = visualize_unit(model, stage, 1, seed=4, recipe=QUICK)
    assert first.shape == (28, 28) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert np.array_equal(first * 255, np.round(first * 255))  # the dataset's 256 grey levels
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_picture_excites_its_unit_more_than_its_start_and_more_than_another_units_picture():
    model = built()
    recipe = Recipe(steps=96)
    start = torch.sigmoid(recipe.start + 0.1 * torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    own = torch.from_numpy(visualize_unit(model, "logits", 3, recipe=recipe))[None, None]
    other = torch.from_numpy(visualize_unit(model, "logits", 5, recipe=recipe))[None, None]
    assert unit_activation(model, own, "logits", 3)[0] > unit_activation(model, start, "logits", 3)[0]
    assert unit_activation(model, own, "logits", 3)[0] > unit_activation(model, other, "logits", 3)[0]


@pytest.mark.parametrize("training", [False, True])
def test_visualising_leaves_the_shared_model_as_it_was(training):
    model = built("cnn")
    model.train(training)
    before = copy.deepcopy(model.state_dict())
    wants_grad = [p.requires_grad for p in model.parameters()]
    visualize_unit(model, "conv2", 5, recipe=QUICK)
    visualize_unit(model, "logits", 2, recipe=QUICK)
    assert model.training is training
    assert all(module.training is training for module in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == wants_grad
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("network,stage,recorded,channel", [
    ("cnn", "conv2", "conv2", 7), ("cnn", "relu1", "relu1", 3), ("cnn", "pool3", "pool3", 100),
    ("cnn", "fc", "fc", 17), ("cnn", "relu4", "fc", 17), ("cnn", "logits", "logits", 9),
    ("lenet", "conv2", "conv2", 15), ("lenet", "fc2", "fc2", 80), ("softmax", "logits", "logits", 0),
    ("one-conv", "pool1", "pool1", 31),
])
def test_unit_activation_is_the_maps_largest_value_or_the_units_value_in_an_independent_forward(
        network, stage, recorded, channel):
    model = built(network)
    images = synthetic_images(40)
    with torch.no_grad():
        acts = model.forward_with_activations(images)[recorded][:, channel]
    expected = acts.flatten(1).max(dim=1).values if acts.dim() > 1 else acts
    assert np.allclose(unit_activation(model, images, stage, channel), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_unknown_layers_and_units_are_refused_with_a_sentence():
    model = built("lenet")
    with pytest.raises(ValueError, match="no layer called 'conv3'"):
        visualize_unit(model, "conv3", 0, recipe=QUICK)
    with pytest.raises(ValueError, match="has 6"):
        visualize_unit(model, "conv1", 6, recipe=QUICK)
    with pytest.raises(ValueError, match="has 10"):
        top_patches(model, synthetic_images(3), "logits", -1)


def brute_force_ranking(model, images, recorded: str, channel: int):
    """[(value, index, row, col)] of every image's strongest position, strongest first, from forward_with_activations
    and plain Python loops."""
    with torch.no_grad():
        maps = model.forward_with_activations(images)[recorded][:, channel].numpy()
    best = []
    for index, values in enumerate(maps):
        value, row, col = max((values[r, c], r, c) for r in range(values.shape[0]) for c in range(values.shape[1]))
        best.append((float(value), index, row, col))
    return sorted(best, key=lambda item: (-item[0], item[1]))


@pytest.mark.parametrize("stage,channel", [("conv1", 4), ("pool2", 9), ("conv3", 20)])
def test_top_patches_are_the_brute_force_ranking_cropped_to_what_the_unit_sees(stage, channel):
    model = built("cnn", seed=1)
    images = synthetic_images(1100)  # more than one batch of cnn.optvis.BATCH
    patches = top_patches(model, images, stage, channel, k=9)
    expected = brute_force_ranking(model, images, stage, channel)[:9]
    assert [p.index for p in patches] == [index for _, index, _, _ in expected]
    assert len({p.index for p in patches}) == 9
    assert np.allclose([p.value for p in patches], [value for value, *_ in expected], rtol=1e-5, atol=1e-6)
    for p in patches:
        top, left, bottom, right = p.box
        assert np.array_equal(p.patch, images[p.index, 0, top:bottom, left:right].numpy())
        # What the unit sees is inside the box: new pixels everywhere outside it leave the unit's value as it was,
        # new pixels inside it change it.
        outside = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(p.index))
        outside[..., top:bottom, left:right] = images[p.index, :, top:bottom, left:right]
        inside = images[p.index:p.index + 1].clone()
        inside[..., top:bottom, left:right] = 1.0 - inside[..., top:bottom, left:right]
        with torch.no_grad():
            acts = {name: model.forward_with_activations(x)[stage][0, channel, p.row, p.col].item()
                    for name, x in (("outside", outside), ("inside", inside))}
        assert acts["outside"] == pytest.approx(p.value, rel=1e-5, abs=1e-6)
        assert acts["inside"] != pytest.approx(p.value, rel=1e-3, abs=1e-4)


def test_one_pass_over_a_layer_gives_every_units_strongest_images_as_the_brute_force_ranking():
    """layer_maxima once, then top_patches for several units of the layer without a forward pass: the same
    ranking and positions as the brute force over forward_with_activations (the page keeps one pass per layer, so a
    student asking for unit after unit costs a sort each, not a pass over 10,000 images)."""
    model = built("cnn", seed=2)
    images = synthetic_images(1100)
    maxima = layer_maxima(model, images, "conv2")
    assert maxima.values.shape == (1100, 64) and maxima.positions.shape == (1100, 64) and maxima.width == 14
    for channel in (0, 17, 63):
        patches = top_patches(model, images, "conv2", channel, k=9, maxima=maxima)
        expected = brute_force_ranking(model, images, "conv2", channel)[:9]
        assert [(p.index, p.row, p.col) for p in patches] == [(i, r, c) for _, i, r, c in expected]
        assert np.allclose([p.value for p in patches], [value for value, *_ in expected], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no unit 64"):
        top_patches(model, images, "conv2", 64, maxima=maxima)


def test_a_dense_unit_or_a_logit_shows_whole_images_ranked_by_their_value():
    model = built("mlp")
    images = synthetic_images(200)
    with torch.no_grad():
        logits = model.forward_with_activations(images)["logits"][:, 4].numpy()
    patches = top_patches(model, images, "logits", 4, k=5)
    assert [p.index for p in patches] == list(np.argsort(-logits, kind="stable")[:5])
    assert all(p.row is None and p.col is None and p.box == (0, 0, 28, 28) for p in patches)
    assert all(np.array_equal(p.patch, images[p.index, 0].numpy()) for p in patches)


@pytest.mark.mnist
def test_on_the_bundled_model_the_pictures_beat_the_best_of_1000_test_images_for_90_percent_of_units(real_mnist):
    # Real MNIST and the bundled model: the acceptance is about what the trained network responds to.
    import cnn

    model, _card = cnn.load_model()
    images = to_float(real_mnist.test_images[:1000])
    units = ([("logits", digit) for digit in range(10)]
             + [(stage, channel) for stage, channels in (("conv1", 32), ("conv2", 64), ("conv3", 128))
                for channel in range(0, channels, channels // 4)])
    checks = check_units(model, images, units)
    assert len(checks) == 22
    assert beating_fraction(checks) >= 0.9, [c for c in checks if not c.beats]
    # The measure is the one an independent forward gives for the best test image.
    best = checks[0]
    with torch.no_grad():
        logit = model.forward_with_activations(images[best.best_index:best.best_index + 1])["logits"][0, 0].item()
    assert best.best_image == pytest.approx(logit, rel=1e-5)


def test_the_acceptance_check_compares_each_picture_with_the_best_image_found_by_brute_force():
    model = built("cnn", seed=2)
    images = synthetic_images(1100)
    checks = check_units(model, images, [("conv2", 3), ("logits", 7)], recipe=QUICK)
    for check in checks:
        values = unit_activation(model, images, check.stage, check.channel)
        assert check.best_image == pytest.approx(float(values.max()), rel=1e-5, abs=1e-6)
        assert values[check.best_index] == pytest.approx(check.best_image, rel=1e-5, abs=1e-6)
        picture = torch.from_numpy(visualize_unit(model, check.stage, check.channel, recipe=QUICK))[None, None]
        assert check.optimised == pytest.approx(float(unit_activation(model, picture, check.stage, check.channel)[0]))
    assert beating_fraction(checks) == sum(c.optimised >= c.best_image for c in checks) / 2


@pytest.mark.parametrize("network,expected", [
    ("cnn", {"conv1": 32, "conv2": 64, "conv3": 128, "fc": 625, "logits": 10}),
    ("lenet", {"conv1": 6, "conv2": 16, "fc1": 120, "fc2": 84, "logits": 10}),
    ("softmax", {"logits": 10}), ("mlp", {"fc": 625, "logits": 10}),
])
def test_the_layers_offered_are_read_from_the_stages_with_their_unit_counts(network, expected):
    model = built(network)
    layers = visualisable_layers(model)
    assert layers == expected
    with torch.no_grad():  # each count is the width of what an independent forward records
        acts = model.forward_with_activations(synthetic_images(2))
    assert all(acts[name].shape[1] == count for name, count in layers.items())
    # Every offered layer can be visualised and ranked.
    for name in layers:
        assert unit_activation(model, synthetic_images(2), name, layers[name] - 1).shape == (2,)


def test_a_unit_chosen_on_another_view_opens_its_layer_when_this_network_has_it():
    model = built("cnn")
    assert [layer_of(model, name) for name in ("conv2", "relu2", "pool2", "fc", "logits")] == [
        "conv2", "conv2", "conv2", "fc", "logits"]
    assert layer_of(built("lenet"), "conv3") is None and layer_of(built("softmax"), "pool1") is None
    assert layer_of(model, "<script>") is None


def test_tiles_of_any_size_are_centred_on_grey_squares_in_order_with_their_labels():
    small, large = np.full((2, 3), 1.0, dtype=np.float32), np.zeros((4, 4), dtype=np.float32)
    grid = tiles_grid([small, large], ["a", "b"], columns=2, cell=8)  # 4 px tiles enlarged twice: 8 px
    assert grid.dtype == np.uint8 and grid.shape[2] == 3
    first, second = grid[2:10, 2:10], grid[2:10, 12:20]  # make_grid's 2 px white gaps around each tile
    assert (first[2:6, 0:6] == 255).all() and (first[0:2] == 128).all() and (first[6:8] == 128).all()
    assert (first[:, 6:8] == 128).all()  # a 2x3 patch centred in 4x4: one grey column right of it (x2)
    assert (second == 0).all()


def test_the_servers_unit_lock_is_released_when_a_run_is_stopped_as_its_wait_ends(monkeypatch):
    """A session waits for another's picture behind a spinner; Streamlit stops its run (a newer message, a closed
    tab) in the spinner's closing call, just after the lock was taken: the lock must be free again, or every later
    unit of the class waits forever (a fresh-clone run hung three attack tests that way)."""
    import contextlib
    import threading

    import pages.inside_wants as wants

    lock = threading.Lock()
    monkeypatch.setattr(wants, "unit_work_lock", lambda: lock)

    class Stopped(Exception):
        """Stands for Streamlit's StopException / RerunException, raised by an st call."""

    @contextlib.contextmanager
    def spinner(text):
        lock.release()  # the other session's picture is done while this one waits
        yield
        raise Stopped  # the spinner's closing call is where Streamlit stops the run

    monkeypatch.setattr(wants.st, "spinner", spinner)
    lock.acquire()  # another session is drawing
    with pytest.raises(Stopped):
        with wants.taking_turns("unit 3 of conv2"):
            pass
    assert lock.acquire(blocking=False), "the lock was left held"
    lock.release()
