"""Training configurations: a frozen dataclass and the named presets (ARTICLE, FAST, SOFTMAX)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    name: str = "article"  # preset name, recorded on the checkpoint card
    architecture: str = "cnn"  # "cnn" (the tutorial's network) or "softmax" (784 -> 10 regression)
    optimizer: str = "rmsprop_tf"  # "rmsprop_tf" (TensorFlow 1 RMSProp), "adam" or "sgd"
    learning_rate: float = 0.001  # peak learning rate
    rmsprop_decay: float = 0.9  # TF1 RMSProp decay of the mean squared gradient
    rmsprop_epsilon: float = 1e-10  # TF1 RMSProp epsilon, added inside the square root
    schedule: str = "constant"  # "constant" or "onecycle" (warm up, then cosine down to ~0)
    batch_size: int = 128  # images per training step
    epochs: int = 10  # passes over the 60,000 training images
    p_keep_conv: float = 0.8  # keep-probability of the dropout after pool1, pool2 and flatten
    p_keep_hidden: float = 0.5  # keep-probability of the dropout after FC 625
    init_std: float = 0.01  # every weight starts ~ N(0, init_std^2), as in the tutorial
    label_smoothing: float = 0.0  # 0 = plain softmax cross-entropy (the tutorial's loss)
    init: str = "normal"  # "normal" (the tutorial's) or "kaiming" (He init for the ReLU layers; FAST only)
    seed: int = 0  # seeds weights, shuffling and dropout; same seed -> same metrics on CPU
    eval_every: int = 100  # steps between quick evaluations on the fixed 1,000-image test subset
    eval_subset: int = 1000  # size of that fixed test subset

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (the config itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# Exactly the tutorial: RMSProp(lr 0.001, decay 0.9) as TensorFlow 1 defines it, batch 128, keep 0.8/0.5.
ARTICLE = TrainConfig()

# The same network (layers, no biases), a faster recipe for one epoch: He initialisation for the ReLU
# layers, Adam with a one-cycle schedule, batch 64, lighter dropout and label smoothing 0.1. Each of
# these was measured on its own and together (see the README); only together do they pass 99.0%.
FAST = TrainConfig(
    name="fast",
    optimizer="adam",
    learning_rate=0.003,
    schedule="onecycle",
    batch_size=64,
    epochs=1,
    p_keep_conv=0.9,
    p_keep_hidden=0.75,
    label_smoothing=0.1,
    init="kaiming",
)

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


def preset(name: str) -> TrainConfig:
    """The named preset; a clear error for an unknown name."""
    try:
        return PRESETS[name.lower()]
    except KeyError:
        raise ValueError(f"Unknown preset {name!r}: choose one of {', '.join(PRESETS)}.") from None
