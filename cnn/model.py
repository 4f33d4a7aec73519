"""The tutorial's MNIST convolutional network in PyTorch, its layer table, and the softmax baseline."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

IMAGE_SIZE = 28  # MNIST images are 28x28, one grey channel
CONV_CHANNELS = (32, 64, 128)  # maps made by conv1, conv2, conv3
KERNEL_SIZE = 3
# Spatial size after each 2x2 pool with TensorFlow 'SAME' padding: ceil(n / 2): 28 -> 14 -> 7 -> 4.
POOLED_SIZES = (14, 7, 4)
FLAT_FEATURES = CONV_CHANNELS[-1] * POOLED_SIZES[-1] ** 2  # 128 * 4 * 4 = 2048
HIDDEN_UNITS = 625
NUM_CLASSES = 10


class Dropout(nn.Module):
    """Dropout that keeps each value with probability p_keep and scales kept ones by 1 / p_keep.

    The same maths as nn.Dropout(1 - p_keep), about twice as fast on a CPU: nn.Dropout draws
    its mask with bernoulli_, one slow generator call per value; a comparison of uniform numbers
    from torch.rand gives the same Bernoulli(p_keep) mask.

    ``generator``: where the masks' random numbers come from. None draws from torch's global RNG;
    train() sets a per-run torch.Generator here (on the model's device), so two trainings in two
    threads never interleave their draws. It is a plain attribute, not state: checkpoints ignore it.
    """

    def __init__(self, p_keep: float, generator: torch.Generator | None = None):
        super().__init__()
        if not 0.0 < p_keep <= 1.0:
            raise ValueError(f"p_keep must be in (0, 1], got {p_keep}")
        self.p_keep = p_keep
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p_keep >= 1.0:
            return x
        if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
            # Draw flat (rand_like is slower on channels_last), then give the mask x's strides.
            mask = torch.rand(x.numel(), device=x.device, generator=self.generator).as_strided(x.shape, x.stride())
        else:
            mask = torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=self.generator)
        return x * mask.lt_(self.p_keep).div_(self.p_keep)

    def extra_repr(self) -> str:
        return f"p_keep={self.p_keep}"


def set_dropout_generator(model: nn.Module, generator: torch.Generator | None) -> None:
    """Make every Dropout of model draw its masks from generator (None: back to torch's global RNG)."""
    for module in model.modules():
        if isinstance(module, Dropout):
            module.generator = generator


def pool_same(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool, stride 2, TensorFlow 'SAME': an odd edge is padded at the bottom/right only.

    ceil_mode=True lets the last window hang over the bottom/right edge, and the overhang is
    ignored, which is what TensorFlow's SAME pooling does (7x7 -> 4x4). padding=1 would pad
    the top/left too and shift every window.
    """
    return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


@dataclass(frozen=True)
class Stage:
    """One named step of a network, in the order data flows through it."""

    name: str  # the article's name for it: a layer-table row and has_stage's key ("conv1", "pool3", "logits")
    kind: str  # what it does: "conv", "relu", "pool", "dropout", "flatten" or "linear"
    module: str = ""  # the attribute holding its weights or its Dropout ("conv1", "dropout_conv"); "" for none
    activation: str = ""  # the key forward_with_activations records its output under; "" records nothing
    row: bool = True  # a row of layer_table (False: folded into the sentence of the row before it)


def _conv_block(i: int, *, last: bool = False) -> tuple[Stage, ...]:
    """conv{i}, relu{i}, pool{i} and, between blocks, dropout{i} (the third block's comes after flatten)."""
    block = (Stage(f"conv{i}", "conv", module=f"conv{i}", activation=f"conv{i}"),  # before ReLU
             Stage(f"relu{i}", "relu", activation=f"relu{i}"),
             Stage(f"pool{i}", "pool", activation=f"pool{i}"))
    return block if last else block + (Stage(f"dropout{i}", "dropout", module="dropout_conv"),)


# The article's network, declared once: forward, the activations the pages show, the layer table and the
# Grad-CAM split are all read from this tuple.
ARTICLE_STAGES: tuple[Stage, ...] = (
    *_conv_block(1),  # (N, 1, 28, 28) -> (N, 32, 14, 14)
    *_conv_block(2),  # (N, 32, 14, 14) -> (N, 64, 7, 7)
    *_conv_block(3, last=True),  # (N, 64, 7, 7) -> (N, 128, 4, 4)
    Stage("flatten", "flatten"),  # (N, 2048)
    Stage("dropout3", "dropout", module="dropout_conv", row=False),  # after flatten: the tutorial's order
    Stage("fc", "linear", module="fc"),  # (N, 625)
    Stage("relu4", "relu", activation="fc", row=False),  # the pages' "fc" is the hidden layer after its ReLU
    Stage("dropout4", "dropout", module="dropout_hidden", row=False),
    Stage("logits", "linear", module="out", activation="logits"),  # (N, 10)
)

SOFTMAX_STAGES: tuple[Stage, ...] = (
    Stage("flatten", "flatten"),  # (N, 784)
    Stage("logits", "linear", module="out", activation="logits"),  # (N, 10)
)


# One sentence per layer, in words a student can follow.
_EXPLANATIONS = {
    "input": "A 28x28 grey image of a handwritten digit: white ink (1.0) on black (0.0).",
    "conv1": "32 learned 3x3 filters slide over the image; each gives a feature map that is large where its pattern (an edge, a stroke end) appears.",
    "relu1": "ReLU keeps positive responses and sets negative ones to zero, so a map only says where a pattern is present.",
    "pool1": "2x2 max-pooling keeps the strongest response in each 2x2 block, halving the size (28 -> 14) and tolerating small shifts.",
    "dropout1": "During training, dropout zeroes each value with probability 1 - p_keep_conv (0.2), so the network cannot rely on any single feature.",
    "conv2": "64 filters, each 3x3 over all 32 maps below, combine edges into larger parts such as curves and corners.",
    "relu2": "ReLU again: negative evidence is cut to zero.",
    "pool2": "Max-pooling halves the size again, 14 -> 7; each value now sees a 10x10 patch of the input (its receptive field).",
    "dropout2": "Dropout again, keeping each value with probability 0.8 during training.",
    "conv3": "128 filters, each 3x3 over the 64 maps below, detect whole-digit parts: loops, long strokes, crossings.",
    "relu3": "ReLU again.",
    "pool3": "Max-pooling 7 -> 4 with TensorFlow 'SAME' padding: the odd last row and column are pooled on their own.",
    "flatten": "The 128 maps of 4x4 are laid out as one vector of 2,048 numbers (then dropout, keep 0.8).",
    "fc": "A fully connected layer: each of 625 units weighs all 2,048 features; ReLU follows (then dropout, keep 0.5).",
    "logits": "A fully connected layer to 10 scores, one per digit; softmax turns them into probabilities and training minimises their cross-entropy with the true label.",
}

_SOFTMAX_EXPLANATIONS = {
    "input": _EXPLANATIONS["input"],
    "flatten": "The 28x28 pixels are laid out as one vector of 784 numbers: the network never sees which pixels are neighbours.",
    "logits": "One weight per pixel and class, plus a bias: 10 scores, one per digit; softmax turns them into probabilities.",
}


class StagedNetwork(nn.Module):
    """A network whose forward passes are read from its declared `stages`; subclasses make the modules.

    grad_cam_stage: the stage whose output Grad-CAM weighs (features() ends there, head() starts after it);
    "" for a network without one.
    """

    stages: tuple[Stage, ...] = ()
    grad_cam_stage: str = ""
    explanations: dict[str, str]  # a sentence per layer-table row, "input" included

    def _run_stage(self, stage: Stage, x: torch.Tensor) -> torch.Tensor:
        if stage.kind in ("conv", "linear", "dropout"):
            return getattr(self, stage.module)(x)
        if stage.kind == "relu":
            return F.relu(x)
        if stage.kind == "pool":
            return pool_same(x)
        if stage.kind == "flatten":
            return torch.flatten(x, 1)
        raise ValueError(f"Unknown stage kind {stage.kind!r} in {stage.name!r}.")

    def _run(self, x: torch.Tensor, stages: tuple[Stage, ...]) -> torch.Tensor:
        """Apply stages in order, except that a ReLU followed by a pool runs as pool then ReLU.

        relu(maxpool(x)) == maxpool(relu(x)) exactly (both are monotone), and the ReLU then touches
        4x fewer numbers; forward_with_activations keeps the article's order to show each step.
        """
        i = 0
        while i < len(stages):
            if stages[i].kind == "relu" and i + 1 < len(stages) and stages[i + 1].kind == "pool":
                x = F.relu(pool_same(x))
                i += 2
            else:
                x = self._run_stage(stages[i], x)
                i += 1
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) float32 in [0, 1] -> logits (N, 10), through every stage."""
        return self._run(x, self.stages)

    def _split(self) -> int:
        if not self.grad_cam_stage:
            raise ValueError(f"{type(self).__name__} has no stage for Grad-CAM.")
        return stage_names(self).index(self.grad_cam_stage) + 1

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The stages up to grad_cam_stage (the article's: conv3, before its ReLU: (N, 1, 28, 28) -> (N, 128, 7, 7)).

        With head() it splits forward() there, for Grad-CAM; forward() itself stays whole.
        """
        return self._run(x, self.stages[:self._split()])

    def head(self, maps: torch.Tensor) -> torch.Tensor:
        """The stages after grad_cam_stage: the article's conv3 maps (N, 128, 7, 7) -> logits (N, 10)."""
        return self._run(maps, self.stages[self._split():])

    def forward_with_activations(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every recorded activation, in the declared order, for the visualisation pages.

        A separate method, so the plain forward pays nothing for it. Dropout is skipped only
        in eval mode (as in forward); the returned tensors are detached.
        """
        acts: dict[str, torch.Tensor] = {"input": x}
        for stage in self.stages:
            x = self._run_stage(stage, x)
            if stage.activation:
                acts[stage.activation] = x
        acts["probabilities"] = F.softmax(x, dim=1)
        return {name: t.detach() for name, t in acts.items()}


class ConvNet(StagedNetwork):
    """conv-relu-pool-dropout x3, FC 625, FC 10; no biases; weights ~ N(0, init_std^2) (the tutorial's init).

    The order of the layers is ARTICLE_STAGES; this class only makes them. generator: where the initial
    weights are drawn from (None: torch's global RNG).
    """

    stages = ARTICLE_STAGES
    grad_cam_stage = "conv3"
    explanations = _EXPLANATIONS

    def __init__(self, p_keep_conv: float = 0.8, p_keep_hidden: float = 0.5, init_std: float = 0.01,
                 init: str = "normal", generator: torch.Generator | None = None):
        super().__init__()
        c1, c2, c3 = CONV_CHANNELS
        # skip_init: torch's default init would draw from the global RNG (shared by every thread) only to
        # be overwritten below; every weight is drawn once, from generator.
        self.conv1 = skip_init(nn.Conv2d, 1, c1, KERNEL_SIZE, padding=1, bias=False)  # 'SAME': 28x28 stays 28x28
        self.conv2 = skip_init(nn.Conv2d, c1, c2, KERNEL_SIZE, padding=1, bias=False)
        self.conv3 = skip_init(nn.Conv2d, c2, c3, KERNEL_SIZE, padding=1, bias=False)
        self.fc = skip_init(nn.Linear, FLAT_FEATURES, HIDDEN_UNITS, bias=False)
        self.out = skip_init(nn.Linear, HIDDEN_UNITS, NUM_CLASSES, bias=False)
        self.dropout_conv = Dropout(p_keep_conv)
        self.dropout_hidden = Dropout(p_keep_hidden)
        for weight in self.parameters():
            nn.init.normal_(weight, mean=0.0, std=init_std, generator=generator)
        if init == "kaiming":
            # He initialisation for the layers followed by ReLU: signals keep their size from the first step.
            for layer in (self.conv1, self.conv2, self.conv3, self.fc):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)
        elif init != "normal":
            raise ValueError(f"Unknown init {init!r}: use 'normal' or 'kaiming'.")


class SoftmaxRegression(StagedNetwork):
    """The tutorial's ~92% reference: one linear layer from 784 pixels to 10 logits."""

    stages = SOFTMAX_STAGES
    explanations = _SOFTMAX_EXPLANATIONS

    def __init__(self, init_std: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        self.out = skip_init(nn.Linear, IMAGE_SIZE * IMAGE_SIZE, NUM_CLASSES, bias=True)  # both set below
        if init_std > 0:
            nn.init.normal_(self.out.weight, std=init_std, generator=generator)
        else:  # the tutorial starts from zeros
            nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)


def stage_names(model: nn.Module) -> tuple[str, ...]:
    """The names of model's declared stages, in order; () for a network that declares none."""
    return tuple(stage.name for stage in getattr(model, "stages", ()))


def has_stage(model: nn.Module, name: str) -> bool:
    """Whether model declares a stage called name ("conv1", "conv3", ...): what the pages ask before showing it."""
    return name in stage_names(model)


def build_model(config, generator: torch.Generator | None = None) -> nn.Module:
    """The network a TrainConfig describes, its weights drawn from generator (None: torch's global RNG)."""
    if config.architecture == "softmax":
        return SoftmaxRegression(config.init_std, generator=generator)
    if config.architecture == "cnn":
        return ConvNet(config.p_keep_conv, config.p_keep_hidden, config.init_std, config.init, generator=generator)
    raise ValueError(f"Unknown architecture {config.architecture!r}: use 'cnn' or 'softmax'.")


def layer_table(model: StagedNetwork | None = None) -> list[dict]:
    """Per declared stage that is a row: name, output shape (C, H, W) or (features,), parameter count and a
    one-sentence explanation, after a first row for the input. None: the article's network."""
    model = model if model is not None else ConvNet()
    device = next(model.parameters()).device
    x = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE, device=device)
    rows = [("input", tuple(x.shape[1:]), 0)]
    with torch.no_grad():
        for stage in model.stages:
            if stage.kind != "dropout":  # dropout keeps the shape; skipping it draws no random numbers
                x = model._run_stage(stage, x)
            params = sum(p.numel() for p in getattr(model, stage.module).parameters()) if stage.module else 0
            if stage.row:
                rows.append((stage.name, tuple(x.shape[1:]), params))
    return [
        {"name": name, "shape": list(shape), "params": params, "explanation": model.explanations[name]}
        for name, shape, params in rows
    ]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
