"""The hidden layer's map: the test images' last hidden layer (the article's FC 625) projected to 2-D, coloured by
class, so a class can watch the classes separate while the network learns.

Two projections (PROJECTIONS): PCA, linear and immediate, and t-SNE (openTSNE), which keeps each image's nearest
neighbours near. A map is fitted once per checkpoint and kept on disk under the weights' SHA-256 (the bundled
model's and its epochs' maps ship in models/projections/; `python -m cnn.projection` rebuilds them). An epoch's map
is turned, flipped and scaled onto the final model's (orthogonal Procrustes) so classes do not jump between frames.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .checkpoint import PACKAGE_ROOT, default_runs_dir, state_digest
from .features import dense_layers
from .storage import atomic_write
from .views import capitalised, network_title

PROJECTIONS = {
    "pca": "PCA (principal component analysis, from scikit-learn): the two directions along which the hidden "
           "values vary most. A straight, linear view, drawn at once.",
    "tsne": "t-SNE (from openTSNE): a non-linear map that keeps each image's nearest neighbours near it. Distances "
            "between far-apart groups mean little; a few seconds per checkpoint the first time.",
}
REDUCED_DIMENSIONS = 50  # t-SNE reads the hidden values through their 50 main PCA directions (openTSNE's advice)
TSNE_PERPLEXITY = 30  # about how many neighbours each point keeps close (openTSNE's default)
# openTSNE's defaults are 250 + 500 iterations; 100 + 200 took about a quarter of their time here (11 s vs 42 s on the
# 10,000 test images, on the shared 2-core machine) with the same 5-NN accuracy in 2-D for the bundled model (0.994
# vs 0.994, measured), so a class waits less per epoch.
TSNE_EXAGGERATION_ITERATIONS = 100
TSNE_ITERATIONS = 200
PLACE_NEIGHBOURS = 10  # a new image goes to the median spot of its 10 nearest test images (in t-SNE's input)
BATCH = 500  # images per forward pass: bounded memory, and progress to report
RECIPE = (f"v1 pca50 perplexity{TSNE_PERPLEXITY} iterations{TSNE_EXAGGERATION_ITERATIONS}+{TSNE_ITERATIONS} "
          f"place{PLACE_NEIGHBOURS}")  # a kept map made another way is computed again
SHIPPED_DIR = PACKAGE_ROOT / "models" / "projections"  # the bundled checkpoints' maps, read only
MAX_CACHE_FILES = 40  # the disk cache keeps the newest 40 maps (~1.3 MB per t-SNE map): bounded, whatever is viewed
MAX_CACHE_BYTES = 16 * 1024 * 1024  # a kept map of 10,000 images is ~1.3 MB; a larger file is not ours
_SHA = frozenset("0123456789abcdef")

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]  # (fraction done in [0, 1], what is happening)


def default_cache_dir() -> Path:
    """runs/.projections: a hidden folder, which the run list leaves out (a run name cannot start with a dot)."""
    return default_runs_dir() / ".projections"


# ---------------------------------------------------------------- the hidden layer


def hidden_layer(model: nn.Module) -> str:
    """The recorded activation of the last hidden dense layer before the logits (the article's "fc", LeNet's "fc2");
    ValueError with a sentence for a network that has none (softmax regression)."""
    layers = dense_layers(model)
    if not layers:
        title = capitalised(network_title(getattr(model, "network", "")))
        raise ValueError(f"{title} has no hidden layer: its inputs go straight to the class scores, so there is no "
                         "hidden layer to map. Choose a network with one on the Train page (the MLP, LeNet or the "
                         "article's CNN).")
    return layers[-1].activation


def hidden_layer_title(model: nn.Module) -> str:
    """The hidden layer in the layer table's words: "FC 625" for the article's, "FC2 84" for LeNet's."""
    hidden_layer(model)  # the sentence for a network without one
    layer = dense_layers(model)[-1]
    return f"{layer.name.upper()} {layer.units}"


def hidden_values(model: nn.Module, images: torch.Tensor, progress: Progress | None = None) -> np.ndarray:
    """(N, 1, side, side) float in [0, 1] -> (N, H) float32: the last hidden layer's values (after its ReLU).

    A model in training mode is copied and put in eval mode (dropout off); a shared model is never switched."""
    name = hidden_layer(model)
    if model.training:
        model = copy.deepcopy(model).eval()
    rows = []
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            batch = model.forward_with_activations(images[start:start + BATCH])[name]
            rows.append(batch.flatten(1).float().cpu().numpy())  # (B, H)
            if progress is not None:
                progress(min(start + BATCH, len(images)) / len(images), "the hidden layer of each image")
    return np.concatenate(rows) if rows else np.zeros((0, 0), dtype=np.float32)


# ---------------------------------------------------------------- a fitted map


@dataclass(frozen=True)
class Projection:
    """A fitted map of N images' hidden values: their 2-D points, and what places a new image in the same map.

    reduced(h) = (h - mean) @ components.T: for PCA the 2-D point itself (components (2, H)); for t-SNE the
    (REDUCED_DIMENSIONS,) view t-SNE read, and a new image goes to the median of its PLACE_NEIGHBOURS nearest rows
    of reference. Shown points are scale * raw @ rotation + shift: the identity unless aligned to another map.
    """

    method: str  # a key of PROJECTIONS
    raw_points: np.ndarray  # (N, 2) float32, as fitted
    mean: np.ndarray  # (H,) float32
    components: np.ndarray  # (K, H) float32
    reference: np.ndarray | None  # (N, K) float32 for t-SNE, None for PCA
    scale: float = 1.0
    rotation: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(2, dtype=np.float32))  # (2, 2) orthogonal
    shift: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2, dtype=np.float32))  # (2,)

    @property
    def points(self) -> np.ndarray:
        """(N, 2) float32: the images' points as shown (aligned when aligned_to was used)."""
        return self._shown(self.raw_points)

    def _shown(self, raw: np.ndarray) -> np.ndarray:
        return (self.scale * raw @ self.rotation + self.shift).astype(np.float32)

    def place_hidden(self, hidden: np.ndarray) -> np.ndarray:
        """(M, H) hidden values of new images -> (M, 2) points in this map."""
        reduced = (np.asarray(hidden, dtype=np.float32).reshape(len(hidden), -1) - self.mean) @ self.components.T
        if self.reference is None:
            return self._shown(reduced)
        # openTSNE's own transform starts a new point at the median of its neighbours' points, then optimises it
        # against fixed ones; the start alone needs no affinity index, so it also works for a map read from disk.
        from sklearn.neighbors import NearestNeighbors  # imported where used: `import cnn` stays quick (~1 s less)

        neighbours = NearestNeighbors(n_neighbors=min(PLACE_NEIGHBOURS, len(self.reference))).fit(self.reference)
        index = neighbours.kneighbors(reduced, return_distance=False)  # (M, k)
        return self._shown(np.median(self.raw_points[index], axis=1))

    def place(self, model: nn.Module, images: torch.Tensor) -> np.ndarray:
        """(M, 1, side, side) float in [0, 1] -> (M, 2): new images (a drawing, a training image) in this map;
        model must be the one the map was fitted for."""
        return self.place_hidden(hidden_values(model, images))

    def aligned_to(self, target: np.ndarray) -> Projection:
        """This map turned, flipped, scaled and moved to lie closest to target ((N, 2) points of the same images,
        e.g. the final model's map): an epoch's frame where the final frame has its classes."""
        scale, rotation, shift = alignment(self.raw_points, target)
        return dataclasses.replace(self, scale=scale, rotation=rotation, shift=shift)


def alignment(points: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(scale, rotation (2, 2), shift (2,)) minimising |scale * points @ rotation + shift - target|: orthogonal
    Procrustes with scale; rotation may flip (a projection's axes have no sign). points, target (N, 2), same rows."""
    points, target = np.asarray(points, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if points.shape != target.shape or points.ndim != 2 or len(points) < 2:
        raise ValueError("Two maps can only be aligned when they place the same images.")
    centre, target_centre = points.mean(axis=0), target.mean(axis=0)
    centred, target_centred = points - centre, target - target_centre
    from scipy.linalg import orthogonal_procrustes  # imported where used, as scikit-learn is

    rotation, singular_sum = orthogonal_procrustes(centred, target_centred)
    spread = float((centred ** 2).sum())
    scale = singular_sum / spread if spread > 0 else 1.0
    shift = target_centre - scale * centre @ rotation
    return float(scale), rotation.astype(np.float32), shift.astype(np.float32)


def fit_projection(model: nn.Module, images: torch.Tensor, method: str, seed: int = 0,
                   progress: Progress | None = None, start: np.ndarray | None = None) -> Projection:
    """A map of images' ((N, 1, side, side) float in [0, 1]) hidden values by method (a key of PROJECTIONS); the same
    for the same seed. progress(fraction, words) is called as the work goes. start: (N, 2) points of another map of
    the same images for t-SNE to start from (an epoch's map from the final model's: aligned frames); PCA ignores it."""
    from sklearn.decomposition import PCA  # imported where used: `import cnn` stays quick

    if method not in PROJECTIONS:
        raise ValueError(f"Unknown projection {method!r}: choose one of {', '.join(PROJECTIONS)}.")
    report = progress or (lambda fraction, words: None)
    forward_share = 0.6 if method == "pca" else 0.2
    hidden = hidden_values(model, images, lambda f, words: report(forward_share * f, words))
    if len(hidden) < 2:
        raise ValueError("A map needs at least two images.")
    if method == "pca":
        report(0.8, "PCA")
        pca = PCA(n_components=2, random_state=seed).fit(hidden)
        mean, components = pca.mean_.astype(np.float32), _components(pca, hidden.shape[1], 2)
        raw = (hidden - mean) @ components.T
        report(1.0, "done")
        return Projection(method, raw.astype(np.float32), mean, components, None)
    report(0.22, "PCA to 50 dimensions")
    dimensions = min(REDUCED_DIMENSIONS, *hidden.shape)
    pca = PCA(n_components=dimensions, random_state=seed).fit(hidden)
    mean, components = pca.mean_.astype(np.float32), _components(pca, hidden.shape[1], dimensions)
    reduced = ((hidden - mean) @ components.T).astype(np.float32)
    raw = _tsne(reduced, seed, lambda f, words: report(0.25 + 0.75 * f, words), start)
    report(1.0, "done")
    return Projection(method, raw, mean, components, reduced)


def _components(pca, width: int, count: int) -> np.ndarray:
    """(count, width) float32: PCA's components padded with zero rows when the data had fewer directions."""
    components = np.zeros((count, width), dtype=np.float32)
    components[:len(pca.components_)] = pca.components_
    return components


def _tsne(reduced: np.ndarray, seed: int, progress: Progress, start: np.ndarray | None = None) -> np.ndarray:
    """(N, K) -> (N, 2) float32 with openTSNE: exact neighbours (10,000 points are few), exaggeration; it starts from
    PCA, or from start ((N, 2): another map of the same images, e.g. the final model's, so an epoch's map keeps its
    classes where the final map has them: t-SNE places clusters anywhere, and a turn cannot undo a reordering)."""
    import openTSNE  # imported here: only a t-SNE map needs it

    progress(0.0, "finding each image's nearest neighbours")
    perplexity = min(TSNE_PERPLEXITY, max(1.0, (len(reduced) - 1) / 3))  # openTSNE needs 3 x perplexity < N
    affinities = openTSNE.affinity.PerplexityBasedNN(reduced, perplexity=perplexity, method="exact",
                                                     random_state=seed, n_jobs=1)
    start = (openTSNE.initialization.pca(reduced, random_state=seed) if start is None
             else openTSNE.initialization.rescale(np.asarray(start, dtype=np.float64)))
    embedding = openTSNE.TSNEEmbedding(start, affinities, random_state=seed, n_jobs=1)
    total = TSNE_EXAGGERATION_ITERATIONS + TSNE_ITERATIONS
    done = [0]

    def step(iteration, error, current) -> bool:
        progress(0.1 + 0.9 * (done[0] + iteration) / total, "t-SNE: arranging the points")
        return False  # never stop early

    every = 10
    embedding = embedding.optimize(TSNE_EXAGGERATION_ITERATIONS, exaggeration=12, momentum=0.5, callbacks=step,
                                   callbacks_every_iters=every)
    done[0] = TSNE_EXAGGERATION_ITERATIONS
    embedding = embedding.optimize(TSNE_ITERATIONS, momentum=0.8, callbacks=step, callbacks_every_iters=every)
    return np.asarray(embedding, dtype=np.float32)


def hidden_projection(model: nn.Module, images: torch.Tensor, method: str,
                      progress: Progress | None = None, seed: int = 0) -> np.ndarray:
    """(N, 1, side, side) float in [0, 1] -> (N, 2) float32: the images' last hidden layer projected by method
    ("pca" or "tsne", see PROJECTIONS). ValueError with a sentence for a network without a hidden layer."""
    return fit_projection(model, images, method, seed=seed, progress=progress).points


def neighbour_accuracy(points: np.ndarray, labels, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """How well the classes are separated in a map: the k-nearest-neighbour vote's accuracy on held-out points
    (stratified folds), in [0, 1]. points (N, 2), labels (N,) ints."""
    labels = np.asarray(labels)
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=k), np.asarray(points), labels, cv=split).mean())


# ---------------------------------------------------------------- kept on disk


def projection_key(model: nn.Module, images: torch.Tensor, method: str, seed: int = 0,
                   start: np.ndarray | None = None) -> dict:
    """What a kept map must match: these weights (SHA-256), these images, the method, seed, recipe and the points
    t-SNE started from (none: PCA's)."""
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    pixels = images.detach().cpu().contiguous().numpy()
    started = ("" if start is None or method != "tsne"
               else hashlib.sha256(np.ascontiguousarray(start, dtype=np.float32).tobytes()).hexdigest())
    return {"weights_sha256": state_digest(state), "images_sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "images": int(len(images)), "method": method, "seed": int(seed), "recipe": RECIPE, "start": started}


def projection_file(folder: Path | str, key: dict) -> Path:
    """folder/SHA.METHOD.npz (SHA.METHOD-from-START.npz for a t-SNE started from another map): named only from hex
    digests and a known method, never from user input."""
    sha, method, start = str(key["weights_sha256"]), str(key["method"]), str(key.get("start", ""))
    if len(sha) != 64 or not set(sha) <= _SHA or method not in PROJECTIONS or not set(start) <= _SHA:
        raise ValueError("Not a projection key.")
    return Path(folder) / (f"{sha}.{method}-from-{start[:16]}.npz" if start else f"{sha}.{method}.npz")


def save_projection(path: Path | str, projection: Projection, key: dict) -> None:
    """Write a fitted map (raw, unaligned) with its key, atomically; plain arrays only (read without pickle)."""
    arrays = {"key": np.array(json.dumps(key, sort_keys=True)), "points": projection.raw_points,
              "mean": projection.mean, "components": projection.components}
    if projection.reference is not None:
        arrays["reference"] = projection.reference.astype(np.float16)  # halves the file; neighbours barely move
    atomic_write(path, lambda stream: np.savez_compressed(stream, **arrays))


def read_projection(path: Path | str, key: dict) -> Projection | None:
    """The map kept at path if it is a well-formed map for key, else None (then it is computed again): a missing,
    oversized, corrupt, foreign or stale file is never trusted, and never unpickled."""
    try:
        if Path(path).stat().st_size > MAX_CACHE_BYTES:
            return None
        with np.load(path, allow_pickle=False) as kept:
            arrays = {name: kept[name] for name in kept.files if name in ("key", "points", "mean", "components",
                                                                           "reference")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return None
    return projection_from_arrays(arrays, key)


def projection_from_arrays(arrays: dict, key: dict) -> Projection | None:
    """A Projection from a kept file's arrays if they match key and each other's shapes, else None."""
    try:
        if arrays["key"].shape != () or json.loads(str(arrays["key"])) != json.loads(json.dumps(key)):
            return None
        points, mean, components = (np.asarray(arrays[name], dtype=np.float32) for name in ("points", "mean",
                                                                                             "components"))
        reference = arrays.get("reference")
        reference = None if reference is None else np.asarray(reference, dtype=np.float32)
    except (KeyError, ValueError, TypeError):
        return None
    count, method = key["images"], key["method"]
    shapes_fit = (points.shape == (count, 2) and mean.ndim == 1 and components.ndim == 2
                  and components.shape[1] == len(mean)
                  and (components.shape[0] == 2 and reference is None if method == "pca"
                       else reference is not None and reference.shape == (count, len(components))))
    arrays_ok = shapes_fit and all(np.isfinite(array).all() for array in (points, mean, components)
                                   + (() if reference is None else (reference,)))
    return Projection(method, points, mean, components, reference) if arrays_ok else None


def kept_projection(model: nn.Module, images: torch.Tensor, method: str, folder: Path | str | None = None,
                    shipped: Path | str | None = SHIPPED_DIR, seed: int = 0,
                    start: np.ndarray | None = None) -> Projection | None:
    """fit_projection's map read back when kept for these weights, images and start (in shipped, then in folder,
    default runs/.projections), else None: quick, it fits nothing."""
    key = projection_key(model, images, method, seed, start)
    folder = Path(folder) if folder is not None else default_cache_dir()
    for place in ([Path(shipped)] if shipped is not None else []) + [folder]:
        kept = read_projection(projection_file(place, key), key)
        if kept is not None:
            if place == folder:  # a map read counts as new: _trim drops the least recently used, not a popular one
                with contextlib.suppress(OSError):
                    os.utime(projection_file(place, key))
            return kept
    return None


def cached_projection(model: nn.Module, images: torch.Tensor, method: str, folder: Path | str | None = None,
                      shipped: Path | str | None = SHIPPED_DIR, progress: Progress | None = None,
                      seed: int = 0, start: np.ndarray | None = None) -> Projection:
    """kept_projection's map, else fitted (progress says how far; t-SNE from start when given) and kept in folder
    (default runs/.projections, which keeps the MAX_CACHE_FILES maps last used)."""
    kept = kept_projection(model, images, method, folder, shipped, seed, start)
    if kept is not None:
        return kept
    folder = Path(folder) if folder is not None else default_cache_dir()
    projection = fit_projection(model, images, method, seed=seed, progress=progress, start=start)
    key = projection_key(model, images, method, seed, start)
    try:
        save_projection(projection_file(folder, key), projection, key)
        _trim(folder)
    except OSError as exc:  # a read-only disk: fitted again next time, which is slower but right
        log.info("Could not keep a %s map: %s", method, exc.strerror or exc)
    return projection


def _trim(folder: Path) -> None:
    """Keep only the MAX_CACHE_FILES maps last written or read in folder: the cache stays bounded however many runs
    are viewed, and a map the class keeps opening is not pushed out by others."""
    files = sorted(folder.glob("*.npz"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in files[MAX_CACHE_FILES:]:
        old.unlink(missing_ok=True)


# ---------------------------------------------------------------- what the page shows


def map_points(points: np.ndarray, labels, class_names, star: np.ndarray | None = None, star_words: str = "",
               decimals: int = 2) -> list[dict]:
    """Vega-Lite rows {"x", "y", "class", "image", "star"} for the (N, 2) points, rounded to keep the chart's payload
    small (10,000 points: ~0.4 MB); class is the class's name, image the test image's number, star "" for them.
    star: (2,) a point of the page's own image, added last as a row of its own (class "", image -1, star its words).
    """
    rounded = np.round(np.asarray(points, dtype=np.float64), decimals)
    names = [str(name) for name in class_names]
    rows = [{"x": float(x), "y": float(y), "class": names[int(label)], "image": i, "star": ""}
            for i, ((x, y), label) in enumerate(zip(rounded.tolist(), np.asarray(labels).tolist()))]
    if star is not None:
        x, y = np.round(np.asarray(star, dtype=np.float64), decimals).tolist()
        rows.append({"x": float(x), "y": float(y), "class": "", "image": -1, "star": star_words or "your image"})
    return rows


def map_extent(points: np.ndarray, margin: float = 0.03, decimals: int = 2) -> tuple[list[float], list[float]]:
    """([x low, x high], [y low, y high]) around (N, 2) points (the star included), widened by margin of each span:
    explicit domains, since Vega warns of an "Infinite extent" while a chart's data are still on their way."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    low, high = points.min(axis=0), points.max(axis=0)
    pad = np.maximum((high - low) * margin, 10.0 ** -decimals)  # a map of one point still has a span
    return ([round(float(low[0] - pad[0]), decimals), round(float(high[0] + pad[0]), decimals)],
            [round(float(low[1] - pad[1]), decimals), round(float(high[1] + pad[1]), decimals)])


def picked_point(selection, count: int) -> int | None:
    """The test image's number a chart selection names ([{"image": 17}] from the browser), or None for anything else
    (a forged, empty or out-of-range selection, or the star's -1)."""
    if not isinstance(selection, (list, tuple)) or len(selection) != 1 or not isinstance(selection[0], dict):
        return None
    index = selection[0].get("image")
    if isinstance(index, bool) or not isinstance(index, (int, float)) or not math.isfinite(index):
        return None
    if index != int(index) or not 0 <= int(index) < count:
        return None
    return int(index)


def separation_sentence(accuracy: float, k: int = 5, epoch: int | None = None, class_word: str = "digit") -> str:
    """One sentence under the map: how well the classes are separated, in the 5-nearest-neighbour vote's words."""
    when = f"after epoch {epoch}" if epoch is not None else "for this model"
    return (f"Class separation {when}: for {accuracy:.1%} of the test images, most of the {k} nearest points on "
            f"this map are of the same {class_word}.")


# ---------------------------------------------------------------- the bundled maps


def ship_bundled_projections() -> list[Path]:
    """Fit and write the bundled MNIST model's maps and its epochs' (models/epoch-K.pt) into models/projections/,
    so a fresh clone opens the map at once. Run `python -m cnn.projection` after changing RECIPE or the models."""
    from .checkpoint import BUNDLED_MODEL, load_model
    from .data import load_dataset, to_float

    images = to_float(load_dataset("mnist").test_images)
    written, final = [], {}
    for path in [BUNDLED_MODEL, *sorted(BUNDLED_MODEL.parent.glob("epoch-*.pt"))]:  # the final model's maps first
        model, _card = load_model(path)
        for method in PROJECTIONS:
            start = final.get(method) if method == "tsne" else None  # an epoch's t-SNE starts from the final one's
            key = projection_key(model, images, method, start=start)
            target = projection_file(SHIPPED_DIR, key)
            fitted = fit_projection(model, images, method, start=start)
            save_projection(target, fitted, key)
            final.setdefault(method, fitted.points)
            written.append(target)
            print(f"{path.name} {method}: {target.name}")
    for stale in set(SHIPPED_DIR.glob("*.npz")) - set(written):
        stale.unlink()
    return written


if __name__ == "__main__":
    ship_bundled_projections()
