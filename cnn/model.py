"""The networks, each declared once as ordered stages: the tutorial's CNN, and four to compare it with.

NETWORKS names them: the article's CNN, the softmax baseline, an MLP, a LeNet-5-style network and the article's
first block alone. Forward passes, the activations the pages show, layer tables and the Grad-CAM split are read
from each network's stages.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import skip_init

from .data import DATASETS, MNIST_SPEC, DatasetSpec, dataset_spec

IMAGE_SIZE = MNIST_SPEC.side  # the default input: 28x28, one grey channel (both datasets' size)
NUM_CLASSES = MNIST_SPEC.num_classes  # the default output: 10 scores
CONV_CHANNELS = (32, 64, 128)  # maps made by conv1, conv2, conv3
KERNEL_SIZE = 3


def pooled_size(side: int, pools: int) -> int:
    """Side after `pools` 2x2 pools with TensorFlow 'SAME' padding, ceil(n / 2) each: 28 -> 14 -> 7 -> 4."""
    for _ in range(pools):
        side = math.ceil(side / 2)
    return side


POOLED_SIZES = tuple(pooled_size(IMAGE_SIZE, k) for k in (1, 2, 3))  # (14, 7, 4)
FLAT_FEATURES = CONV_CHANNELS[-1] * POOLED_SIZES[-1] ** 2  # 128 * 4 * 4 = 2048
HIDDEN_UNITS = 625


def keep_mask(n: int, p_keep: float, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """(n,) bool, each True with probability p_keep (to within 2^-15), independently.

    Two values from each 32-bit random number: the CPU's generator draws one number at a time, and torch.rand's
    one float per value was a tenth of a training step. random_ on int32 fills 31 random bits: as two int16
    halves, one takes all 65,536 values, the other (its top bit 0) 0..32,767; each is compared with its own
    threshold.
    """
    pairs = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_(generator=generator)
    full, half = round(p_keep * 65536) - 32768, round(p_keep * 32768)
    first, second = (full, half) if sys.byteorder == "little" else (half, full)
    halves = pairs.view(torch.int16)
    keep = torch.empty(2 * len(pairs), dtype=torch.bool, device=device)
    # Each half compared with its own threshold as a plain strided comparison: one (-1, 2) comparison with a
    # broadcast pair of thresholds took ~2.5x as long, a third of a dropout layer's time.
    torch.lt(halves[0::2], first, out=keep[0::2])
    torch.lt(halves[1::2], second, out=keep[1::2])
    return keep[:n]


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

    @property
    def active(self) -> bool:
        """True when it drops values: in training, with p_keep < 1."""
        return self.training and self.p_keep < 1.0

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        keep = keep_mask(x.numel(), self.p_keep, x.device, self.generator)
        if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
            return keep.as_strided(x.shape, x.stride())  # drawn flat, given x's strides (channels_last too)
        return keep.view(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        # In x's dtype: under bf16 autocast a float32 mask would promote the product back to float32.
        return x * self._mask(x).to(x.dtype).mul_(1.0 / self.p_keep)

    def after_relu(self, x: torch.Tensor) -> torch.Tensor:
        """self(F.relu(x)), the same numbers and gradients, in fewer passes over memory (_ReluDropout)."""
        if not self.active:
            return F.relu(x)
        return _ReluDropout.apply(x, self._mask(x), 1.0 / self.p_keep)

    def extra_repr(self) -> str:
        return f"p_keep={self.p_keep}"


class _ReluDropout(torch.autograd.Function):
    """dropout(relu(x)) as one step: y = where(keep, x, 0), its ReLU and its scale in place.

    Its gradient needs only y: where y > 0 the value was kept and positive, so the gradient is scale times the
    incoming one; elsewhere 0 (a dropped value, or the ReLU's zero). The separate ReLU and dropout each made and kept a
    tensor and a float mask, and each passed over the gradient: an eighth of a training step.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        y = torch.where(keep, x, 0).relu_().mul_(scale)
        ctx.save_for_backward(y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0).mul_(ctx.scale), None, None


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
    if torch.is_grad_enabled() and x.requires_grad:
        return F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
    return _pool_same_inference(x)


def _pool_same_inference(x: torch.Tensor) -> torch.Tensor:
    """pool_same without gradients, the same numbers: the largest of each 2x2 block as three elementwise maxima of
    strided views. max_pool2d reads a 2,000-image batch ~3x slower on this CPU (measured by `python -m cnn bench`'s
    edited-network accuracy); an odd edge is padded with -inf at the bottom/right, which no maximum picks."""
    height, width = x.shape[-2:]
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2), value=float("-inf"))
    return torch.maximum(torch.maximum(x[..., 0::2, 0::2], x[..., 0::2, 1::2]),
                         torch.maximum(x[..., 1::2, 0::2], x[..., 1::2, 1::2]))


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

# The article's FC part on raw pixels: what the convolutions add is what this lacks.
MLP_STAGES: tuple[Stage, ...] = (
    Stage("flatten", "flatten"),  # (N, 784)
    Stage("dropout_input", "dropout", module="dropout_input", row=False),
    Stage("fc", "linear", module="fc"),  # (N, 625)
    Stage("relu_fc", "relu", activation="fc", row=False),
    Stage("dropout_fc", "dropout", module="dropout_hidden", row=False),
    Stage("logits", "linear", module="out", activation="logits"),  # (N, 10)
)

# LeNet-5 (LeCun et al., 1998) as it is usually rebuilt: 5x5 kernels, 6 and 16 maps, FC 120 and 84; ReLU and max.
LENET_STAGES: tuple[Stage, ...] = (
    Stage("conv1", "conv", module="conv1", activation="conv1"),  # (N, 6, 28, 28): padding 2
    Stage("relu1", "relu", activation="relu1"),
    Stage("pool1", "pool", activation="pool1"),  # (N, 6, 14, 14)
    Stage("conv2", "conv", module="conv2", activation="conv2"),  # (N, 16, 10, 10): no padding
    Stage("relu2", "relu", activation="relu2"),
    Stage("pool2", "pool", activation="pool2"),  # (N, 16, 5, 5)
    Stage("flatten", "flatten"),  # (N, 400)
    Stage("fc1", "linear", module="fc1"),  # (N, 120)
    Stage("relu_fc1", "relu", activation="fc1", row=False),
    Stage("fc2", "linear", module="fc2"),  # (N, 84)
    Stage("relu_fc2", "relu", activation="fc2", row=False),
    Stage("logits", "linear", module="out", activation="logits"),  # (N, 10)
)

# The article's network cut after its first block: same conv1, same FC 625 and dropout, no conv2/conv3 and one pool.
ONE_CONV_STAGES: tuple[Stage, ...] = (
    *_conv_block(1, last=True),  # (N, 1, 28, 28) -> (N, 32, 14, 14)
    Stage("flatten", "flatten"),  # (N, 6272)
    Stage("dropout1", "dropout", module="dropout_conv", row=False),
    Stage("fc", "linear", module="fc"),  # (N, 625)
    Stage("relu4", "relu", activation="fc", row=False),
    Stage("dropout4", "dropout", module="dropout_hidden", row=False),
    Stage("logits", "linear", module="out", activation="logits"),  # (N, 10)
)


# One sentence per layer, in words a student can follow. {side}, {item}, {class_word}, {num_classes}, {pixels}, {parts}
# are the model's dataset's (layer_table fills them in): the same network explains itself on MNIST and on clothes.
_INPUT = "A {side}x{side} grey image of {item}: white (1.0) on black (0.0)."
_EXPLANATIONS = {
    "input": _INPUT,
    "conv1": "32 learned 3x3 filters slide over the image; each gives a feature map that is large where its pattern (an edge, a corner) appears.",
    "relu1": "ReLU keeps positive responses and sets negative ones to zero, so a map only says where a pattern is present.",
    "pool1": "2x2 max-pooling keeps the strongest response in each 2x2 block, halving the size (28 -> 14) and tolerating small shifts.",
    "dropout1": "During training, dropout zeroes each value with probability 1 - p_keep_conv ({drop_conv}), so the network cannot rely on any single feature.",
    "conv2": "64 filters, each 3x3 over all 32 maps below, combine edges into larger parts such as curves and corners.",
    "relu2": "ReLU again: negative evidence is cut to zero.",
    "pool2": "Max-pooling halves the size again, 14 -> 7; each value now sees a 10x10 patch of the input (its receptive field).",
    "dropout2": "Dropout again, keeping each value with probability {keep_conv} during training.",
    "conv3": "128 filters, each 3x3 over the 64 maps below, detect large parts: {parts}.",
    "relu3": "ReLU again.",
    "pool3": "Max-pooling 7 -> 4 with TensorFlow 'SAME' padding: the odd last row and column are pooled on their own.",
    "flatten": "The 128 maps of 4x4 are laid out as one vector of 2,048 numbers ({then_dropout_conv}).",
    "fc": "A fully connected layer: each of 625 units weighs all 2,048 features; ReLU follows ({then_dropout_hidden}).",
    "logits": "A fully connected layer to {num_classes} scores, one per {class_word}; softmax turns them into probabilities and training minimises their cross-entropy with the true label.",
}

_SOFTMAX_EXPLANATIONS = {
    "input": _EXPLANATIONS["input"],
    "flatten": "The {side}x{side} pixels are laid out as one vector of {pixels} numbers: the network never sees which pixels are neighbours.",
    "logits": "One weight per pixel and class, plus a bias: {num_classes} scores, one per {class_word}; softmax turns them into probabilities.",
}

_MLP_EXPLANATIONS = {
    "input": _INPUT,
    "flatten": "The pixels are laid out as one vector of {pixels} numbers ({then_dropout_input}): like the softmax, the MLP never sees which pixels are neighbours.",
    "fc": "625 hidden units, each weighing all {pixels} pixels, then ReLU ({then_dropout_hidden}): the article's FC 625, fed raw pixels instead of convolution features. An edge moved by 2 pixels lands on other weights.",
    "logits": "A fully connected layer to {num_classes} scores, one per {class_word}; softmax turns them into probabilities.",
}

_LENET_EXPLANATIONS = {
    "input": _INPUT,
    "conv1": "6 learned 5x5 filters (with a bias each), padded so 28x28 stays 28x28: LeNet-5's first layer (LeCun et al., 1998), with ReLU and max-pooling in place of its tanh and average-pooling.",
    "relu1": "ReLU keeps positive responses and sets negative ones to zero.",
    "pool1": "2x2 max-pooling halves the size, 28 -> 14.",
    "conv2": "16 filters, each 5x5 over the 6 maps below, with no padding: 14 -> 10. Each value now sees a 14x14 patch of the input.",
    "relu2": "ReLU again.",
    "pool2": "Max-pooling halves the size again, 10 -> 5: 16 maps of 5x5.",
    "flatten": "The 16 maps of 5x5 are laid out as one vector of 400 numbers.",
    "fc1": "120 units, each weighing all 400 features, then ReLU.",
    "fc2": "84 units, each weighing the 120 below, then ReLU.",
    "logits": "A fully connected layer to {num_classes} scores, one per {class_word}: about 61,000 weights in all, 1/22 of the article's network.",
}

_ONE_CONV_EXPLANATIONS = {
    "input": _INPUT,
    "conv1": "The article's conv1: 32 learned 3x3 filters; each gives a feature map that is large where its pattern (an edge, a corner) appears.",
    "relu1": "ReLU keeps positive responses and sets negative ones to zero.",
    "pool1": "2x2 max-pooling: 28 -> 14. This is the only pooling: each value sees just a 4x4 patch of the input.",
    "flatten": "The 32 maps of 14x14 are laid out as one vector of 6,272 numbers ({then_dropout_conv}): conv2 and conv3 are gone.",
    "fc": "The article's FC 625, now weighing 6,272 features: 3.9 million weights, 2.9 times the whole article network, to do the combining that conv2 and conv3 did.",
    "logits": "A fully connected layer to {num_classes} scores, one per {class_word}; softmax turns them into probabilities.",
}


class StagedNetwork(nn.Module):
    """A network whose forward passes are read from its declared `stages`; subclasses make the modules.

    grad_cam_stage: the stage whose output Grad-CAM weighs (features() ends there, head() starts after it);
    "" for a network without one.
    """

    stages: tuple[Stage, ...] = ()
    grad_cam_stage: str = ""
    explanations: dict[str, str]  # a sentence per layer-table row, "input" included
    network: str = ""  # its key in NETWORKS
    dataset: str = "mnist"  # the dataset it reads (a DATASETS key): set by build_model, a plain attribute, not state

    def _init_weights(self, init_std: float, init: str, generator: torch.Generator | None) -> None:
        """Every weight ~ N(0, init_std^2) in the order the modules were made, biases 0; "kaiming": He init for
        every conv and linear layer but the last (the ones a ReLU follows)."""
        for name, parameter in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(parameter)
            else:
                nn.init.normal_(parameter, mean=0.0, std=init_std, generator=generator)
        if init == "kaiming":
            layers = [getattr(self, s.module) for s in self.stages if s.kind in ("conv", "linear")]
            for layer in layers[:-1]:
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu", generator=generator)
        elif init != "normal":
            raise ValueError(f"Unknown init {init!r}: use 'normal' or 'kaiming'.")

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
        """Apply stages in order, except that a ReLU followed by a pool runs as pool then ReLU, and a ReLU followed
        by a dropout (after its pool and a flatten, if any) runs as one step with it (Dropout.after_relu).

        relu(maxpool(x)) == maxpool(relu(x)) exactly (both are monotone), and the ReLU then touches
        4x fewer numbers; a ReLU commutes with a flatten, and with a dropout's scaling by 1/p_keep > 0.
        forward_with_activations keeps the article's order to show each step.
        """
        i = 0
        while i < len(stages):
            if stages[i].kind != "relu":
                x = self._run_stage(stages[i], x)
                i += 1
                continue
            after = [stage.kind for stage in stages[i + 1:i + 4]]  # what follows this ReLU
            pooled = after[:1] == ["pool"]
            if pooled:
                x = pool_same(x)
                after = after[1:]
            flattened = after[:1] == ["flatten"]
            if (after[1:2] if flattened else after[:1]) != ["dropout"]:
                x = F.relu(x)  # no dropout to take it: a flatten that follows runs as its own stage
                i += 1 + pooled
                continue
            if flattened:
                x = torch.flatten(x, 1)
            dropout = i + 1 + pooled + flattened  # the dropout's index in stages
            x = getattr(self, stages[dropout].module).after_relu(x)
            i = dropout + 1
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, side, side) float32 in [0, 1] -> logits (N, classes), through every stage."""
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
    network = "cnn"

    def __init__(self, p_keep_conv: float = 0.8, p_keep_hidden: float = 0.5, init_std: float = 0.01,
                 init: str = "normal", generator: torch.Generator | None = None, *,
                 side: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES):
        super().__init__()
        c1, c2, c3 = CONV_CHANNELS
        # skip_init: torch's default init would draw from the global RNG (shared by every thread) only to
        # be overwritten below; every weight is drawn once, from generator.
        self.conv1 = skip_init(nn.Conv2d, 1, c1, KERNEL_SIZE, padding=1, bias=False)  # 'SAME': 28x28 stays 28x28
        self.conv2 = skip_init(nn.Conv2d, c1, c2, KERNEL_SIZE, padding=1, bias=False)
        self.conv3 = skip_init(nn.Conv2d, c2, c3, KERNEL_SIZE, padding=1, bias=False)
        flat = c3 * pooled_size(side, 3) ** 2  # 128 * 4 * 4 = 2,048 for 28x28
        self.fc = skip_init(nn.Linear, flat, HIDDEN_UNITS, bias=False)
        self.out = skip_init(nn.Linear, HIDDEN_UNITS, num_classes, bias=False)
        self.dropout_conv = Dropout(p_keep_conv)
        self.dropout_hidden = Dropout(p_keep_hidden)
        # He initialisation ("kaiming", FAST) for the layers followed by ReLU: signals keep their size from step 1.
        self._init_weights(init_std, init, generator)


class SoftmaxRegression(StagedNetwork):
    """The tutorial's ~92% reference: one linear layer from 784 pixels to 10 logits."""

    stages = SOFTMAX_STAGES
    explanations = _SOFTMAX_EXPLANATIONS
    network = "softmax"

    def __init__(self, init_std: float = 0.0, generator: torch.Generator | None = None, *,
                 side: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES, p_keep_conv: float = 1.0,
                 p_keep_hidden: float = 1.0, init: str = "normal"):
        super().__init__()  # no dropout and one layer: the keep-probabilities and init are accepted, not used
        self.out = skip_init(nn.Linear, side * side, num_classes, bias=True)  # both set below
        if init_std > 0:
            nn.init.normal_(self.out.weight, std=init_std, generator=generator)
        else:  # the tutorial starts from zeros
            nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)


class MLP(StagedNetwork):
    """784 -> 625 -> 10 with the article's dropout and init: the article's network without its convolutions."""

    stages = MLP_STAGES
    explanations = _MLP_EXPLANATIONS
    network = "mlp"

    def __init__(self, p_keep_conv: float = 0.8, p_keep_hidden: float = 0.5, init_std: float = 0.01,
                 init: str = "normal", generator: torch.Generator | None = None, *,
                 side: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.fc = skip_init(nn.Linear, side * side, HIDDEN_UNITS, bias=True)
        self.out = skip_init(nn.Linear, HIDDEN_UNITS, num_classes, bias=True)
        self.dropout_input = Dropout(p_keep_conv)  # the input's dropout plays the conv layers' keep-probability
        self.dropout_hidden = Dropout(p_keep_hidden)
        self._init_weights(init_std, init, generator)


class LeNet5(StagedNetwork):
    """A LeNet-5-style network: conv 5x5 x6 -> pool -> conv 5x5 x16 -> pool -> FC 120 -> FC 84 -> FC 10 (ReLU, max)."""

    stages = LENET_STAGES
    grad_cam_stage = "conv2"
    explanations = _LENET_EXPLANATIONS
    network = "lenet"

    def __init__(self, p_keep_conv: float = 0.8, p_keep_hidden: float = 0.5, init_std: float = 0.01,
                 init: str = "normal", generator: torch.Generator | None = None, *,
                 side: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES):
        super().__init__()  # LeNet-5 had no dropout: the keep-probabilities are accepted and not used
        self.conv1 = skip_init(nn.Conv2d, 1, 6, 5, padding=2)  # 28 -> 28
        self.conv2 = skip_init(nn.Conv2d, 6, 16, 5)  # 14 -> 10
        after_conv2 = pooled_size(side, 1) - 5 + 1  # a 5x5 kernel without padding: 14 -> 10
        flat = 16 * pooled_size(after_conv2, 1) ** 2  # 16 * 5 * 5 = 400
        self.fc1 = skip_init(nn.Linear, flat, 120)
        self.fc2 = skip_init(nn.Linear, 120, 84)
        self.out = skip_init(nn.Linear, 84, num_classes)
        self._init_weights(init_std, init, generator)


class OneConvNet(StagedNetwork):
    """The article's first block alone: conv 3x3 x32 -> ReLU -> pool -> dropout -> FC 625 -> FC 10, no biases."""

    stages = ONE_CONV_STAGES
    grad_cam_stage = "conv1"
    explanations = _ONE_CONV_EXPLANATIONS
    network = "one-conv"

    def __init__(self, p_keep_conv: float = 0.8, p_keep_hidden: float = 0.5, init_std: float = 0.01,
                 init: str = "normal", generator: torch.Generator | None = None, *,
                 side: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES):
        super().__init__()
        c1 = CONV_CHANNELS[0]
        self.conv1 = skip_init(nn.Conv2d, 1, c1, KERNEL_SIZE, padding=1, bias=False)
        self.fc = skip_init(nn.Linear, c1 * pooled_size(side, 1) ** 2, HIDDEN_UNITS, bias=False)  # 32 * 14 * 14
        self.out = skip_init(nn.Linear, HIDDEN_UNITS, num_classes, bias=False)
        self.dropout_conv = Dropout(p_keep_conv)
        self.dropout_hidden = Dropout(p_keep_hidden)
        self._init_weights(init_std, init, generator)


@dataclass(frozen=True)
class NetworkSpec:
    """One network a run can train: its key, its words, and the class that makes it."""

    name: str  # the key in NETWORKS, TrainConfig.architecture and the CLI's --network
    title: str  # in sentences and menus: "the article's CNN"
    summary: str  # its layers in one line
    lesson: str  # why it is here: what comparing it with the article's CNN teaches
    make: Callable[..., StagedNetwork]


NETWORKS: dict[str, NetworkSpec] = {spec.name: spec for spec in (
    NetworkSpec("cnn", "the article's CNN", "conv 3x3 x32, x64, x128, each with ReLU, 2x2 pool and dropout; FC 625; FC 10",
                "The tutorial's network: about 99% on MNIST.", ConvNet),
    NetworkSpec("softmax", "softmax regression", "784 pixels -> 10 scores, one weight per pixel and class",
                "The tutorial's baseline: about 92% on MNIST, with no hidden layer at all.", SoftmaxRegression),
    NetworkSpec("mlp", "an MLP", "784 pixels -> FC 625 (ReLU, dropout) -> FC 10",
                "The article's fully connected part on raw pixels: what the convolutions add, especially when an "
                "image moves.", MLP),
    NetworkSpec("lenet", "a LeNet-5-style network", "conv 5x5 x6, pool, conv 5x5 x16, pool, FC 120, FC 84, FC 10",
                "The 1998 classic: two convolutions and 61,706 weights, 1/22 of the article's. Its small layers barely "
                "move from the tutorial's tiny starting weights, so its recipe is FAST (He's initialisation).",
                LeNet5),
    NetworkSpec("one-conv", "the article's first block alone", "conv 3x3 x32, ReLU, 2x2 pool, dropout; FC 625; FC 10",
                "The article's network with conv2, conv3 and two pools removed: 2.9 times the weights, each feature "
                "seeing 4x4 pixels instead of 22x22, and less tolerance of a shifted digit. Depth, not size, is "
                "what the article's layers buy.", OneConvNet),
)}


def network_spec(name: str) -> NetworkSpec:
    """The network called name; ValueError with the choices otherwise."""
    try:
        return NETWORKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"There is no network called {str(name)[:40]!r}: choose one of {', '.join(NETWORKS)}.") from None


# Which keep-probability each Dropout module of a network uses, and its name on the Train form.
_KEEP_FIELDS = {"dropout_conv": ("p_keep_conv", "Keep-probability, conv"),
                "dropout_input": ("p_keep_conv", "Keep-probability, input pixels"),
                "dropout_hidden": ("p_keep_hidden", "Keep-probability, hidden")}


def keep_probabilities(network: str) -> dict[str, str]:
    """{TrainConfig field: its label} of the keep-probabilities network's dropout uses, from its stages: the article's
    CNN both, the MLP "input pixels" and "hidden", LeNet and softmax regression none (they have no dropout)."""
    stages = network_spec(network).make.stages
    return dict(_KEEP_FIELDS[stage.module] for stage in stages if stage.kind == "dropout")


def stage_names(model: nn.Module) -> tuple[str, ...]:
    """The names of model's declared stages, in order; () for a network that declares none."""
    return tuple(stage.name for stage in getattr(model, "stages", ()))


def has_stage(model: nn.Module, name: str) -> bool:
    """Whether model declares a stage called name ("conv1", "conv3", ...): what the pages ask before showing it."""
    return name in stage_names(model)


def build_model(config, generator: torch.Generator | None = None) -> StagedNetwork:
    """The network a TrainConfig describes (config.architecture, sized for config.dataset), its weights drawn from
    generator (None: torch's global RNG)."""
    spec, data = network_spec(config.architecture), dataset_spec(getattr(config, "dataset", "mnist"))
    model = spec.make(p_keep_conv=config.p_keep_conv, p_keep_hidden=config.p_keep_hidden, init_std=config.init_std,
                      init=config.init, generator=generator, side=data.side, num_classes=data.num_classes)
    model.dataset = data.name
    return model


def model_spec(model: nn.Module) -> DatasetSpec:
    """The DatasetSpec of the dataset model reads (model.dataset; MNIST for a model that does not say)."""
    return DATASETS.get(getattr(model, "dataset", "mnist"), MNIST_SPEC)


def dataset_words(model: nn.Module) -> dict:
    """What layer_table's sentences fill in from the model's dataset: side, item, class_word, num_classes, pixels, parts."""
    data = model_spec(model)
    return {"side": data.side, "item": data.item, "class_word": data.class_word, "num_classes": data.num_classes,
            "pixels": f"{data.side * data.side:,}", "parts": data.parts}


DROPOUT_OFF = "Dropout, off in this model: it was trained with keep-probability 1, so every value passed through."


def dropout_words(model: StagedNetwork) -> dict:
    """What layer_table's sentences say of model's dropouts, from its own keep-probabilities (a checkpoint's model
    has those it was trained with): for each Dropout a dropout stage names ("dropout_conv": "conv"), keep_conv "0.8",
    drop_conv "0.2" and then_dropout_conv "then dropout, keep 0.8", or "no dropout" words for a keep of 1."""
    words = {}
    for stage in model.stages:
        if stage.kind == "dropout" and stage.module:
            keep, key = getattr(model, stage.module).p_keep, stage.module.removeprefix("dropout_")
            words[f"keep_{key}"], words[f"drop_{key}"] = f"{keep:g}", f"{1 - keep:.2g}"
            words[f"then_dropout_{key}"] = (f"then dropout, keep {keep:g}" if keep < 1
                                            else "no dropout: trained with keep 1")
    return words


def _explanation(model: StagedNetwork, name: str, words: dict) -> str:
    """layer_table's sentence for the row name: DROPOUT_OFF for a dropout that keeps everything."""
    stage = next((stage for stage in model.stages if stage.name == name), None)
    if stage is not None and stage.kind == "dropout" and getattr(model, stage.module).p_keep >= 1:
        return DROPOUT_OFF
    return model.explanations[name].format(**words)


def receptive_fields(model: StagedNetwork) -> dict[str, int]:
    """{stage name: side of the input patch one of its values sees} for the stages before flatten, from the stages:
    a kxk convolution widens it by (k - 1) x the stride so far, a 2x2 pool by 1 x it, then doubles the stride.
    The article's: conv1 3, pool1 4, conv2 8, pool2 10, conv3 18, pool3 22 (a layer after flatten sees everything)."""
    fields, size, stride = {}, 1, 1
    for stage in model.stages:
        if stage.kind == "flatten":
            break
        if stage.kind == "conv":
            conv = getattr(model, stage.module)
            size += (conv.kernel_size[0] - 1) * stride
            stride *= conv.stride[0]
        elif stage.kind == "pool":  # pool_same: 2x2, stride 2
            size += stride
            stride *= 2
        fields[stage.name] = size
    return fields


def layer_table(model: StagedNetwork | None = None) -> list[dict]:
    """Per declared stage that is a row: name, output shape (C, H, W) or (features,), parameter count, a one-sentence
    explanation (in the words of its dataset and its own keep-probabilities) and the side of the input patch one of
    its values sees (receptive_field; the whole image after flatten), after a first row for the input. None: the
    article's network."""
    model = model if model is not None else ConvNet()
    device = next(model.parameters()).device
    words = {**dataset_words(model), **dropout_words(model)}
    x = torch.zeros(1, 1, words["side"], words["side"], device=device)
    rows = [("input", tuple(x.shape[1:]), 0)]
    with torch.no_grad():
        for stage in model.stages:
            if stage.kind != "dropout":  # dropout keeps the shape; skipping it draws no random numbers
                x = model._run_stage(stage, x)
            params = sum(p.numel() for p in getattr(model, stage.module).parameters()) if stage.module else 0
            if stage.row:
                rows.append((stage.name, tuple(x.shape[1:]), params))
    fields = receptive_fields(model)
    return [
        {"name": name, "shape": list(shape), "params": params, "explanation": _explanation(model, name, words),
         "receptive_field": 1 if name == "input" else fields.get(name, words["side"])}  # after flatten: everything
        for name, shape, params in rows
    ]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
