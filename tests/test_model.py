"""cnn.model: shapes, parameter count, TF 'SAME' pooling, ReLU/pool order, captured activations, dropout,
the declared stages (against a forward written out by hand) and has_stage."""
import functools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn.model import (ARTICLE_STAGES, ConvNet, Dropout, SoftmaxRegression, count_parameters, has_stage, layer_table,
                       pool_same, set_dropout_generator, stage_names)

ROOT = Path(__file__).resolve().parent.parent


def test_parameter_count_and_no_biases():
    model = ConvNet()
    assert count_parameters(model) == 1_378_698
    assert [p.numel() for p in model.parameters()] == [288, 18_432, 73_728, 1_280_000, 6_250]
    assert all("bias" not in name for name, _ in model.named_parameters())


def test_weights_start_normal_with_std_001():
    torch.manual_seed(0)
    weights = torch.cat([p.detach().flatten() for p in ConvNet().parameters()])
    assert abs(weights.std().item() - 0.01) < 2e-4
    assert abs(weights.mean().item()) < 1e-4


def test_output_shape_and_spatial_sizes():
    model = ConvNet().eval()
    acts = model.forward_with_activations(torch.rand(2, 1, 28, 28))
    assert acts["conv1"].shape == (2, 32, 28, 28)
    assert acts["pool1"].shape == (2, 32, 14, 14)
    assert acts["pool2"].shape == (2, 64, 7, 7)
    assert acts["pool3"].shape == (2, 128, 4, 4)
    assert acts["fc"].shape == (2, 625)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_layer_table_matches_the_model():
    rows = {row["name"]: row for row in layer_table()}
    assert sum(row["params"] for row in rows.values()) == 1_378_698
    assert rows["pool1"]["shape"] == [32, 14, 14]
    assert rows["pool3"]["shape"] == [128, 4, 4]
    assert rows["flatten"]["shape"] == [2048]
    assert all(row["explanation"].endswith(".") for row in rows.values())
    acts = ConvNet().eval().forward_with_activations(torch.rand(1, 1, 28, 28))
    for name in ("conv1", "relu1", "pool1", "conv2", "pool2", "conv3", "pool3", "fc", "logits"):
        assert list(acts[name].shape[1:]) == rows[name]["shape"], name


def test_same_pooling_equals_explicit_pad_bottom_right_then_pool():
    x = torch.randn(3, 5, 7, 7)
    padded = F.pad(x, (0, 1, 0, 1), value=float("-inf"))  # TF SAME: extra column/row at the right/bottom
    expected = F.max_pool2d(padded, 2, 2)
    assert pool_same(x).shape == (3, 5, 4, 4)
    assert torch.equal(pool_same(x), expected)
    # The tempting padding=1 is not the same thing: it shifts the windows.
    assert not torch.equal(F.max_pool2d(x, 2, 2, padding=1), expected)


@pytest.mark.parametrize("shape", [(3, 5, 7, 7), (2, 4, 28, 28), (2, 3, 5, 6), (1, 2, 1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_same_pooling_without_gradients_gives_max_pool2ds_numbers(shape, channels_last):
    # Without gradients pool_same takes a faster path (elementwise maxima of strided views): the same numbers,
    # negative values at an odd edge included (its padding must never win a window).
    x = torch.randn(shape) - 1.0
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.max_pool2d(x, 2, 2, ceil_mode=True)
    with torch.inference_mode():
        fast = pool_same(x)
    with torch.no_grad():
        assert torch.equal(pool_same(x), expected)
    assert torch.equal(fast, expected)
    assert pool_same(x.clone().requires_grad_(True)).grad_fn is not None  # training keeps max_pool2d's backward


def test_relu_after_pool_equals_relu_before_pool_values_and_gradients():
    x1 = torch.randn(4, 8, 7, 7, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    a = F.relu(pool_same(x1))
    b = pool_same(F.relu(x2))
    assert torch.equal(a, b)
    weights = torch.randn_like(a)
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    assert torch.equal(x1.grad, x2.grad)


def test_captured_activations_equal_layers_applied_directly():
    torch.manual_seed(1)
    model = ConvNet().eval()
    x = torch.rand(2, 1, 28, 28)
    acts = model.forward_with_activations(x)
    conv1 = model.conv1(x)
    assert torch.allclose(acts["conv1"], conv1)
    assert torch.allclose(acts["relu1"], F.relu(conv1))
    pool1 = F.max_pool2d(F.relu(conv1), 2, 2)
    assert torch.allclose(acts["pool1"], pool1)
    conv2 = model.conv2(pool1)
    assert torch.allclose(acts["conv2"], conv2, atol=1e-6)
    conv3 = model.conv3(F.max_pool2d(F.relu(conv2), 2, 2))
    assert torch.allclose(acts["conv3"], conv3, atol=1e-6)
    assert torch.allclose(acts["logits"], model(x), atol=1e-6)
    assert torch.allclose(acts["probabilities"].sum(1), torch.ones(2))


def test_dropout_keeps_the_right_fraction_and_rescales():
    torch.manual_seed(0)
    drop = Dropout(0.8).train()
    x = torch.ones(200, 32, 14, 14).contiguous(memory_format=torch.channels_last)
    y = drop(x)
    kept = (y != 0).float().mean().item()
    assert abs(kept - 0.8) < 0.005
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1.25))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("p_keep", [0.5, 0.75, 0.8, 0.9])
def test_keep_masks_keep_each_value_with_probability_p_keep(p_keep):
    from cnn.model import keep_mask

    n = 2_000_001  # odd: the last draw's second value is left out
    keep = keep_mask(n, p_keep, generator=torch.Generator().manual_seed(0))
    assert keep.shape == (n,) and keep.dtype == torch.bool
    for part in (keep[0::2], keep[1::2]):  # each half of the draws on its own (standard error ~0.0004)
        assert abs(part.float().mean().item() - p_keep) < 0.002
    assert abs(keep[:-1].view(-1, 2).float().prod(1).mean().item() - p_keep ** 2) < 0.002  # pairs independent


def test_softmax_baseline_shape():
    assert SoftmaxRegression()(torch.rand(5, 1, 28, 28)).shape == (5, 10)
    assert count_parameters(SoftmaxRegression()) == 7850


def test_kaiming_init_for_the_fast_preset():
    torch.manual_seed(0)
    model = ConvNet(init="kaiming")
    assert abs(model.conv2.weight.std().item() - (2 / 288) ** 0.5) < 0.005  # He: sqrt(2 / fan_in)
    assert abs(model.fc.weight.std().item() - (2 / 2048) ** 0.5) < 0.001
    assert abs(model.out.weight.std().item() - 0.01) < 0.002  # the output layer keeps the tutorial's init
    assert count_parameters(model) == 1_378_698


def test_dropout_draws_its_mask_from_its_own_generator():
    x = torch.ones(4, 32, 14, 14).contiguous(memory_format=torch.channels_last)
    drop = Dropout(0.8, generator=torch.Generator().manual_seed(7)).train()
    torch.manual_seed(0)
    first = drop(x)
    drop.generator = torch.Generator().manual_seed(7)
    torch.manual_seed(1)  # another global state, and draws from it in between: the same mask
    torch.rand(1000)
    second = drop(x)
    assert torch.equal(first, second)
    # The mask comes from that generator's 31-bit numbers, two values each (numpy, by hand): value 2i keeps where
    # draw i's low 16 bits, shifted by half their range, are below 0.8 * 65,536; value 2i+1 where its high 15 bits
    # are below 0.8 * 32,768. Laid out as x is (channels_last).
    draws = torch.empty(x.numel() // 2, dtype=torch.int32).random_(generator=torch.Generator().manual_seed(7))
    draws = draws.numpy().astype(np.int64)
    low, high = draws & 0xFFFF, draws >> 16
    expected = np.empty(x.numel(), dtype=bool)
    expected[0::2] = (low + 32768) % 65536 < round(0.8 * 65536)
    expected[1::2] = high < round(0.8 * 32768)
    kept = torch.from_numpy(expected).reshape(4, 14, 14, 32).permute(0, 3, 1, 2)
    assert torch.equal(first != 0, kept)
    # Without a generator it draws from the global RNG, as before.
    drop.generator = None
    torch.manual_seed(7)
    assert torch.equal(drop(x), first)


def test_a_relu_and_the_dropout_after_it_run_as_one_step_with_the_same_numbers_and_gradient():
    """Dropout.after_relu(x) is dropout(relu(x)): value and gradient checked in numpy, by hand, from the same mask."""
    from cnn.model import keep_mask

    x = torch.randn(6, 32, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    upstream = torch.randn(6, 32, 7, 7)
    drop = Dropout(0.8, generator=torch.Generator().manual_seed(3)).train()
    y = drop.after_relu(x)
    y.backward(upstream)
    keep = keep_mask(x.numel(), 0.8, generator=torch.Generator().manual_seed(3)).numpy()
    keep = keep.reshape(6, 7, 7, 32).transpose(0, 3, 1, 2)  # drawn in x's memory order (channels_last)
    value = x.detach().numpy()
    assert np.array_equal(y.detach().numpy(), np.where(keep, np.maximum(value, 0), 0) * np.float32(1.25))
    assert np.array_equal(x.grad.numpy(), np.where(keep & (value > 0), upstream.numpy() * np.float32(1.25), 0))
    assert y.is_contiguous(memory_format=torch.channels_last)  # the next conv gets the layout it runs fastest in
    drop.eval()
    assert torch.equal(drop.after_relu(x), F.relu(x))  # a plain ReLU when it does not drop


def test_the_networks_fused_forward_equals_the_stages_run_one_by_one():
    """forward() runs ReLU+pool and ReLU+dropout as single steps; the stages run one at a time, as declared (each
    dropout drawing from the same generator in the same order), give the same logits and the same gradients."""
    from cnn.model import MLP, LeNet5

    for make in (ConvNet, MLP, LeNet5):
        torch.manual_seed(0)
        model = make(init_std=0.05).train()
        x = torch.rand(16, 1, 28, 28)
        grads = []
        for run in (model, lambda v: functools.reduce(lambda h, stage: model._run_stage(stage, h), model.stages, v)):
            set_dropout_generator(model, torch.Generator().manual_seed(9))
            model.zero_grad()
            logits = run(x)
            logits.square().sum().backward()
            grads.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
        (first, first_grads), (second, second_grads) = grads
        assert torch.allclose(first, second, atol=1e-6), make.__name__
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(first_grads, second_grads)), make.__name__


def test_weights_come_from_the_given_generator_not_the_global_rng():
    torch.manual_seed(1)
    before = torch.get_rng_state()
    a = ConvNet(generator=torch.Generator().manual_seed(5))
    assert torch.equal(torch.get_rng_state(), before)  # nothing drawn from the global RNG
    torch.manual_seed(2)
    b = ConvNet(generator=torch.Generator().manual_seed(5))
    c = ConvNet(generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    # conv1's 288 weights are the first 288 normal draws of that generator, times 0.01.
    reference = torch.randn(288, generator=torch.Generator().manual_seed(5)) * 0.01
    assert torch.allclose(a.conv1.weight.detach().flatten(), reference)


def test_set_dropout_generator_reaches_every_dropout():
    model = ConvNet()
    generator = torch.Generator()
    set_dropout_generator(model, generator)
    drops = [m for m in model.modules() if isinstance(m, Dropout)]
    assert len(drops) == 2 and all(m.generator is generator for m in drops)
    set_dropout_generator(model, None)
    assert all(m.generator is None for m in drops)


def reference_forward(weights: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The article's network in eval mode, written out by hand with F.* from a state_dict: no code under test."""
    def pool(t):  # TF 'SAME': pad the bottom/right with -inf, then 2x2 windows, stride 2
        return F.max_pool2d(F.pad(t, (0, t.shape[-1] % 2, 0, t.shape[-2] % 2), value=float("-inf")), 2, 2)
    conv1 = F.conv2d(x, weights["conv1.weight"], padding=1)
    pool1 = pool(F.relu(conv1))
    conv2 = F.conv2d(pool1, weights["conv2.weight"], padding=1)
    pool2 = pool(F.relu(conv2))
    conv3 = F.conv2d(pool2, weights["conv3.weight"], padding=1)
    pool3 = pool(F.relu(conv3))
    fc = F.relu(F.linear(pool3.reshape(len(x), -1), weights["fc.weight"]))
    logits = F.linear(fc, weights["out.weight"])
    return {"conv1": conv1, "pool1": pool1, "conv2": conv2, "pool2": pool2, "conv3": conv3, "pool3": pool3,
            "fc": fc, "logits": logits}


def test_declared_stages_give_the_forward_written_out_by_hand():
    model = ConvNet(generator=torch.Generator().manual_seed(3)).eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    expected = reference_forward(model.state_dict(), x)
    with torch.no_grad():
        assert torch.allclose(model(x), expected["logits"], atol=1e-6)
        acts = model.forward_with_activations(x)
        maps = model.features(x)
        assert torch.allclose(maps, expected["conv3"], atol=1e-6)  # the Grad-CAM split: conv3, before its ReLU
        assert torch.allclose(model.head(maps), expected["logits"], atol=1e-6)
    assert list(acts) == ["input", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "pool3",
                          "fc", "logits", "probabilities"]
    for name, tensor in expected.items():
        assert torch.allclose(acts[name], tensor, atol=1e-6), name
    assert torch.allclose(acts["relu2"], F.relu(expected["conv2"]), atol=1e-6)
    assert torch.allclose(acts["probabilities"], F.softmax(expected["logits"], dim=1), atol=1e-6)


def test_the_softmax_baseline_declares_its_one_layer():
    model = SoftmaxRegression(init_std=0.1, generator=torch.Generator().manual_seed(1))
    nn.init.normal_(model.out.bias, generator=torch.Generator().manual_seed(2))
    x = torch.rand(3, 1, 28, 28)
    expected = x.reshape(3, 784) @ model.out.weight.T + model.out.bias
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert stage_names(model) == ("flatten", "logits")
    rows = layer_table(model)
    assert [(row["name"], row["shape"], row["params"]) for row in rows] == [
        ("input", [1, 28, 28], 0), ("flatten", [784], 0), ("logits", [10], 7850)]
    assert all(row["explanation"].endswith(".") for row in rows)


def test_layer_table_rows_come_from_the_declared_stages():
    rows = layer_table()
    assert [row["name"] for row in rows] == ["input"] + [stage.name for stage in ARTICLE_STAGES if stage.row]
    assert [row["name"] for row in rows] == ["input", "conv1", "relu1", "pool1", "dropout1", "conv2", "relu2", "pool2",
                                             "dropout2", "conv3", "relu3", "pool3", "flatten", "fc", "logits"]
    assert sum(row["params"] for row in rows) == 1_378_698
    assert {row["name"]: row["params"] for row in rows if row["params"]} == {
        "conv1": 288, "conv2": 18_432, "conv3": 73_728, "fc": 1_280_000, "logits": 6_250}


def test_has_stage_answers_from_the_declaration():
    assert stage_names(ConvNet()) == tuple(stage.name for stage in ARTICLE_STAGES)
    assert has_stage(ConvNet(), "conv1") and has_stage(ConvNet(), "conv3") and has_stage(ConvNet(), "pool3")
    assert not has_stage(SoftmaxRegression(), "conv1")
    assert not has_stage(SoftmaxRegression(), "conv3")
    assert stage_names(nn.Linear(2, 2)) == ()  # a network that declares nothing has no stages
    with pytest.raises(ValueError, match="no stage for Grad-CAM"):
        SoftmaxRegression().features(torch.rand(1, 1, 28, 28))


def test_no_hasattr_on_the_model_in_cnn_or_pages():
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for folder in ("cnn", "pages") for path in sorted((ROOT / folder).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), start=1)
                 if re.search(r"hasattr\(model\b", line)]
    assert offenders == []


@pytest.mark.mnist
def test_bundled_model_predictions_on_real_test_images_match_a_hand_written_forward(real_mnist):
    """Real MNIST: the bundled checkpoint's numbers must not move when the network's code is reorganised."""
    from cnn.checkpoint import load_model

    model, _ = load_model()
    x = real_mnist.test_images[:1000].float().div(255.0).unsqueeze(1)  # (1000, 1, 28, 28) in [0, 1]
    with torch.no_grad():
        logits = model(x)
        expected = reference_forward(model.state_dict(), x)["logits"]
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    assert (expected.argmax(1) == real_mnist.test_labels[:1000]).float().mean() > 0.98


def test_a_staged_network_still_moves_like_any_module():
    """The stage runner must not shadow nn.Module's own methods (.to, .double and .cuda go through _apply)."""
    model = ConvNet().eval().to(torch.float64)
    assert model(torch.rand(1, 1, 28, 28, dtype=torch.float64)).dtype == torch.float64
