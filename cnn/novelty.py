"""Is this one digit (one piece of clothing) at all? An out-of-distribution score on the features the network's
classifier reads, fitted on the training images of the model's own dataset.

The network must answer one of 0-9 for anything, and it is often "100% sure" of a letter A (a 4) or a star.
Its softmax cannot tell; where the input sits among real digits in the network's own feature space can.

Features (feature_layer, read from the network's declared stages): the conv maps the fully connected layers read
(the last activation before "flatten") when they are at most MAX_FEATURES numbers, else the last hidden layer.
The article's CNN: pool3's 2,048; LeNet: pool2's 400; the first block alone: its 6,272 maps are too many for a
covariance, so FC 625; the MLP: FC 625. The softmax baseline has no hidden layer: it gets no check, and the page
says so (no_check_sentence). For the article's CNN:
Measured on the bundled model (pen-drawn letters, stars, "#", hearts, squares, each jittered, against 1,000 real
MNIST test digits drawn back on the canvas), these separate far better than FC 625's activations: with 99% of the
digits accepted, 96% of the non-digits were refused, against 79-84% with FC 625 and 81% with pool2's 3,136.

Score: the relative Mahalanobis distance (Ren et al. 2021, "A simple fix to Mahalanobis distance"): the squared
distance to the nearest class mean, with one covariance shared by the ten classes, minus the squared distance to
the mean of all digits with their overall covariance. The second term removes what every image has far from the
mean (a thick stroke, a large digit), so what is left is "unlike any one digit". Both covariances are shrunk
towards a multiple of the identity (SHRINKAGE): 2,048 dimensions from 4,000 images.

Threshold: the ACCEPTED_QUANTILE of the same score on held-out MNIST test digits the fit never saw. Drawn digits
score lower than raw MNIST (preprocessing makes them regular), so 98% of raw ones is ~99.5% of drawn ones. With the
bundled model, through the Draw page's whole chain (shape and stroke checks first): 5 of 1,000 test digits drawn
on the canvas refused, 0 of 120 pen-drawn digits (12 shapes, jittered), 128 of 130 jittered non-digits refused.
The other networks and Fashion-MNIST use the same score and quantile, measured only on held-out test images.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from .data import MNIST_SPEC, DatasetSpec
from .drawing import FIELD, LruCache
from .explain import model_spec

LOG = logging.getLogger(__name__)

FIT_IMAGES = 4_000  # MNIST training images the class means and covariances come from (first 4,000: ~400 per digit)
# Held-out MNIST test digits the threshold comes from: every fifth, starting at 1 (2,000 spread over the whole
# test set: its first 5,000 are cleaner than its last 5,000, says MNIST's page). Tests measure the other 8,000.
THRESHOLD_DIGITS = slice(1, None, 5)
ACCEPTED_QUANTILE = 0.98  # accept 98% of held-out real MNIST digits (drawn ones pass more often: see tests)
SHRINKAGE = 0.2  # covariance = (1 - s) * sample covariance + s * (its mean variance) * I; 0.2 measured best of 0.1-0.4
BATCH = 500  # images per forward pass while fitting: bounded memory (~40 MB of activations)
CACHED_MODELS = 4  # fitted checkpoints kept: each holds two 2048x2048 float32 matrices (32 MB)
MAX_FEATURES = 2_048  # conv features with more numbers than this are not used: a DxD covariance costs D^2 * 8 bytes

NOT_A_DIGIT = ("That doesn't look like one digit, so the network's answer would mean nothing: the network must "
               "pick one of 0-9 even for a letter or a scribble. Draw one digit, large.")


def not_a_digit_sentence(spec: DatasetSpec = MNIST_SPEC) -> str:
    """What the Draw page says when the network's features say the drawing is unlike any of spec's images."""
    if spec.preparation == "digit":
        return NOT_A_DIGIT
    thing = spec.item_noun
    return (f"That doesn't look like any {thing}, so the network's answer would mean nothing: the network must "
            f"pick one of its {spec.num_classes} {spec.classes_word} even for a scribble. Draw {spec.item}, large.")


def feature_layer(stages, sizes: dict[str, int]) -> str | None:
    """The activation the check reads, from declared stages and each activation's size (numbers per image): the
    last one before "flatten" if it has at most MAX_FEATURES numbers, else the last hidden one; None without either.
    """
    names = [stage.name for stage in stages]
    flatten = names.index("flatten") if "flatten" in names else 0
    maps = [stage.activation for stage in stages[:flatten] if stage.activation]
    hidden = [stage.activation for stage in stages[flatten:-1] if stage.activation]  # the last stage gives logits
    if maps and sizes[maps[-1]] <= MAX_FEATURES:
        return maps[-1]
    return hidden[-1] if hidden else None


_LAYERS: "weakref.WeakKeyDictionary[nn.Module, str | None]" = weakref.WeakKeyDictionary()
_LAYERS_LOCK = threading.Lock()


def novelty_layer(model: nn.Module) -> str | None:
    """feature_layer of model ("pool3" for the article's CNN, "fc" for the MLP, None for softmax regression).

    Found once per model object (its sizes, from a pass over one blank image), then kept while the model lives:
    the Draw page asks for every stroke of every session, and models are never changed in place (experiments
    change copies)."""
    with _LAYERS_LOCK:
        if model in _LAYERS:
            return _LAYERS[model]
    stages = getattr(model, "stages", ())
    layer = None
    if stages:
        side = model_spec(model).side
        with torch.inference_mode():
            acts = model.forward_with_activations(torch.zeros(1, 1, side, side))
        layer = feature_layer(stages, {name: value[0].numel() for name, value in acts.items()})
    with _LAYERS_LOCK:
        _LAYERS[model] = layer
    return layer


def no_check_sentence(model: nn.Module) -> str | None:
    """The honest sentence for a model that gets no check (no hidden layer to compare with), else None."""
    if novelty_layer(model) is not None:
        return None
    spec = model_spec(model)
    thing = "digit" if spec.preparation == "digit" else spec.item_noun
    return (f"This network has no hidden layer, so this page cannot check whether a drawing looks like a {thing} "
            "at all: it reads whatever you draw.")


def digit_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """(N, 1, side, side) float32 in [0, 1] -> (N, D) float32: the novelty_layer's activation, flattened (the
    article's CNN: conv3's pooled maps, D = 128 * 4 * 4 = 2048); None for a network without one.

    forward_with_activations, not a hook: one shared model serves many sessions at once (see explain.grad_cam).
    The model must be in eval mode (dropout off), as every model the app loads is.
    """
    if not getattr(model, "stages", ()):
        return None
    with torch.inference_mode():
        return _features(model, model.forward_with_activations(x))


def _features(model: nn.Module, acts: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """digit_features from forward_with_activations' activations of model."""
    layer = feature_layer(model.stages, {name: value[0].numel() for name, value in acts.items()})
    return None if layer is None else acts[layer].flatten(1).float()


def _batched_features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 2048) float32, BATCH images at a time."""
    parts = [digit_features(model, images[i:i + BATCH].float().div(255.0).unsqueeze(1))
             for i in range(0, len(images), BATCH)]
    return torch.cat(parts)


def shrunk_whitener(covariance: torch.Tensor, shrinkage: float = SHRINKAGE) -> torch.Tensor:
    """(D, D) covariance -> (D, D) float32 W with W C W^T = I for C shrunk towards its mean variance times I.

    Then the squared Mahalanobis distance of a difference d is |W d|^2. Cholesky in float64: C is well
    conditioned after shrinkage, but 2,048 dimensions of float32 would lose digits in the inverse.
    """
    c = covariance.double()
    size = c.shape[0]
    variance = max(float(torch.trace(c)) / size, 1e-12)  # > 0 even if every feature were constant (dead units)
    shrunk = (1 - shrinkage) * c + shrinkage * variance * torch.eye(size, dtype=torch.float64)
    lower = torch.linalg.cholesky(shrunk)
    return torch.linalg.solve_triangular(lower, torch.eye(size, dtype=torch.float64), upper=False).float()


@dataclass(frozen=True)
class NoveltyModel:
    """A fitted "is this like a digit?" score for one checkpoint; read-only, shared by every session."""

    class_whitener: torch.Tensor  # (D, D): whitens by the covariance shared by the ten digits
    class_means: torch.Tensor  # (10, D): each digit's mean feature vector, already whitened
    all_whitener: torch.Tensor  # (D, D): whitens by the covariance of all digits together
    all_mean: torch.Tensor  # (D,): the mean of all digits, already whitened
    threshold: float  # scores above this are refused
    fit_images: int  # training images the means and covariances come from
    threshold_images: int  # held-out digits the threshold comes from
    seconds: float  # how long fitting took

    def __post_init__(self):
        # The score of f is  min_k |W f - m_k|^2 - |A f - a|^2
        #                  = f^T (W^T W - A^T A) f + min_k (|m_k|^2 - 2 (W^T m_k)^T f) - |a|^2 + 2 (A^T a)^T f:
        # one (D, D) product per image instead of two (a stroke waited ~11 ms for them). Formed in float64.
        w, a = self.class_whitener.double(), self.all_whitener.double()
        means, mean = self.class_means.double(), self.all_mean.double()
        object.__setattr__(self, "_quadratic", (w.T @ w - a.T @ a).float())  # (D, D), symmetric
        object.__setattr__(self, "_to_means", (means @ w).float())  # (K, D): rows W^T m_k
        object.__setattr__(self, "_means_squared", (means ** 2).sum(dim=1).float())  # (K,)
        object.__setattr__(self, "_to_mean", (mean @ a).float())  # (D,): A^T a
        object.__setattr__(self, "_mean_squared", float((mean ** 2).sum()))

    def feature_scores(self, features: torch.Tensor) -> torch.Tensor:
        """(N, D) features -> (N,) relative Mahalanobis scores: higher is less like any digit."""
        quadratic = ((features @ self._quadratic) * features).sum(dim=1)
        nearest = (self._means_squared - 2 * features @ self._to_means.T).min(dim=1).values
        return quadratic + nearest + 2 * features @ self._to_mean - self._mean_squared

    def scores(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) float32 in [0, 1] -> (N,) scores; model: the checkpoint this was fitted for."""
        return self.feature_scores(digit_features(model, x))

    def score(self, model: nn.Module, x: torch.Tensor) -> float:
        """(1, 1, 28, 28) float32 in [0, 1] -> its score."""
        return float(self.scores(model, x)[0])

    def accepts_features(self, features: torch.Tensor) -> bool:
        """Whether one image, by its (1, D) features, is as digit-like as ACCEPTED_QUANTILE of real held-out digits."""
        return float(self.feature_scores(features)[0]) <= self.threshold


def fit_features(features: torch.Tensor, labels: torch.Tensor, held_out: torch.Tensor) -> NoveltyModel:
    """Fit the score on (N, D) float32 features of real digits with their (N,) labels; the threshold is the
    ACCEPTED_QUANTILE of the scores of (M, D) held_out features (digits the fit never saw)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    present = torch.unique(labels)  # sorted; a small synthetic set may lack a digit
    means = torch.stack([features[labels == digit].mean(dim=0) for digit in present.tolist()])  # (K, D)
    within = features - means[torch.searchsorted(present, labels)]  # each image minus its digit's mean
    class_whitener = shrunk_whitener(within.T @ within / len(features))
    overall = features.mean(dim=0)
    spread = features - overall
    all_whitener = shrunk_whitener(spread.T @ spread / len(features))
    unthresholded = NoveltyModel(class_whitener, means @ class_whitener.T, all_whitener, all_whitener @ overall,
                                 threshold=float("inf"), fit_images=len(features), threshold_images=len(held_out),
                                 seconds=0.0)
    threshold = float(torch.quantile(unthresholded.feature_scores(held_out).double(), ACCEPTED_QUANTILE))
    return replace(unthresholded, threshold=threshold)


def novelty_model(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  held_out: torch.Tensor) -> NoveltyModel | None:
    """Fit the score for model: images (N, 28, 28) uint8 and labels (N,) for the means and covariances,
    held_out (M, 28, 28) uint8 real digits (none of them in images) for the threshold. None without a layer to read
    (novelty_layer).

    6,000 forward passes (~4.6 s) and two 2048x2048 covariances and inverses (~4.1 s): ~9-11 s on one core of the
    shared 2-core machine under a load of 5-8; once per checkpoint (cached_novelty_model).
    """
    if novelty_layer(model) is None:
        return None
    start = time.perf_counter()
    fitted = fit_features(_batched_features(model, images), labels, _batched_features(model, held_out))
    return replace(fitted, seconds=time.perf_counter() - start)


_FITTED = LruCache(CACHED_MODELS)  # id(model) -> (weak reference to the model, its NoveltyModel or None)
_FITTING = threading.Lock()  # one fit at a time: two sessions' first strokes share the first fit
_STARTED: set[int] = set()  # id()s of models being fitted in the background (guarded by _STARTED_LOCK)
_STARTED_LOCK = threading.Lock()


def _lookup(model: nn.Module) -> tuple[bool, NoveltyModel | None]:
    """(True, fitted or None) when model was fitted already; the weak reference tells a new model that got an old
    one's id() from the old one."""
    found, entry = _FITTED.get(id(model))
    return (True, entry[1]) if found and entry[0]() is model else (False, None)


def check_dataset(model: nn.Module, data) -> None:
    """ValueError unless data (a cnn.data.ImageDataset) is the dataset model reads: the check is fitted on the
    model's own training images (a Fashion model's features of digits would call every T-shirt unlike anything)."""
    spec = getattr(data, "spec", MNIST_SPEC)
    if spec.name != model_spec(model).name:
        raise ValueError(f"This model reads {model_spec(model).title}, but the check was given {spec.title}.")


def cached_novelty_model(model: nn.Module, data, wait: bool = True) -> NoveltyModel | None:
    """novelty_model for model on its dataset (data: its cnn.data.ImageDataset, see check_dataset), fitted once per
    model object and kept.

    The app's models are loaded once per checkpoint and never changed, so the model object stands for its
    checkpoint. wait=False never blocks (a page's rerun must not wait ~10 s): before the fit is ready it starts
    it in a background thread and returns None, as for a model that gets no check. A fit that fails (a
    degenerate model) is kept as None too: the check is skipped, not retried on every stroke.
    """
    check_dataset(model, data)
    found, fitted = _lookup(model)
    if found:
        return fitted
    if not wait:
        with _STARTED_LOCK:
            if id(model) in _STARTED:
                return None
            _STARTED.add(id(model))
        # Not a daemon (said outright: a thread inherits it from a daemon script thread): a daemon thread still in
        # torch when the interpreter exits aborts the process (exit 134).
        threading.Thread(target=_fit_in_background, args=(model, data), name="novelty-fit", daemon=False).start()
        return None
    with _FITTING:
        found, fitted = _lookup(model)  # another session may have fitted it while this one waited
        if not found:
            try:
                fitted = novelty_model(model, data.train_images[:FIT_IMAGES], data.train_labels[:FIT_IMAGES],
                                       data.test_images[THRESHOLD_DIGITS])
            except (RuntimeError, ValueError):  # e.g. torch.linalg.LinAlgError: no covariance to invert
                fitted = None
            _FITTED.put(id(model), (weakref.ref(model), fitted))
    return fitted


def _fit_in_background(model: nn.Module, data) -> None:
    try:
        fitted = cached_novelty_model(model, data, wait=True)
        if fitted is not None:  # the server's log says when drawings start to be checked (a test waits for it)
            LOG.info("The not-a-digit check is ready for a model (fitted in %.1f s).", fitted.seconds)
    finally:
        with _STARTED_LOCK:
            _STARTED.discard(id(model))


def not_a_digit(model: nn.Module, image: np.ndarray, data, wait: bool = True) -> str | None:
    """The sentence when the network's features say a (28, 28) uint8 image (white on black, as preprocessed for
    the network) is unlike any image of its dataset (not_a_digit_sentence of the model's dataset); None when it is
    alike, or when nothing can tell: no data (None), a model without a hidden layer (the softmax baseline), or
    (wait=False) a fit not ready yet. data: the model's dataset (ValueError for another, see check_dataset)."""
    return checked_prediction(model, image, data, wait)[1]


def checked_prediction(model: nn.Module, image: np.ndarray, data, wait: bool = True) -> tuple[np.ndarray, str | None]:
    """(the model's probabilities for a (28, 28) uint8 image, as a (classes,) float array; not_a_digit's sentence or
    None), from one forward pass.

    The Draw page needs both for every stroke: from two passes, the answer waited ~1.5 ms more alone, and 3-4 ms
    on a 2-core server whose other core draws the page (scripts/stroke_latency.py).
    """
    image = np.asarray(image)
    if image.shape != (FIELD, FIELD):
        raise ValueError(f"expected a {FIELD}x{FIELD} image, got {image.shape}")
    x = torch.from_numpy(image.astype(np.float32) / 255.0).view(1, 1, FIELD, FIELD)
    fitted = None if data is None else cached_novelty_model(model, data, wait=wait)
    with torch.inference_mode():
        acts = model.forward_with_activations(x)
    probabilities = acts["probabilities"][0].float().numpy()
    if fitted is None:
        return probabilities, None
    if fitted.accepts_features(_features(model, acts)):
        return probabilities, None
    return probabilities, not_a_digit_sentence(model_spec(model))
