"""Training configurations: a frozen dataclass and the named presets (ARTICLE, FAST, SOFTMAX)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    name: str = "article"  # preset name, recorded on the checkpoint card
    architecture: str = "cnn"  # the network, a key of cnn.model.NETWORKS: "cnn" (the article's), "softmax", "mlp", ...
    dataset: str = "mnist"  # what it learns, a key of cnn.data.DATASETS: "mnist" or "fashion"
    optimizer: str = "rmsprop_tf"  # "rmsprop_tf" (TensorFlow 1 RMSProp), "adam" or "sgd"
    learning_rate: float = 0.001  # peak learning rate
    rmsprop_decay: float = 0.9  # TF1 RMSProp decay of the mean squared gradient
    rmsprop_epsilon: float = 1e-10  # TF1 RMSProp epsilon, added inside the square root
    schedule: str = "constant"  # "constant" or "onecycle" (warm up, then cosine down to ~0)
    batch_size: int = 128  # images per training step
    epochs: int = 10  # passes over the 60,000 training images
    epoch_images: int = 0  # images one epoch trains on, a fresh random draw each epoch; 0: the whole training set
    p_keep_conv: float = 0.8  # keep-probability of the dropout after pool1, pool2 and flatten
    p_keep_hidden: float = 0.5  # keep-probability of the dropout after FC 625
    init_std: float = 0.01  # every weight starts ~ N(0, init_std^2), as in the tutorial
    label_smoothing: float = 0.0  # 0 = plain softmax cross-entropy (the tutorial's loss)
    init: str = "normal"  # "normal" (the tutorial's) or "kaiming" (He init for the ReLU layers; FAST only)
    seed: int = 0  # seeds weights, shuffling and dropout; same seed -> same metrics on CPU
    eval_every: int = 100  # steps between quick evaluations on the fixed 1,000-image test subset
    eval_subset: int = 1000  # size of that fixed test subset
    precision: str = "fp32"  # "fp32", or "bf16": bfloat16 autocast where the CPU (AVX-512 BF16, AMX) or GPU runs it natively

    def problem(self) -> str:
        """Why this config cannot be trained, as a sentence ("" when it can).

        The Train form's widgets have limits, but a browser can send any value over the WebSocket: the server
        checks again before it queues a run.
        """
        from .data import DATASETS
        from .model import NETWORKS

        checks = (
            (isinstance(self.architecture, str) and self.architecture in NETWORKS, f"the network must be one of {', '.join(NETWORKS)}"),
            (isinstance(self.dataset, str) and self.dataset in DATASETS, f"the dataset must be one of {', '.join(DATASETS)}"),
            (self.architecture == "softmax" or not _number(self.init_std, 0.0, 0.0),
             "a network with hidden layers cannot start from all-zero weights (every unit would learn the same); "
             "use the softmax baseline's recipe only for softmax regression"),
            (self.optimizer in ("rmsprop_tf", "adam", "sgd"), "the optimizer must be rmsprop_tf, adam or sgd"),
            (self.schedule in ("constant", "onecycle"), "the schedule must be constant or onecycle"),
            (self.init in ("normal", "kaiming"), "the initialisation must be normal or kaiming"),
            (self.precision in ("fp32", "bf16"), "the precision must be fp32 or bf16"),
            (_whole(self.epochs, 1, 1000), "epochs must be a whole number from 1 to 1,000"),
            (_whole(self.batch_size, 1, 4096), "the batch size must be a whole number from 1 to 4,096"),
            (_whole(self.seed, 0, 2**31 - 1), "the seed must be a whole number from 0 to 2,147,483,647"),
            (_whole(self.epoch_images, 0, 10**9), "the images per epoch must be a whole number (0: all of them)"),
            (_whole(self.eval_every, 0, 10**9) and _whole(self.eval_subset, 1, 10**9),
             "the evaluation settings must be whole numbers"),
            (_number(self.learning_rate, 0.0, 10.0) and self.learning_rate > 0, "the learning rate must be above 0 and at most 10"),
            (_number(self.p_keep_conv, 0.0, 1.0) and self.p_keep_conv > 0, "keep-probabilities must be above 0 and at most 1"),
            (_number(self.p_keep_hidden, 0.0, 1.0) and self.p_keep_hidden > 0, "keep-probabilities must be above 0 and at most 1"),
            (_number(self.rmsprop_decay, 0.0, 1.0) and _number(self.rmsprop_epsilon, 0.0, 1.0),
             "RMSProp's decay and epsilon must be between 0 and 1"),
            (_number(self.init_std, 0.0, 10.0), "the initial weights' spread must be between 0 and 10"),
            (_number(self.label_smoothing, 0.0, 0.99), "label smoothing must be between 0 and 0.99"),
        )
        for ok, sentence in checks:
            if not ok:
                return f"This run cannot start: {sentence}."
        return ""

    def images_per_epoch(self, train_size: int) -> int:
        """How many of train_size training images one epoch trains on."""
        return min(self.epoch_images, train_size) if self.epoch_images else train_size

    def steps_per_epoch(self, train_size: int) -> int:
        """Training steps in one epoch: ceil(images per epoch / batch size)."""
        return math.ceil(self.images_per_epoch(train_size) / self.batch_size)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (the config itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def form_config(base: TrainConfig, **values) -> TrainConfig:
    """base with the Train form's values (epochs, batch_size, learning_rate, seed, p_keep_conv, p_keep_hidden).

    Whole-number fields must hold whole numbers (a forged 2.5 or NaN is refused, not rounded); ValueError with
    a sentence for anything base.replace(...).problem() refuses.
    """
    changes = {}
    for name, value in values.items():
        default = getattr(base, name)
        if isinstance(default, int) and isinstance(value, float) and value.is_integer():
            value = int(value)  # number_input sends whole numbers as floats over the wire
        changes[name] = value
    config = base.replace(**changes)
    if config.problem():
        raise ValueError(config.problem())
    return config


def _whole(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value, low: float, high: float) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and low <= value <= high)


# Exactly the tutorial: RMSProp(lr 0.001, decay 0.9) as TensorFlow 1 defines it, batch 128, keep 0.8/0.5.
ARTICLE = TrainConfig()

# The same network (layers, no biases), a faster recipe: He initialisation for the ReLU layers, Adam with a one-cycle
# schedule up to lr 0.01, batch 96, no dropout, label smoothing 0.1, bf16 where the CPU runs it natively, and one
# pass over a fresh random half of the training set (30,000 images, 313 steps). On this 2-core CPU, seeds 0-6:
# 99.03-99.19% (README "Presets"), ~10% faster end to end than batch 64 at lr 0.006 (469 steps; 99.05-99.21%, FAST
# until 2026-11-29): a bf16 step of 96 images ran ~3,850 images a second against ~3,400 for 64. FAST until 2026-11-27
# (batch 128, lr 0.01, all 60,000 images) gave 99.29-99.34% in 13-23 s; batch 128 on 30,000 images gave 98.96% (lr
# 0.01, seed 2) and 98.95% (lr 0.006, seed 0). FAST trains every network.
FAST = TrainConfig(
    name="fast",
    optimizer="adam",
    learning_rate=0.01,
    schedule="onecycle",
    batch_size=96,
    epochs=1,
    epoch_images=30_000,
    p_keep_conv=1.0,
    p_keep_hidden=1.0,
    label_smoothing=0.1,
    init="kaiming",
    precision="bf16",
)

# FAST on a CUDA GPU: there a step is the host launching ~120 small kernels (~5 ms at batch 64, ~0.6 ms of it on the
# GPU), so fewer, larger steps: batch 256 gave 99.14%, 99.24%, 99.21% in 1.2-1.3 s of training on an H100 (seeds 0-2;
# README "On a CUDA GPU"), batch 128 99.28-99.31% in 1.6-1.8 s, each on all 60,000 images. The CLI suggests it on a
# GPU; FAST stays the CPU's.
FAST_ON_GPU = {"batch_size": 256, "learning_rate": 0.01, "epoch_images": 0, "p_keep_conv": 1.0, "p_keep_hidden": 1.0}

# The tutorial's reference point: plain softmax regression on the 784 pixels (~92%).
SOFTMAX = TrainConfig(
    name="softmax",
    architecture="softmax",
    optimizer="sgd",
    learning_rate=0.5,
    batch_size=100,
    epochs=5,
    p_keep_conv=1.0,
    p_keep_hidden=1.0,
    init_std=0.0,
)

PRESETS: dict[str, TrainConfig] = {"article": ARTICLE, "fast": FAST, "softmax": SOFTMAX}

# A network's first preset is its default recipe: ARTICLE's for most networks; the softmax baseline's for softmax
# regression (SGD from zeros would leave a hidden layer's units identical, so no other network takes it); FAST's
# for LeNet, whose small 5x5 layers barely move from the tutorial's N(0, 0.01) start (82.5% after one ARTICLE
# epoch, 98.8% after one FAST epoch, seed 0). FAST also trains every network.
NETWORK_PRESETS: dict[str, tuple[str, ...]] = {"softmax": ("softmax", "article", "fast"), "lenet": ("fast", "article")}
DEFAULT_NETWORK_PRESETS = ("article", "fast")


def presets_for(network: str) -> tuple[str, ...]:
    """The presets that can train network, its default first."""
    return NETWORK_PRESETS.get(network, DEFAULT_NETWORK_PRESETS)


def preset(name: str) -> TrainConfig:
    """The named preset; a clear error for an unknown name."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}.") from None


# What a run may differ in and still be its preset's recipe: what it learns and on which network, how long, its seed,
# and how often the live chart is measured.
NOT_THE_RECIPE = frozenset({"name", "architecture", "dataset", "epochs", "seed", "eval_every", "eval_subset"})


def preset_label(config: dict | None) -> str:
    """The preset a run's config started from, as a run list says it: "fast", or "fast, changed" when its recipe
    differs from that preset's today (a batch or learning rate set in the form, or a run of an older FAST). Epochs,
    seed, network and dataset are not counted; FAST on a GPU (FAST_ON_GPU) is FAST. "?" for a config with no name."""
    config = config if isinstance(config, dict) else {}
    name = config.get("name")
    if not isinstance(name, str) or not name:
        return "?"
    base = PRESETS.get(name)
    if base is None:
        return name[:20]
    defaults = TrainConfig().to_dict()  # a card older than a field trained with the field's default
    recipe = {key: config.get(key, defaults[key]) for key in defaults if key not in NOT_THE_RECIPE}
    candidates = [base, base.replace(**FAST_ON_GPU)] if name == "fast" else [base]
    same = [{key: value for key, value in candidate.to_dict().items() if key not in NOT_THE_RECIPE}
            for candidate in candidates]
    return name if recipe in same else f"{name}, changed"
