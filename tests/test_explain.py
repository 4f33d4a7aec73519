"""cnn.explain: answers in words, and attributions checked against captum's own Grad-CAM."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam

from cnn.explain import (ATTRIBUTION_METHODS, EMPTY_BELOW, always_an_answer, attribution, attribution_methods,
                         class_phrase, describe, explain, grad_cam, is_empty, overlay, predict, with_article)
from cnn.model import ConvNet, SoftmaxRegression


def test_describe_sure_and_unsure():
    sure = describe(np.array([0.01] * 9 + [0.91]))
    assert sure["digit"] == 9 and sure["sure"] and sure["text"].startswith("It's a 9")
    unsure = np.zeros(10)
    unsure[4], unsure[9] = 0.5, 0.45
    answer = describe(unsure)
    assert not answer["sure"] and answer["text"].startswith("Not sure: 4 or 9?")


def captum_grad_cam(model, x, target, layer, rectified=True):
    """captum's Grad-CAM on layer before it is summed over maps (weight x map), the maps' negative values cut
    (rectified: the ReLU's output, as grad_cam weighs them) or not; summed, ReLU'd, upsampled to 28x28, scaled to 1.
    Also returns the signed sum before its ReLU."""
    per_map = LayerGradCam(model, layer).attribute(x, target=target, attr_dim_summation=False).detach()
    if rectified:  # weight x map is 0 where the map is <= 0; where it is > 0, the map is its own ReLU
        per_map = per_map * (_layer_output(model, layer, x) > 0)
    signed = per_map.sum(1, keepdim=True)
    cam = LayerAttribution.interpolate(F.relu(signed), (28, 28), interpolate_mode="bilinear")[0, 0]
    return (cam / cam.max()).numpy() if float(cam.max()) > 0 else cam.numpy(), signed


def _layer_output(model, layer, x):
    """What layer gives in model's forward for x (its maps before the ReLU), caught with a forward hook."""
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(output))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen[0]


def test_grad_cam_weighs_the_rectified_maps_with_captums_weights():
    torch.manual_seed(0)
    model = ConvNet(init_std=0.1).eval()
    x = torch.rand(1, 1, 28, 28)
    target = int(predict(model, x).argmax())
    mine = grad_cam(model, x, target)
    reference, _ = captum_grad_cam(model, x, target, model.conv3)
    assert not is_empty(mine) and np.allclose(mine, reference, atol=1e-5)
    before_relu, _ = captum_grad_cam(model, x, target, model.conv3, rectified=False)  # the maps before the ReLU
    assert not np.allclose(mine, before_relu, atol=1e-2)  # a different picture: the ReLU is not a no-op here


@pytest.mark.parametrize("method", list(ATTRIBUTION_METHODS))
def test_every_method_gives_a_28x28_map(method):
    torch.manual_seed(0)
    model = ConvNet(init_std=0.1).eval()
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 5:23, 12:16] = 1.0
    heat = attribution(model, x, 1, method)
    assert heat.shape == (28, 28) and np.isfinite(heat).all() and np.abs(heat).max() > 0
    assert not any(p.grad is not None for p in model.parameters())  # a shared model is left untouched


def test_the_softmax_model_is_offered_no_grad_cam():
    """The baseline has no conv layer: Grad-CAM is not listed, and asking for it is refused, not swapped silently."""
    softmax = SoftmaxRegression(init_std=0.1).eval()
    assert attribution_methods(softmax) == ["integrated_gradients", "occlusion"]
    # The first is the page's default: Integrated Gradients, which shows something for every drawing.
    assert attribution_methods(ConvNet().eval()) == ["integrated_gradients", "grad_cam", "occlusion"]
    with pytest.raises(ValueError, match="integrated_gradients, occlusion"):
        attribution(softmax, torch.rand(1, 1, 28, 28), 2, "grad_cam")
    shown = explain(softmax, torch.rand(1, 1, 28, 28), 8, "integrated_gradients")
    assert shown["caption"].startswith("Integrated Gradients for an 8: ") and shown["note"] is None


def test_grad_cam_is_empty_exactly_when_captum_finds_almost_nothing_positive():
    """Against captum's Grad-CAM (on the rectified maps) before its ReLU: where its positive peak is under EMPTY_BELOW
    of its largest value (all negative: nothing speaks for the digit), the map is reported empty; elsewhere drawn."""
    torch.manual_seed(0)
    model = ConvNet(init_std=0.1).eval()
    generator = torch.Generator().manual_seed(1)
    verdicts = set()
    for _ in range(3):
        x = torch.rand(1, 1, 28, 28, generator=generator)
        for target in range(10):
            _, signed = captum_grad_cam(model, x, target, model.conv3)
            expected_empty = float(signed.max()) <= EMPTY_BELOW * float(signed.abs().max())
            heat = grad_cam(model, x, target)
            assert is_empty(heat) == expected_empty, target
            assert heat.shape == (28, 28) and (expected_empty or heat.max() == pytest.approx(1.0))
            verdicts.add(expected_empty)
    assert verdicts == {True, False}  # both cases were met


def test_an_empty_map_is_said_in_words_with_a_method_to_try():
    model = ConvNet(init_std=0.1).eval()
    blank = torch.zeros(1, 1, 28, 28)  # no biases: every map of a blank image is 0, so Grad-CAM has nothing
    assert np.abs(grad_cam(model, blank, 8)).max() == 0
    shown = explain(model, blank, 8, "grad_cam")
    assert shown["empty"].startswith("Grad-CAM finds nothing to show for this image")
    assert "Try Integrated Gradients" in shown["empty"] and "an 8" in shown["empty"]
    assert "7x7" in shown["note"]  # one line on why it can sit on the background: conv3's coarse cells
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 5:23, 12:16] = 1.0
    drawn = explain(model, x, 1, "integrated_gradients")
    assert drawn["empty"] is None and drawn["caption"].startswith("Integrated Gradients for a 1: ")


def test_digits_get_their_article():
    assert [with_article(d) for d in range(10)] == ["a 0", "a 1", "a 2", "a 3", "a 4", "a 5", "a 6", "a 7", "an 8",
                                                    "a 9"]
    assert describe(np.array([0.01] * 8 + [0.91, 0.0]))["text"].startswith("It's an 8 (91% sure)")


def test_predict_and_overlay():
    probabilities = predict(ConvNet().eval(), torch.rand(1, 1, 28, 28))
    assert probabilities.shape == (10,) and probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    picture = overlay(np.zeros((28, 28)), np.eye(28) - np.eye(28)[::-1])
    assert picture.shape == (224, 224, 3) and picture.dtype == np.uint8
    assert picture[0, 0, 0] > picture[0, 0, 2]  # positive: red
    assert picture[0, -1, 2] > picture[0, -1, 0]  # negative: blue


def test_one_shared_model_serves_eight_threads_at_once():
    """Eight sessions reading strokes on ONE model at the same moment (a Barrier before each round): every answer
    and every attribution equals the one computed alone, and the model is left exactly as it was."""
    import threading

    import cnn

    model, _ = cnn.load_model()
    weights_before = {name: tensor.numpy().tobytes() for name, tensor in model.state_dict().items()}
    threads, rounds = 8, 12
    generator = torch.Generator().manual_seed(0)
    # A different image and a different target per thread, so an answer handed to the wrong thread shows.
    images = [(torch.rand(1, 1, 28, 28, generator=generator) > 0.75).float() for _ in range(threads)]
    methods = ("grad_cam", "integrated_gradients", "occlusion")

    def work(i):
        return predict(model, images[i]), {method: attribution(model, images[i], i, method) for method in methods}

    alone = [work(i) for i in range(threads)]
    assert len({int(probabilities.argmax()) for probabilities, _ in alone}) > 1  # the images are told apart
    start, results, errors = threading.Barrier(threads, timeout=300), [[] for _ in range(threads)], []

    def session(i):
        try:
            for _ in range(rounds):
                start.wait()  # all eight begin each round together
                results[i].append(work(i))
        except BaseException as exc:  # reported below; a broken barrier frees the others
            errors.append(exc)
            start.abort()

    workers = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)  # a generous deadline; a hang fails below instead of blocking the suite
    assert not any(worker.is_alive() for worker in workers), "a thread did not finish within 10 minutes"
    assert not errors, errors
    for i in range(threads):
        assert len(results[i]) == rounds
        for probabilities, maps in results[i]:
            assert np.allclose(probabilities, alone[i][0], rtol=1e-5, atol=1e-6), i
            for method in methods:
                assert np.allclose(maps[method], alone[i][1][method], rtol=1e-5, atol=1e-6), (i, method)
    assert not model.training
    assert {name: tensor.numpy().tobytes() for name, tensor in model.state_dict().items()} == weights_before
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


# ---------------------------------------------------------------- every network, every dataset

def fashion_model(network: str = "cnn"):
    """An untrained network of the given kind, built for Fashion-MNIST (its answers are any class: words are tested)."""
    from cnn.config import ARTICLE
    from cnn.model import build_model

    torch.manual_seed(0)
    return build_model(ARTICLE.replace(dataset="fashion", architecture=network)).eval()


def test_answers_use_the_datasets_class_names():
    from cnn.data import FASHION_SPEC

    sure = describe(np.array([0.01] * 7 + [0.91, 0.01, 0.03]), FASHION_SPEC)
    assert sure["digit"] == 7 and sure["name"] == "Sneaker" and sure["text"] == "Read as Sneaker (91% sure)."
    unsure = np.zeros(10)
    unsure[6], unsure[0] = 0.5, 0.45
    assert describe(unsure, FASHION_SPEC)["text"] == "Not sure: Shirt or T-shirt/top? (50% vs 45%)"
    assert describe(np.array([0.01] * 9 + [0.91]))["name"] == "9"  # MNIST: the name is the digit
    assert class_phrase(9, FASHION_SPEC) == "Ankle boot" and class_phrase(8) == "an 8"
    assert "0-9" in always_an_answer() and "0-9" not in always_an_answer(FASHION_SPEC)
    assert "10 classes" in always_an_answer(FASHION_SPEC)


def test_a_fashion_models_explanation_names_its_class():
    model = fashion_model()
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 4:24, 6:22] = 1.0
    shown = explain(model, x, 7, "integrated_gradients")
    assert shown["caption"].startswith("Integrated Gradients for Sneaker: ")
    cam = explain(model, torch.zeros(1, 1, 28, 28), 0, "grad_cam")  # no biases: a blank image gives nothing
    assert "score for T-shirt/top" in cam["empty"] and "digit" not in cam["note"] and "0" not in cam["note"]


@pytest.mark.parametrize("network, stage, cells", [("cnn", "conv3", "7x7"), ("lenet", "conv2", "10x10"),
                                                   ("one-conv", "conv1", "28x28")])
def test_grad_cam_on_every_network_that_declares_a_stage(network, stage, cells):
    """Grad-CAM is offered where a network declares its stage, equals captum's on that layer, and says its size."""
    from cnn.config import ARTICLE
    from cnn.model import build_model

    torch.manual_seed(0)
    model = build_model(ARTICLE.replace(architecture=network, init_std=0.1)).eval()
    assert attribution_methods(model) == ["integrated_gradients", "grad_cam", "occlusion"]
    x = torch.rand(1, 1, 28, 28)
    target = int(predict(model, x).argmax())  # the answer's class: its evidence is positive somewhere
    mine = grad_cam(model, x, target)
    reference, signed = captum_grad_cam(model, x, target, getattr(model, stage))
    assert not is_empty(mine) and float(signed.max()) > 0
    assert np.allclose(mine, reference, atol=1e-5)
    shown = explain(model, x, target, "grad_cam")
    assert f"{stage}'s maps are {cells}" in shown["caption"] and f"{stage}'s {cells} cells" in shown["note"]


@pytest.mark.parametrize("network", ["mlp", "softmax"])
def test_networks_without_a_grad_cam_stage_get_the_other_two(network):
    model = fashion_model(network)
    assert attribution_methods(model) == ["integrated_gradients", "occlusion"]
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 4:24, 6:22] = 1.0
    for method in attribution_methods(model):
        assert attribution(model, x, 3, method).shape == (28, 28)
    with pytest.raises(ValueError, match="choose one of integrated_gradients, occlusion"):
        attribution(model, x, 3, "grad_cam")


def _inline_images(html_text: str) -> list[np.ndarray]:
    """Every <img src="data:image/png;base64,..."> in html_text, decoded by PIL as grey pixels."""
    import base64
    import io
    import re

    from PIL import Image

    found = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html_text)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L")) for b64 in found]


def test_the_answer_is_one_element_with_the_image_inline_its_name_and_sentence():
    from cnn.data import FASHION_SPEC
    from cnn.explain import answer_html

    image = np.random.default_rng(0).integers(0, 256, size=(28, 28), dtype=np.uint8)
    sure = describe(np.array([0.01] * 7 + [0.91, 0.01, 0.06]))
    text = answer_html(image, sure)
    pictures = _inline_images(text)
    assert len(pictures) == 1 and np.array_equal(pictures[0], np.kron(image, np.ones((4, 4), np.uint8)))
    assert "http" not in text and "/media/" not in text  # nothing for the browser to fetch
    assert "what the network sees (28x28)" in text
    assert "<strong>It's a 7 (91% sure).</strong>" in text and "font-size:6rem;line-height:1'>7</div>" in text
    unsure = np.zeros(10)
    unsure[4], unsure[9] = 0.5, 0.45
    doubtful = answer_html(image, describe(unsure))
    assert "<strong>Not sure: 4 or 9? (50% vs 45%)</strong>" in doubtful and "line-height:1" not in doubtful  # no big name
    clothes = answer_html(image, describe(np.array([0.01] * 7 + [0.91, 0.01, 0.06]), FASHION_SPEC), FASHION_SPEC)
    assert "font-size:2rem;line-height:1'>Sneaker</div>" in clothes and "Read as Sneaker (91% sure)." in clothes


def test_the_answers_words_are_escaped():
    from cnn.explain import answer_html

    forged = {"sure": True, "name": "<script>alert(1)</script>", "text": "It's <b>&"}
    text = answer_html(np.zeros((28, 28), np.uint8), forged)
    assert "<script>" not in text and "&lt;script&gt;" in text and "It's &lt;b&gt;&amp;" in text


@pytest.mark.mnist
def test_grad_cam_draws_a_map_for_nearly_every_real_digit_the_bundled_model_reads(real_mnist):
    """The real model on real digits: on conv3's maps before the ReLU, Grad-CAM was empty for 74 of the first 300
    test digits (and for 292 of a FAST model's); on the rectified maps, for 4."""
    import cnn

    model, _ = cnn.load_model()
    images = real_mnist.test_images[:100].float().div(255).unsqueeze(1)
    with torch.no_grad():
        answers = model(images).argmax(1)
    empty = sum(is_empty(grad_cam(model, images[i:i + 1], int(answers[i]))) for i in range(len(images)))
    assert empty <= 5
