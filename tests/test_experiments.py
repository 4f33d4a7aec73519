"""cnn.experiments: the checks on what a caller passes, the eval forward that leaves a shared model alone, and the
quick (bfloat16 where native) accuracy the experiments compare networks by, against cnn.train.evaluate (float32)."""
import threading

import pytest
import torch

from cnn.experiments import check_images, eval_logits, quick_accuracy, quick_predictions
from cnn.model import ConvNet, build_model
from cnn.config import ARTICLE
from cnn.train import evaluate
from tests.test_features import page_app  # noqa: F401 - the fixture: the app with its runs under tmp_path


def synthetic_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 28, 28) uint8 SYNTHETIC images: random strokes on black."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    for i in range(n):
        row, col = torch.randint(4, 20, (2,), generator=generator).tolist()
        images[i, row:row + 6, col:col + 2] = 255
        images[i, row:row + 2, col:col + 8] = 200
    return images


@pytest.mark.parametrize("network", ["cnn", "softmax", "mlp", "lenet", "one-conv"])
def test_eval_logits_is_the_eval_forward_and_leaves_the_models_mode_alone(network):
    torch.manual_seed(0)
    model = build_model(ARTICLE.replace(architecture=network)).train()  # a model left in train mode by someone
    x = synthetic_images(8).unsqueeze(1).float() / 255
    got = eval_logits(model, x)
    assert model.training and all(module.training for module in model.modules())
    reference = model.eval()(x)  # the module's own eval forward, dropout off
    assert torch.allclose(got, reference, atol=1e-6)


def test_eval_logits_gives_gradients_with_respect_to_the_image_only():
    model = ConvNet().eval()
    x = (synthetic_images(2).unsqueeze(1).float() / 255).requires_grad_(True)
    (grad,) = torch.autograd.grad(eval_logits(model, x)[:, 3].sum(), x)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in model.parameters())


@pytest.mark.parametrize("network", ["cnn", "softmax", "lenet"])
def test_quick_accuracy_agrees_with_evaluate_on_a_synthetic_network(network):
    torch.manual_seed(1)
    model = build_model(ARTICLE.replace(architecture=network, init="kaiming")).eval()
    images = synthetic_images(300, seed=2)
    labels = quick_predictions(model, images.unsqueeze(1).float() / 255)  # nearly every image "right": a hard case
    labels[::3] = (labels[::3] + 1) % 10  # a third of them wrong for sure
    reference = evaluate(model, images, labels)["accuracy"]
    quick = quick_accuracy(model, images.unsqueeze(1).float() / 255, labels)
    assert abs(quick - reference) <= 3 / 300  # bf16 may flip an image that sits on a decision boundary


@pytest.mark.mnist
def test_quick_accuracy_of_the_bundled_model_is_evaluates_on_the_test_set(real_mnist):
    from cnn.checkpoint import load_model
    from cnn.data import to_float

    model, _card = load_model()
    reference = evaluate(model, real_mnist.test_images, real_mnist.test_labels)
    quick = quick_predictions(model, to_float(real_mnist.test_images))
    differ = int((quick != reference["predictions"]).sum())
    assert differ <= 5, f"{differ} of 10,000 predictions differ from float32's"
    assert abs(quick_accuracy(model, to_float(real_mnist.test_images), real_mnist.test_labels)
               - reference["accuracy"]) <= 5 / 10_000


def test_quick_accuracy_from_several_threads_leaves_the_shared_model_unchanged():
    torch.manual_seed(0)
    model = ConvNet().eval()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    images = synthetic_images(64).unsqueeze(1).float() / 255
    labels = torch.arange(64) % 10
    results, errors = [], []

    def measure():
        try:
            results.append(quick_accuracy(model, images, labels))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=measure) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert not model.training


@pytest.mark.parametrize("images, labels, says", [
    (torch.rand(4, 28, 28), None, "(N, 1, 28, 28)"),
    (torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8), None, "floats in [0, 1]"),
    (torch.full((4, 1, 28, 28), 2.0), None, "values in [0, 1]"),
    (torch.full((4, 1, 28, 28), float("nan")), None, "values in [0, 1]"),
    (torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2]), "(4,) whole numbers"),
    (torch.rand(4, 1, 28, 28), torch.tensor([0.0, 1, 2, 3]), "(4,) whole numbers"),
    (torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 10]), "classes 0 to 9"),
    ("pixels", None, "(N, 1, 28, 28)"),
])
def test_check_images_refuses_what_is_not_images_in_our_words(images, labels, says):
    with pytest.raises(ValueError) as caught:
        check_images(ConvNet(), images, labels)
    assert says in str(caught.value)


def test_check_images_passes_good_images_and_labels_through():
    images, labels = check_images(ConvNet(), torch.rand(3, 1, 28, 28), torch.tensor([0, 9, 4]))
    assert images.dtype == torch.float32 and labels.dtype == torch.int64 and labels.tolist() == [0, 9, 4]


@pytest.mark.mnist
def test_the_page_says_which_model_the_experiments_work_on(page_app):
    app, _runs = page_app
    app.switch_page("pages/experiments.py").run()
    assert not app.exception
    captions = [caption.value for caption in app.caption]
    assert "Your experiments work on a copy of the article's CNN on MNIST (the bundled model)." in captions, captions
    app.select_slider[0].set_value(1).run()  # time travel: the words say which epoch's weights
    assert not app.exception
    assert any(caption.value.endswith("(the bundled model), as it was after epoch 1.") for caption in app.caption)


@pytest.mark.mnist
@pytest.mark.parametrize("kept_view", [None, "../surgery", ["surgery"], "fool "])
def test_the_page_runs_no_experiment_until_one_is_chosen(page_app, monkeypatch, kept_view):
    """A class opening Experiments measures nothing until an experiment is chosen (each costs seconds of the
    server's cores); a kept or forged choice the page does not offer counts as none. (The chosen experiments'
    own AppTests are in test_surgery, test_transforms and test_adversarial.)"""
    import pages.experiments_surgery as surgery

    measured = []
    monkeypatch.setattr(surgery, "quick_accuracy", lambda *args: measured.append(args) or 0.5)
    app, _runs = page_app
    if kept_view is not None:
        app.session_state["kept.experiment_view"] = kept_view
    app.switch_page("pages/experiments.py").run()
    assert not app.exception and measured == []
    assert any(info.value.startswith("Choose an experiment") for info in app.info)
    assert not [h for h in app.subheader if h.value in ("Filter surgery", "Fool the network")]
