"""What the pages show, computed as plain data (rows, images, sentences) so tests can call it directly."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .runs import RunInfo, read_metrics


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing, so the first points are not dragged to 0."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** i))
    return out


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def progress_summary(job: dict) -> dict:
    """{fraction, text} for a progress bar: epoch, step and time left from the average pace so far."""
    total = max(job.get("steps_total") or 0, 1)
    step = job.get("step", 0)
    fraction = min(step / total, 1.0)
    if job["status"] == "queued":
        place = job.get("queue_position")
        return {"fraction": 0.0, "text": f"Queued{f' (number {place} in line)' if place else ''}: waiting for the running training to finish."}
    left = None
    if step and job.get("elapsed_seconds"):
        left = job["elapsed_seconds"] / step * (total - step)
    epochs = job["config"]["epochs"]
    text = (f"{job['status'].capitalize()}: epoch {max(job.get('epoch', 0), 1)} of {epochs}, "
            f"step {step:,} of {total:,}, {format_seconds(job.get('elapsed_seconds'))} elapsed")
    if job["status"] in ("running", "paused") and left is not None:
        text += f", about {format_seconds(left)} left"
    return {"fraction": fraction, "text": text}


def step_rows(steps: list[dict], run: str, every: int = 1, smoothing: float = 0.9) -> list[dict]:
    """Long-format rows (run, step, metric, value) for the per-step charts: smoothed loss and batch accuracy."""
    if not steps:
        return []
    losses = smooth([s["loss"] for s in steps], smoothing)
    accuracies = smooth([s["batch_accuracy"] for s in steps], smoothing)
    speeds = smooth([s.get("images_per_second", 0.0) for s in steps], smoothing)
    rows = []
    stride = max(1, every)
    for i in range(0, len(steps), stride):
        step = steps[i]["step"]
        rows.append({"run": run, "step": step, "metric": "training loss", "value": losses[i]})
        rows.append({"run": run, "step": step, "metric": "batch accuracy", "value": accuracies[i]})
        rows.append({"run": run, "step": step, "metric": "images/s", "value": speeds[i]})
    return rows


def live_step_rows(steps: list[dict], run: str, points: int = 500) -> list[dict]:
    """step_rows with at most ~points steps per metric, for a chart sent every second.

    Thin the steps, not the long-format rows: those interleave the three metrics, so taking every
    3rd (or 6th) row kept only the loss and left the accuracy and speed charts empty.
    """
    return step_rows(steps, run, every=math.ceil(len(steps) / points) if steps else 1)


def eval_rows(evals: list[dict], run: str) -> list[dict]:
    """Rows (run, step, test set, accuracy) for the test-accuracy chart: subset points and full-test points."""
    return [{"run": run, "step": e["step"], "test set": "full 10,000" if e["full"] else f"subset {e['n']:,}",
             "accuracy": e["accuracy"]} for e in evals]


def thin(rows: list[dict], limit: int = 3000) -> list[dict]:
    """At most ~limit rows, keeping the last, so a long run does not slow the browser."""
    if len(rows) <= limit:
        return rows
    stride = math.ceil(len(rows) / limit)
    return rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])


def run_curves(folder: Path) -> tuple[list[dict], list[dict]]:
    """(steps, evals) of a run on disk, in the same shape the job manager keeps them."""
    steps, evals = [], []
    for row in read_metrics(folder):
        if row.get("kind") == "step":
            steps.append(row)
        elif row.get("kind") == "eval":
            evals.append(row)
    return steps, evals


def history_rows(runs: list[RunInfo], jobs: list[dict]) -> list[dict]:
    """One row per run (live jobs first, then runs on disk, the bundled model last) for the history table."""
    rows, seen = [], set()
    for job in jobs:
        seen.add(job["name"])
        rows.append({"run": job["name"], "preset": job["preset"], "status": job["status"],
                     "accuracy": job["test_accuracy"], "epochs": len(job["epochs"]),
                     "time": format_seconds(job["elapsed_seconds"]) if job["started"] else "-",
                     "has_model": bool(job["epochs"])})
    for run in runs:
        if run.name in seen:
            continue
        card = run.card or {}
        status = run.status
        if status == "running":  # on disk as running but no live job: the server stopped mid-run
            status = "interrupted"
        rows.append({"run": run.name, "preset": card.get("preset", "?"), "status": status,
                     "accuracy": card.get("accuracy"), "epochs": card.get("epochs"),
                     "time": format_seconds(card.get("wall_seconds")),
                     "has_model": run.checkpoint is not None and run.card is not None})
    return rows


def diverging_rgb(values: np.ndarray, limit: float | None = None) -> np.ndarray:
    """Values -> (..., 3) uint8 on a blue-white-red scale centred on 0 (blue negative, red positive)."""
    values = np.asarray(values, dtype=np.float32)
    limit = float(limit if limit is not None else np.abs(values).max() or 1.0)
    t = np.clip(values / limit, -1.0, 1.0)[..., None]
    white = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    red = np.array([0.80, 0.15, 0.15], dtype=np.float32)
    blue = np.array([0.15, 0.30, 0.80], dtype=np.float32)
    rgb = np.where(t >= 0, white + t * (red - white), white + (-t) * (blue - white))
    return (rgb * 255).round().astype(np.uint8)



def app_icon(size: int = 64) -> np.ndarray:
    """The app's page icon, drawn here: (size, size, 3) uint8, a 3x3 kernel of blue and red weights on white.

    A :material/...: page icon makes every browser fetch it from a font server, which fails in an offline
    classroom (a console error on every page load) and tells that server who is in the lesson.
    """
    weights = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32) / 2  # Sobel x, as conv1 learns
    cell = size // 3
    icon = np.full((size, size, 3), 255, dtype=np.uint8)
    for row in range(3):
        for col in range(3):
            w = float(weights[row, col])
            colour = (255, int(255 * (1 - w)), int(255 * (1 - w))) if w > 0 else (int(255 * (1 + w)), int(255 * (1 + w)), 255)
            icon[row * cell + 2:(row + 1) * cell - 2, col * cell + 2:(col + 1) * cell - 2] = colour
    return icon
