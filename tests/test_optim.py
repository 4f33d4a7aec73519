"""cnn.optim: TensorFlow 1 RMSProp's first update, computed by hand."""
import math

import pytest
import torch

from cnn.config import ARTICLE, FAST
from cnn.model import ConvNet
from cnn.optim import TFRMSprop, make_optimizer


def test_first_update_matches_hand_computation():
    w = torch.tensor([0.5, -0.2, 0.0, 1.0], requires_grad=True)
    grads = [0.3, -2.0, 1e-4, 0.0]
    w.grad = torch.tensor(grads)
    TFRMSprop([w], lr=0.001, decay=0.9, epsilon=1e-10).step()
    for start, g, got in zip([0.5, -0.2, 0.0, 1.0], grads, w.detach().tolist()):
        mean_square = 0.9 * 1.0 + 0.1 * g * g  # the mean square starts at ONE, as in TensorFlow
        expected = start - 0.001 * g / math.sqrt(mean_square + 1e-10)
        assert got == pytest.approx(expected, abs=1e-7)


def test_second_update_uses_the_running_mean():
    w = torch.tensor([1.0], requires_grad=True)
    opt = TFRMSprop([w], lr=0.01)
    for _ in range(2):
        w.grad = torch.tensor([0.5])
        opt.step()
    ms1 = 0.9 + 0.1 * 0.25
    ms2 = 0.9 * ms1 + 0.1 * 0.25
    expected = 1.0 - 0.01 * 0.5 / math.sqrt(ms1 + 1e-10) - 0.01 * 0.5 / math.sqrt(ms2 + 1e-10)
    assert w.item() == pytest.approx(expected, abs=1e-6)


def test_differs_from_torch_rmsprop_which_starts_at_zero():
    a = torch.tensor([1.0], requires_grad=True)
    b = torch.tensor([1.0], requires_grad=True)
    a.grad = torch.tensor([0.01])
    b.grad = torch.tensor([0.01])
    TFRMSprop([a], lr=0.001).step()
    torch.optim.RMSprop([b], lr=0.001, alpha=0.9, eps=1e-10).step()
    assert abs(1.0 - b.item()) == pytest.approx(0.001 / math.sqrt(0.1), rel=1e-4)  # ~3.16 lr
    assert abs(1.0 - a.item()) == pytest.approx(0.001 * 0.01 / math.sqrt(0.9 + 0.1 * 1e-4), rel=1e-3)  # ~0.01 lr


def test_presets_build_their_optimizers():
    optimizer, scheduler = make_optimizer(ConvNet(), ARTICLE, 100)
    assert isinstance(optimizer, TFRMSprop) and scheduler is None
    assert optimizer.defaults == {"lr": 0.001, "decay": 0.9, "epsilon": 1e-10}
    optimizer, scheduler = make_optimizer(ConvNet(), FAST, 100)
    assert isinstance(optimizer, torch.optim.Adam) and scheduler is not None


def test_epsilon_sits_inside_the_square_root():
    # With epsilon ~ 1, sqrt(ms + eps) (TensorFlow) and sqrt(ms) + eps (torch, Keras) give clearly different steps.
    lr, decay, epsilon = 0.1, 0.9, 1.0
    start = [0.5, -0.2, 2.0]
    grads = [0.3, -2.0, 0.7]
    w = torch.tensor(start, requires_grad=True)
    optimizer = TFRMSprop([w], lr=lr, decay=decay, epsilon=epsilon)
    expected, outside, mean_squares = list(start), list(start), [1.0] * 3  # TF1 starts the mean square at ONE
    for _ in range(2):
        w.grad = torch.tensor(grads)
        optimizer.step()
        for i, g in enumerate(grads):
            mean_squares[i] = decay * mean_squares[i] + (1 - decay) * g * g
            expected[i] -= lr * g / math.sqrt(mean_squares[i] + epsilon)
            outside[i] -= lr * g / (math.sqrt(mean_squares[i]) + epsilon)
        for got, inside_value, outside_value in zip(w.detach().tolist(), expected, outside):
            assert got == pytest.approx(inside_value, abs=1e-6)
            assert abs(got - outside_value) > 1e-3  # the epsilon-outside formula is not what it computes


def test_fast_adam_is_fused_on_the_cpu_and_takes_adams_steps_with_the_schedules_lr_and_beta1():
    """make_optimizer's Adam runs as one fused kernel on the CPU (the speed), and its updates are still Adam's, written
    out by hand here with the learning rate and beta1 that the one-cycle schedule set before each step."""
    model = torch.nn.Linear(3, 2, bias=False)
    torch.nn.init.constant_(model.weight, 0.5)
    optimizer, scheduler = make_optimizer(model, FAST, 10)
    assert optimizer.defaults["fused"] is True
    eps = optimizer.defaults["eps"]
    w = [0.5] * 6
    m, v = [0.0] * 6, [0.0] * 6
    for t in range(1, 5):
        grads = [0.3 * t, -1.0, 1e-3, 2.0 / t, -0.25, 0.0]
        model.weight.grad = torch.tensor(grads).view(2, 3)
        lr = optimizer.param_groups[0]["lr"]
        beta1, beta2 = optimizer.param_groups[0]["betas"]
        optimizer.step()
        scheduler.step()
        for i, g in enumerate(grads):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            m_hat, v_hat = m[i] / (1 - beta1 ** t), v[i] / (1 - beta2 ** t)
            w[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
        assert model.weight.detach().view(-1).tolist() == pytest.approx(w, abs=1e-6)
    assert optimizer.param_groups[0]["betas"][0] != pytest.approx(beta1)  # the schedule did move beta1
