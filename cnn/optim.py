"""RMSProp exactly as TensorFlow 1 defines it (the tutorial's optimizer), and the optimizer factory."""
from __future__ import annotations

import torch


class TFRMSprop(torch.optim.Optimizer):
    """tf.train.RMSPropOptimizer without momentum.

    ms <- decay * ms + (1 - decay) * g^2;   w <- w - lr * g / sqrt(ms + epsilon)

    Two differences from torch.optim.RMSprop, both TensorFlow's: ms starts at ONES (torch: zeros,
    whose first steps are ~3 * lr * sign(g)), and epsilon sits inside the square root.
    """

    def __init__(self, params, lr: float = 0.001, decay: float = 0.9, epsilon: float = 1e-10):
        if lr <= 0 or not 0.0 <= decay < 1.0 or epsilon < 0:
            raise ValueError("TFRMSprop needs lr > 0, 0 <= decay < 1 and epsilon >= 0.")
        super().__init__(params, dict(lr=lr, decay=decay, epsilon=epsilon))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            mean_squares = []
            for p in params:
                state = self.state[p]
                if "mean_square" not in state:
                    state["mean_square"] = torch.ones_like(p)  # TensorFlow's initial value
                mean_squares.append(state["mean_square"])
            # The foreach ops update all tensors in one call each, as torch's own optimizers do.
            torch._foreach_mul_(mean_squares, group["decay"])
            torch._foreach_addcmul_(mean_squares, grads, grads, value=1.0 - group["decay"])
            denominators = torch._foreach_add(mean_squares, group["epsilon"])
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])
        return loss


def make_optimizer(model: torch.nn.Module, config, steps_total: int):
    """(optimizer, scheduler or None) for a TrainConfig; steps_total sizes the one-cycle schedule."""
    params = list(model.parameters())
    if config.optimizer == "rmsprop_tf":
        optimizer = TFRMSprop(params, lr=config.learning_rate, decay=config.rmsprop_decay,
                              epsilon=config.rmsprop_epsilon)
    elif config.optimizer == "adam":
        # fused: one kernel for the whole update, where torch has one for every parameter's device (CPU, CUDA). On this
        # CPU a step at batch 64 (FAST then) spent 6.4 ms in foreach Adam (its temporaries: sqrt alone 3 ms), 1.6 ms fused.
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        optimizer = torch.optim.Adam(params, lr=config.learning_rate, fused=fused, foreach=None if fused else True)
    elif config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.learning_rate)
    else:
        raise ValueError(f"Unknown optimizer {config.optimizer!r}: use rmsprop_tf, adam or sgd.")
    scheduler = None
    if config.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.learning_rate, total_steps=max(1, steps_total), pct_start=0.25)
    elif config.schedule != "constant":
        raise ValueError(f"Unknown schedule {config.schedule!r}: use constant or onecycle.")
    return optimizer, scheduler

