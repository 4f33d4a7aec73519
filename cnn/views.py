"""What the pages show, computed as plain data (rows, images, sentences) so tests can call it directly."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .checkpoint import BUNDLED_MODELS, checkpoint_dataset
from .config import TrainConfig, preset_label
from .data import DATASETS, TRAIN_SIZE
from .model import NETWORKS
from .runs import RunInfo, read_metrics

ACTIVE_STATES = ("queued", "running", "paused")  # a run that has not ended: the job manager's and the pages' word


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing, so the first points are not dragged to 0."""
    out, average = [], 0.0
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** i))
    return out


def format_seconds(seconds: float | None) -> str:
    """37 -> "37 s", 598 -> "9 min 58 s", 4000 -> "1 h 06 min"; "-" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def capitalised(text: str) -> str:
    """text with its first letter made upper case ("an MLP" -> "An MLP"; str.capitalize would lower "MLP")."""
    return text[:1].upper() + text[1:]


def plural(count: int, word: str) -> str:
    """(1, "epoch") -> "1 epoch", (2, "epoch") -> "2 epochs"."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def accuracy_text(accuracy: float | None, status: str | None = None) -> str:
    """A run's test accuracy for a table: "99.09%", or what stands for none: "no epoch yet" for a run that may still
    finish one, "no epoch" for one that ended (status stopped, failed, interrupted) before its first."""
    if isinstance(accuracy, (int, float)):
        return percent(accuracy)
    return "no epoch yet" if status is None or status in ACTIVE_STATES else "no epoch"


def watch_only_sentence(job: dict) -> str:
    """What a session that neither started job nor teaches can do with it: watch it, and, while it is live, ask;
    an ended run has nothing to pause or stop."""
    who = job.get("started_by") or "another session"
    if job.get("status") in ACTIVE_STATES:
        if job.get("by_teacher"):
            return "Started by the teacher: you can watch it; only the teacher can pause or stop it."
        return f"Started by {who}: you can watch it; only that session or the teacher can pause or stop it."
    return f"Started by {who}."


def queue_words(place: int | None) -> str:
    """A queued run's place: "#1 in line" ("in line" when the place is not known)."""
    return f"#{place} in line" if place else "in line"


# Steps before the live line guesses the time left: the first steps start oneDNN's kernels (at step 2 of a ~20 s
# FAST run in the app the guess was "about 3 min 30 s left"; a second later, 28 s).
ESTIMATE_AFTER_STEPS = 10


def status_sentence(job: dict) -> str:
    """The live panel's one line for a job view (see cnn.jobs.Job.view), e.g. "Finished: 99.09% after 1 epoch, 37 s".

    Times are training time: a pause is not counted (cnn.train.Stopwatch).
    """
    status, step = job["status"], job.get("step", 0)
    total = job.get("steps_total") or 0
    planned = job["config"]["epochs"]
    done = len(job.get("epochs") or [])
    where = f"step {step:,} of {total:,}" if total else f"step {step:,}"
    took = format_seconds(job.get("elapsed_seconds"))
    if status == "queued":
        return f"Queued: {queue_words(job.get('queue_position'))}, waiting for the running training to finish."
    if status in ("running", "paused") and not step:
        return (f"{status.capitalize()}: starting (drawing the random weights, shuffling the images); "
                "the first step comes soon.")
    if status in ("running", "paused"):
        epoch = max(job.get("epoch", 0), 1)
        text = f"{status.capitalize()}: epoch {epoch} of {planned}, {where}, {took} of training"
        per_epoch = job.get("steps_per_epoch") or 0
        if per_epoch and step == epoch * per_epoch and done < epoch:  # the epoch's last step is done, its test not
            spec = DATASETS.get(job["config"].get("dataset")) or DATASETS[ARTICLE_DATASET]
            return text + f"; now testing it on the {spec.test_size:,} test images"
        if done >= planned and total and step >= total:  # every epoch tested: the run writes its model, then ends
            return text + "; saving the model"
        # The recent pace (cnn.jobs.seconds_per_step), else the average so far; pauses left out either way.
        pace = job.get("seconds_per_step") or (job.get("elapsed_seconds") or 0) / max(step, 1)
        if step >= ESTIMATE_AFTER_STEPS and total > step and pace > 0:
            left = pace * (total - step)
            text += f", about {format_seconds(left)} left" + (" once resumed" if status == "paused" else "")
        return text
    if status == "finished":
        accuracy = percent(job["test_accuracy"]) if job.get("test_accuracy") is not None else "no accuracy"
        return f"Finished: {accuracy} after {plural(done, 'epoch')}, {took}"
    word = "Stopped" if status == "stopped" else "Failed"
    if not job.get("started"):
        return f"{word} before it started."
    if done:
        accuracy = job["epochs"][-1]["test_accuracy"]
        return (f"{word} after {done} of {plural(planned, 'epoch')}: {percent(accuracy)} "
                f"(the model of epoch {done} is kept; {where}, {took} of training)")
    return f"{word} before the first epoch ended ({where}): no model kept."


def progress_summary(job: dict) -> dict:
    """{fraction, text} for a progress bar: how far the run is, and its status sentence."""
    total = max(job.get("steps_total") or 0, 1)
    fraction = 0.0 if job["status"] == "queued" else min(job.get("step", 0) / total, 1.0)
    return {"fraction": fraction, "text": status_sentence(job)}


PRESET_NAMES = {"article": "ARTICLE", "fast": "FAST", "softmax": "Softmax baseline"}


def epoch_part(value) -> int:
    """An epoch_images value as a config or card holds it: a whole number > 0 (an epoch on part of the set, FAST's
    30,000), else 0 (all of it; also for a missing, forged or mistyped value)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def config_summary(config: dict) -> str:
    """A run's recipe in one line: "FAST: 1 epoch of 30,000 images, batch 96, learning rate 0.01, seed 0"."""
    preset = PRESET_NAMES.get(config.get("name"), str(config.get("name")))
    part = epoch_part(config.get("epoch_images"))
    of = f" of {part:,} images" if part else ""  # FAST's quick pass
    return (f"{preset}: {plural(config['epochs'], 'epoch')}{of}, batch {config['batch_size']}, "
            f"learning rate {config['learning_rate']:g}, seed {config['seed']}")


# ---------------------------------------------------------------- which network, which dataset

ARTICLE_NETWORK, ARTICLE_DATASET = "cnn", "mnist"  # what a run is unless it says otherwise: the tutorial's
# One line per dataset for the Train form, beside its class names.
DATASET_LINES = {
    "mnist": "Handwritten digits, 60,000 to learn from and 10,000 to test on: the tutorial's dataset.",
    "fashion": "Zalando's photos of clothes, shoes and bags, made grey and 28x28 like MNIST: the same sizes, a "
               "harder task.",
}


def config_model(config: dict | None) -> tuple[str, str]:
    """(network, dataset) keys of a run's config dict; the tutorial's for a config from before they existed."""
    config = config if isinstance(config, dict) else {}
    return config.get("architecture") or ARTICLE_NETWORK, config.get("dataset") or ARTICLE_DATASET


def card_model(card: dict | None) -> tuple[str, str]:
    """(network, dataset) keys a checkpoint card names (cards from before issue 12: the article's CNN on MNIST)."""
    card = card if isinstance(card, dict) else {}
    network, _ = config_model(card.get("config"))
    return card.get("network") or card.get("architecture") or network, checkpoint_dataset(card)


def network_title(network: str) -> str:
    """"an MLP" for "mlp"; "an unknown network" for a key no network has (a foreign card)."""
    spec = NETWORKS.get(network) if isinstance(network, str) else None
    return spec.title if spec else "an unknown network"


def dataset_title(dataset: str) -> str:
    """"Fashion-MNIST" for "fashion"; "an unknown dataset" for a key no dataset has."""
    spec = DATASETS.get(dataset) if isinstance(dataset, str) else None
    return spec.title if spec else "an unknown dataset"


def model_words(network: str, dataset: str) -> str:
    """"an MLP on Fashion-MNIST": what a run trains, in a sentence's words."""
    return f"{network_title(network)} on {dataset_title(dataset)}"


def experiment_subject(network: str, dataset: str, source: str, epoch: int | None = None) -> str:
    """What the Experiments page works on, in a sentence: "Your experiments work on a copy of the article's CNN on
    MNIST (the class model), as it was after epoch 1."; source: whose model it is ("the class model", ...)."""
    when = f", as it was after epoch {epoch}" if epoch is not None else ""
    return f"Your experiments work on a copy of {model_words(network, dataset)} ({source}){when}."


def model_note(network: str, dataset: str) -> str:
    """model_words for a run that is not the article's CNN on MNIST, "" for one that is: the words a short label
    adds, so the tutorial's runs read as before and every other run says what it is."""
    return "" if (network, dataset) == (ARTICLE_NETWORK, ARTICLE_DATASET) else model_words(network, dataset)


def run_subject(config: dict) -> str:
    """The live panel's first line: "An MLP on Fashion-MNIST (its 10 classes: T-shirt/top, Trouser, ...)"."""
    network, dataset = config_model(config)
    words = model_words(network, dataset)
    spec = DATASETS.get(dataset)
    classes = f" (its {spec.num_classes} {spec.classes_word}: {', '.join(spec.class_names)})" if spec else ""
    return capitalised(words) + classes


def dataset_line(dataset: str) -> str:
    """The Train form's line under Dataset: what it is and its class names."""
    spec = DATASETS[dataset]
    return f"{DATASET_LINES.get(dataset, spec.title + '.')} Its {spec.classes_word}: {', '.join(spec.class_names)}."


def network_line(network: str) -> str:
    """The Train form's line under Network: its layers and what comparing it teaches."""
    spec = NETWORKS[network]
    return f"{spec.summary}. {spec.lesson}"


def shape_story(rows: list[dict]) -> str:
    """The layer table's caption: how the maps' sizes shrink and their number grows in this network (from its rows)."""
    grids = [row["shape"] for row in rows if len(row["shape"]) == 3]  # (channels, height, width) rows
    convs = [row["shape"][0] for row in rows if row["name"].startswith("conv")]
    if not convs:
        return "Shapes are channels x height x width, or a number of values once the image is laid out flat."
    sides = [str(grid[1]) for i, grid in enumerate(grids) if i == 0 or grid[1] != grids[i - 1][1]]
    grows = (f" while the number of maps grows {' -> '.join(map(str, convs))}" if len(convs) > 1
             else f", in {convs[0]} maps")
    return f"Shapes are channels x height x width. Sizes shrink {' -> '.join(sides)}{grows}."


def card_epoch_images(card: dict) -> int:
    """The images one epoch of a card's run trained on: its recipe's epoch_images (FAST's part of the set); 0: all
    of them."""
    return epoch_part((card.get("config") or {}).get("epoch_images"))


def active_model_words(network: str, dataset: str, epoch_images: int = 0) -> dict[str, str]:
    """What Home says about the active model: its subject ("the article's CNN on Fashion-MNIST"), what its accuracy
    counts, what an epoch of its training was (epoch_images: card_epoch_images), and the Draw link's words, all in
    its dataset's words."""
    spec = DATASETS.get(dataset) or DATASETS[ARTICLE_DATASET]
    epoch = (f"An epoch of this model's training was one pass over a fresh random {epoch_images:,} of the "
             f"{spec.train_size:,} training images." if 0 < epoch_images < spec.train_size
             else f"An epoch is one pass over the {spec.train_size:,} training images.")
    return {"subject": model_words(network, dataset),
            "accuracy_help": (f"The share of the {spec.test_size:,} {spec.title} test images read right; the network "
                              "never trained on them."),
            "epoch_help": epoch,
            "draw_link": f"{spec.draw_prompt} and see it read, live"}


def glossary() -> dict[str, str]:
    """Home's "Words you will meet": each term in a sentence or two, the presets' numbers read from the presets."""
    from .config import ARTICLE, FAST

    mnist = DATASETS[ARTICLE_DATASET]
    return {
        "Convolution": "A small grid of weights (a 3x3 filter) slides over the image; at each position it multiplies "
                       "the nine pixels under it by its nine weights and adds them up. The result, one number per "
                       "position, is a feature map.",
        "Receptive field": "The patch of the input image that one value can see. It grows layer by layer: 3x3 after "
                           "conv1, 10x10 after pool2, 22x22 after pool3.",
        "Feature map": "The output of one filter over the whole image: bright where the filter's pattern (an edge, a "
                       "curve) is present.",
        "ReLU": "max(0, x): negative responses become zero, so only evidence for a pattern passes on.",
        "Max-pooling": "Keeps the largest value of each 2x2 block: the map halves in size and small shifts of the "
                       "digit matter less.",
        "Dropout": (f"While training, each value is zeroed at random ({1 - ARTICLE.p_keep_conv:.0%} after the conv "
                    f"layers, {1 - ARTICLE.p_keep_hidden:.0%} after FC 625, in ARTICLE), so the network cannot lean on "
                    "any single feature. Off when predicting. FAST's short run does without it."),
        "Flatten": "The 128 maps of 4x4 are laid out as one list of 2,048 numbers.",
        "Fully connected": "Every output unit weighs every input number: FC 625 combines all features, FC 10 gives "
                           "one score per digit.",
        "Softmax": "Turns the ten scores into probabilities that add up to 1.",
        "Epoch": (f"One pass over the training images: all {mnist.train_size:,} of MNIST's for ARTICLE, which trains "
                  f"for {ARTICLE.epochs}; FAST's one epoch takes a fresh random "
                  f"{FAST.images_per_epoch(mnist.train_size):,} of them, to be quick."),
        "Batch": (f"The handful of images ({ARTICLE.batch_size} for ARTICLE, {FAST.batch_size} for FAST) the network "
                  "looks at before it changes its weights once."),
        "Step": (f"One change of the weights, after one batch. An epoch is its images / batch size steps: "
                 f"{ARTICLE.steps_per_epoch(mnist.train_size):,} for ARTICLE, "
                 f"{FAST.steps_per_epoch(mnist.train_size):,} for FAST. Another batch size takes another number of "
                 "steps: that is why the Train page compares runs by epoch, not by step."),
        "Learning rate": "How big each step is. Too big and the network jumps past good weights; too small and it "
                         "learns very slowly.",
        "Loss": "A score of how wrong the network is on a batch: minus the log of the probability it gave the right "
                "digit (cross-entropy). 0 means sure and right; training pushes it down.",
        "Label smoothing": ("Training against a softer answer key: 91% \"it's a 7\" and 1% for each other digit, "
                            "instead of 100% \"7\". It stops the network from becoming over-sure. Its loss can then "
                            "never reach 0 (about 0.5 is the best possible), so FAST's loss levels off there."),
        "RMSProp": "The optimizer: each weight's step is its gradient divided by a running average of recent "
                   "gradient sizes, so every weight learns at a sensible pace.",
    }


def labelled(name: str, note: str) -> str:
    """A run's name with its model_note: "fashion-mlp-fast-3f2a-1 (an MLP on Fashion-MNIST)", or the name alone."""
    return f"{name} ({note})" if note else name


SHIPPED = "shipped with the app"  # what a model list adds to a bundled model's name: "bundled" alone told nobody


def run_choice_labels(runs: list[RunInfo]) -> dict[str, str]:
    """{run name: its label} for the lists that choose a model (the Train page's active model, the class model): a
    run's model_note, and a bundled model's own words, "bundled (the article's CNN on MNIST, shipped with the app)"."""
    labels = {}
    for run in runs:
        network, dataset = card_model(run.card)
        bundled = run.name in BUNDLED_MODELS
        labels[run.name] = labelled(run.name, f"{model_words(network, dataset)}, {SHIPPED}" if bundled
                                    else model_note(network, dataset))
    return labels


def job_label(job: dict) -> str:
    """How the "Watch run" list names a job: "fast-3f2a-1 (running)", "x (queued, #1 in line)",
    "y (finished, an MLP on Fashion-MNIST)"."""
    place = f", {queue_words(job.get('queue_position'))}" if job["status"] == "queued" else ""
    note = model_note(*config_model(job.get("config")))
    return f"{job['name']} ({job['status']}{place}{', ' + note if note else ''})"


def default_watch(jobs: list[dict], owner: str) -> int | None:
    """Which job a session watches when it has not chosen: its own newest, else a running (or paused) one, else the
    newest finished, else the newest with some steps, else the newest. jobs: newest first, as JobManager.jobs().

    Never someone else's stopped run with no steps while something with a chart exists.
    """
    for wanted in (lambda j: j["owner"] == owner, lambda j: j["status"] in ("running", "paused"),
                   lambda j: j["status"] == "finished", lambda j: j.get("step", 0) > 0, lambda j: True):
        for job in jobs:
            if wanted(job):
                return job["id"]
    return None


def leading_job(jobs: list[dict], owner: str) -> int | None:
    """The run a session's live view moves to by itself: its own newest run that has not ended, else the teacher's
    newest that has not ended, else None. jobs: newest first, as JobManager.jobs().

    Another student's new run is never one: a class watching the teacher's run does not jump to it."""
    for wanted in (lambda j: j["owner"] == owner, lambda j: j.get("by_teacher")):
        for job in jobs:
            if wanted(job) and job["status"] in ACTIVE_STATES:
                return job["id"]
    return None


def watched_job(jobs: list[dict], owner: str, current: int | None, chosen: bool) -> int | None:
    """The run a session's live view shows now.

    current: the run it showed; chosen: whether the session picked it from the list itself. A chosen run stays while
    it is listed. Otherwise the view moves to leading_job when that run was queued after the one shown (job ids
    grow), so a student who never chose sees the teacher's next run as soon as it is queued (it used to stay on
    the teacher's finished one). A session with nothing listed to stay on gets leading_job, else default_watch.
    """
    listed = current in [job["id"] for job in jobs]
    if listed and chosen:
        return current
    lead = leading_job(jobs, owner)
    if not listed:
        return lead if lead is not None else default_watch(jobs, owner)
    # Only to a run queued after the one shown: a student whose own run just ended (or was stopped by the teacher)
    # reads how it ended, and does not jump back to an older run of the teacher's.
    return lead if lead is not None and lead > current else current


WATCH_ECHO_SECONDS = 5.0  # how long after a Start the box's old run counts as an echo: a live tick comes each second,
# and a busy server runs it after the Start's own rerun


def started_watch(old: int | None, new: int, now: float) -> dict | None:
    """What a Start remembers when it moves a session's Watch run box from the run it showed (old) to the new one;
    None when the box showed nothing else. now: a monotonic clock's reading."""
    return {"old": old, "new": new, "at": now} if old is not None and old != new else None


def watch_echo(started: dict | None, picked: int | None, now: float) -> bool:
    """Whether a Watch run "pick" is a stale echo of the run a Start just replaced rather than the session's choice.

    A live tick the browser sent before it saw the new run carries the old run back; Streamlit takes it for a pick
    and calls the box's on_change, and the view stayed pinned there (a student's second Start, 2 of ~14 runs of
    tests/test_browser_watch.py's first form). started: started_watch's record, used for one pick only."""
    return (started is not None and picked == started["old"]
            and 0 <= now - started["at"] < WATCH_ECHO_SECONDS)


def steps_per_epoch(batch_size: int, train_size: int = TRAIN_SIZE, epoch_images: int = 0) -> int:
    """Training steps in one epoch: ceil(images / batch size) (469 for ARTICLE's 128); epoch_images, when a recipe
    trains an epoch on part of the set (FAST), caps the images."""
    images = min(epoch_part(epoch_images), train_size) or train_size
    return math.ceil(images / max(int(batch_size), 1))


def card_steps_per_epoch(card: dict | None, train_size: int = TRAIN_SIZE) -> int:
    """Steps per epoch of a run on disk: measured by its card (steps after its last full epoch / epochs) when it
    finished one, else from its batch size (the tutorial's 128 when the card says nothing)."""
    card = card or {}
    epochs, steps = card.get("epochs"), card.get("steps")
    if isinstance(epochs, int) and isinstance(steps, int) and epochs >= 1 and steps >= epochs:
        return steps // epochs
    config = card.get("config") if isinstance(card.get("config"), dict) else {}
    batch = config.get("batch_size")
    return steps_per_epoch(batch if isinstance(batch, int) and batch >= 1 else 128, train_size,
                           config.get("epoch_images", 0))


def epoch_of(step: int, per_epoch: int) -> float:
    """A step as a fractional epoch: step 938 is epoch 2.0 of ARTICLE (batch 128) but 1.0 of a batch-64 run."""
    return step / max(per_epoch, 1)


def step_rows(steps: list[dict], run: str, every: int = 1, smoothing: float = 0.9,
              per_epoch: int | None = None) -> list[dict]:
    """Long-format rows (run, step, epoch, metric, value) for the per-step charts: smoothed loss, batch accuracy,
    images/s. epoch is step / per_epoch (None without per_epoch), so runs of different batch sizes line up."""
    if not steps:
        return []
    losses = smooth([s["loss"] for s in steps], smoothing)
    accuracies = smooth([s["batch_accuracy"] for s in steps], smoothing)
    speeds = smooth([s.get("images_per_second", 0.0) for s in steps], smoothing)
    rows = []
    stride = max(1, every)
    for i in range(0, len(steps), stride):
        step = steps[i]["step"]
        epoch = epoch_of(step, per_epoch) if per_epoch else None
        for metric, value in (("training loss", losses[i]), ("batch accuracy", accuracies[i]),
                              ("images/s", speeds[i])):
            rows.append({"run": run, "step": step, "epoch": epoch, "metric": metric, "value": value})
    return rows


def live_step_rows(steps: list[dict], run: str, points: int = 500, per_epoch: int | None = None) -> list[dict]:
    """step_rows with at most ~points steps per metric, for a chart sent every second.

    Thin the steps, not the long-format rows: those interleave the three metrics, so taking every
    3rd (or 6th) row kept only the loss and left the accuracy and speed charts empty.
    """
    return step_rows(steps, run, every=math.ceil(len(steps) / points) if steps else 1, per_epoch=per_epoch)


def eval_rows(evals: list[dict], run: str, per_epoch: int | None = None) -> list[dict]:
    """Rows (run, step, epoch, test set, full, n, accuracy) for the test-accuracy chart: subset and full-test points."""
    return [{"run": run, "step": e["step"], "epoch": epoch_of(e["step"], per_epoch) if per_epoch else None,
             "test set": f"full {e['n']:,}" if e["full"] else f"subset {e['n']:,}", "full": bool(e["full"]),
             "n": e["n"], "accuracy": e["accuracy"]}
            for e in evals]


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


def card_preset(card: dict | None) -> str:
    """preset_label of a checkpoint card's config; a card without one says only the preset's name it recorded."""
    card = card if isinstance(card, dict) else {}
    if isinstance(card.get("config"), dict):
        return preset_label(card["config"])
    return str(card.get("preset") or "?")[:20]


def history_state(jobs: list[dict]) -> dict:
    """{job id: (status, epochs completed)}: what the history table's rows of live runs say. The Train page draws the
    table again (a run of the whole page) when this changes: when a run starts or ends, and when an epoch ends."""
    return {job["id"]: (job["status"], len(job["epochs"])) for job in jobs}


def history_time(job: dict) -> str:
    """A live run's training time for the history table, as of what its row shows: a run that has not ended counts
    to its last completed epoch (the row's accuracy and epochs are that epoch's, and the table is drawn again only
    when an epoch ends; a count from when it was drawn stood still at "1 s" in the walk); "-" before the first."""
    if not job["started"]:
        return "-"
    if job["status"] in ACTIVE_STATES:
        last = job["epochs"][-1] if job["epochs"] else {}
        return format_seconds(last.get("elapsed_seconds"))
    return format_seconds(job["elapsed_seconds"])


def history_rows(runs: list[RunInfo], jobs: list[dict]) -> list[dict]:
    """One row per run (live jobs first, then runs on disk, the bundled model last) for the history table."""
    from .jobs import trained_elsewhere  # cnn.jobs imports much of the engine; only this function needs it

    rows, seen = [], set()
    for job in jobs:
        seen.add(job["name"])
        network, dataset = config_model(job.get("config"))
        rows.append({"run": job["name"], "network": network_title(network), "dataset": dataset_title(dataset),
                     "preset": preset_label(job.get("config")), "status": job["status"],
                     "accuracy": accuracy_text(job["test_accuracy"], job["status"]), "epochs": len(job["epochs"]),
                     "time": history_time(job), "has_model": bool(job["epochs"])})
    for run in runs:
        if run.name in seen:
            continue
        card = run.card or {}
        status = run.status
        if status == "running" and not trained_elsewhere(run.folder.parent, run.name):
            status = "interrupted"  # on disk as running, no live job here nor on a replica sharing runs/: it stopped
        network, dataset = card_model(card)
        known = run.card is not None  # an unreadable run says nothing of what it was
        rows.append({"run": run.name, "network": network_title(network) if known else "?",
                     "dataset": dataset_title(dataset) if known else "?",
                     "preset": card_preset(card), "status": status,
                     "accuracy": accuracy_text(card.get("accuracy"), status), "epochs": card.get("epochs") or 0,
                     "time": format_seconds(card.get("wall_seconds")),
                     "has_model": run.checkpoint is not None and run.card is not None})
    return rows


# ---------------------------------------------------------------- the Train page's charts (plain Vega-Lite)

# Vega's own "tableau10": one colour per run, in the order of the runs shown, the same in every chart.
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d", "#ff9da6",
           "#bab0ac")
# Axis words and subtitles readable on a projector (Vega's defaults are 10-11 px; the walk found the test-accuracy
# subtitle, what its line and dots are, too small to read).
READABLE = {"axis": {"labelFontSize": 13, "titleFontSize": 13}, "title": {"fontSize": 15, "subtitleFontSize": 13},
            "legend": {"labelFontSize": 13, "titleFontSize": 13}}
EPOCH_AXIS = "epoch (steps / steps per epoch)"
EPOCH_X = {"field": "epoch", "type": "quantitative", "title": EPOCH_AXIS, "axis": {"format": "~g"}}


def shown_runs(watched: str | None, overlay: list[str]) -> list[str]:
    """The runs the charts show, watched first, each once: the colour scale's domain."""
    runs = [watched] if watched else []
    return runs + [name for name in overlay if name not in runs]


def run_colors(runs: list[str]) -> dict:
    """The Vega-Lite colour scale every chart uses: the same run keeps the same colour across charts."""
    return {"domain": list(runs), "range": [PALETTE[i % len(PALETTE)] for i in range(len(runs))]}


def _color(scale: dict, legend: bool) -> dict:
    return {"field": "run", "type": "nominal", "scale": scale,
            "legend": {"orient": "top", "title": None} if legend else None}


ACCURACY_LIMITS = (0.0, 1.0)  # an accuracy's axis never leaves 0-100%


def extent(values: list[dict], field: str, zero: bool = False,
           limits: tuple[float, float] | None = None) -> list[float] | None:
    """[low, high] of a field over the rows (a scale's explicit domain), None when no row has a number.

    Streamlit's front end first draws a chart without its rows and then adds them: a scale left to Vega
    to compute has no extent at that moment, and Vega logs "Infinite extent" for every chart drawn.
    One value still spans something: +-0.5, or a hundredth of limits' span for a bounded quantity, whose domain stays
    inside limits (a run's first test, 97.8%, on a 96.8-98.8% axis, not 47.8-147.8%).
    """
    numbers = [row[field] for row in values if isinstance(row.get(field), (int, float)) and math.isfinite(row[field])]
    if not numbers:
        return None
    low, high = (min(0.0, min(numbers)) if zero else min(numbers)), max(numbers)
    if high <= low:
        pad = 0.5 if limits is None else 0.01 * (limits[1] - limits[0])
        low, high = low - pad, high + pad
    if limits is not None:
        low, high = max(low, limits[0]), min(high, limits[1])
    return [low, high]


def _scale(values: list[dict], field: str, limits: tuple[float, float] | None = None, **extra) -> dict:
    domain = extent(values, field, zero=extra.get("zero", False), limits=limits)
    return {**extra, "domain": domain, "nice": True} if domain else extra


def _epoch_x(values: list[dict]) -> dict:
    return {**EPOCH_X, "scale": _scale(values, "epoch", zero=True)}


def line_chart(values: list[dict], y: str, title: str, scale: dict, *, y_title: str | None = None,
               legend: bool = False, height: int = 220, points: bool = False, zero: bool = True,
               limits: tuple[float, float] | None = None, percent: bool = False) -> dict:
    """A Vega-Lite line chart of values over the epoch axis, coloured by run (limits: the y axis's bounds; percent:
    values in [0, 1] written as percentages, as the test accuracy's are)."""
    y_axis = {"axis": {"format": ".0%"}} if percent else {}
    return {"data": {"values": values}, "mark": {"type": "line", "point": points},
            "encoding": {"x": _epoch_x(values),
                         "y": {"field": y, "type": "quantitative", "title": y_title or y,
                               "scale": _scale(values, y, limits=limits, zero=zero), **y_axis},
                         "color": _color(scale, legend),
                         "tooltip": [{"field": "run", "type": "nominal"}, {"field": "step", "type": "quantitative"},
                                     {"field": y, "type": "quantitative", "format": ".1%" if percent else ".4"}]},
            "title": title, "height": height, "config": READABLE}


def chart_or_sentence(title: str, values: list[dict], make, sentence: str) -> dict:
    """{"title", "spec"} for data, {"title", "sentence"} for none: an empty chart logs Vega's "Infinite extent"."""
    return {"title": title, "spec": make(values)} if values else {"title": title, "sentence": sentence}


def live_charts(job: dict, per_epoch: int, scale: dict) -> list[dict]:
    """The watched run's four charts (loss, batch accuracy, test accuracy, images/s), as chart_or_sentence items."""
    rows = live_step_rows(job.get("steps") or [], job["name"], per_epoch=per_epoch)
    ended = job.get("status", "running") not in ACTIVE_STATES
    waiting = ("No training step: the run ended before its first." if ended
               else "No training step yet: the chart starts with the first step.")
    items = [chart_or_sentence(f"{metric} (smoothed)", [r for r in rows if r["metric"] == metric],
                               lambda values, m=metric: line_chart(
                                   values, "value", f"{m} (smoothed)", scale, y_title=m,
                                   limits=ACCURACY_LIMITS if m == "batch accuracy" else None,
                                   percent=m == "batch accuracy"),
                               waiting)
             for metric in ("training loss", "batch accuracy")]
    evals = eval_rows(job.get("evals") or [], job["name"], per_epoch)
    every = job["config"].get("eval_every") or 0
    first = f"step {every:,}" if every else "the end of the first epoch"
    no_test = (f"No test: the run ended before its first, due at {first}." if ended
               else f"No test yet: the first comes at {first}.")
    items.append(chart_or_sentence("test accuracy", evals, lambda values: accuracy_chart(values, scale), no_test))
    items.append(chart_or_sentence(
        "images per second", [r for r in rows if r["metric"] == "images/s"],
        lambda values: line_chart(values, "value", "images per second", scale, y_title="images/s"), waiting))
    return items


def accuracy_chart(values: list[dict], scale: dict, height: int = 220) -> dict:
    """One run's test accuracy: a line through the quick subset tests, a large dot at each full test (epoch end)."""
    base = {"x": _epoch_x(values),
            "y": {"field": "accuracy", "type": "quantitative",
                  "scale": _scale(values, "accuracy", limits=ACCURACY_LIMITS, zero=False),
                  "axis": {"format": ".1%"}},
            "color": _color(scale, False),
            "tooltip": [{"field": "test set", "type": "nominal"}, {"field": "step", "type": "quantitative"},
                        {"field": "accuracy", "type": "quantitative", "format": ".2%"}]}
    return {"data": {"values": values}, "height": height,
            "title": {"text": "test accuracy", "subtitle": accuracy_subtitle(values)}, "config": READABLE,
            "layer": [{"mark": {"type": "line", "point": {"size": 20}},
                       "transform": [{"filter": "!datum.full"}], "encoding": base},
                      {"mark": {"type": "point", "filled": True, "size": 90},
                       "transform": [{"filter": "datum.full"}], "encoding": base}]}


def accuracy_subtitle(values: list[dict]) -> str:
    """What the test-accuracy chart draws, from its rows: "line: 1,000 images, dots: all 10,000", or only the part
    it has (a run shorter than eval_every has no quick tests; a run still in its first epoch no full one)."""
    def size(full: bool) -> int | None:
        return next((row["n"] for row in values if row["full"] == full), None)

    quick, full = size(False), size(True)
    parts = ([f"line: {quick:,} images"] if quick else []) + ([f"dots: all {full:,}"] if full else [])
    return ", ".join(parts)


def overlay_charts(curves: dict[str, tuple[list[dict], list[dict], int]], scale: dict) -> list[dict]:
    """Several runs on the epoch axis: full test accuracy per epoch (with the one legend) and the training loss.

    curves: {run: (steps, evals, steps per epoch)} as run_curves gives them.
    """
    steps, evals = [], []
    for name, (run_steps, run_evals, per_epoch) in curves.items():
        steps += step_rows(run_steps, name, every=5, per_epoch=per_epoch)
        evals += eval_rows([e for e in run_evals if e["full"]], name, per_epoch)
    losses = thin([r for r in steps if r["metric"] == "training loss"], 3000)  # metric first: rows interleave
    return [
        chart_or_sentence("full test accuracy per epoch", thin(evals), lambda values: line_chart(
            values, "accuracy", "full test accuracy per epoch", scale, legend=True, points=True, zero=False,
            height=260, limits=ACCURACY_LIMITS), "These runs have no finished epoch to compare."),
        chart_or_sentence("training loss (smoothed)", losses, lambda values: line_chart(
            values, "value", "training loss (smoothed)", scale, y_title="training loss", height=260),
            "These runs kept no training steps to compare."),
    ]


def smoothed_loss_floor(smoothing: float, classes: int = 10) -> float:
    """The lowest cross-entropy any prediction can reach against label-smoothed targets: the targets' own entropy.

    A smoothed target gives the right digit 1 - smoothing + smoothing / classes and every other digit
    smoothing / classes; the loss is smallest when the prediction equals the target.
    """
    right, other = 1 - smoothing + smoothing / classes, smoothing / classes
    return -(right * math.log(right) + ((classes - 1) * other * math.log(other) if other > 0 else 0.0))


def trains_with_dropout(config: dict) -> bool:
    """Whether a run of config (a TrainConfig's dict) zeroes values while it trains: its network has a dropout stage
    and a keep-probability below 1 (a key the dict lacks has TrainConfig's default)."""
    spec = NETWORKS.get(config_model(config)[0])
    if spec is None or not any(stage.kind == "dropout" for stage in spec.make.stages):
        return False
    keeps = [config.get(key, getattr(TrainConfig, key)) for key in ("p_keep_conv", "p_keep_hidden")]
    return any(isinstance(keep, (int, float)) and keep < 1 for keep in keeps)


def smoothing_note(configs: dict[str, dict]) -> str | None:
    """Why a label-smoothed run's loss levels off well above 0, for the runs shown ({run: config dict}); None
    when none of them smooths its labels."""
    smoothed = {name: c["label_smoothing"] for name, c in configs.items() if c.get("label_smoothing")}
    if not smoothed:
        return None
    value = max(smoothed.values())
    right, other = 1 - value + value / 10, value / 10
    names = ", ".join(smoothed)
    # "digit" for MNIST runs, "class" for Fashion-MNIST's (or a mix): the words of what the runs learn.
    words = {DATASETS[d].class_word if d in DATASETS else "class"
             for d in (config_model(configs[name])[1] for name in smoothed)}
    word = words.pop() if len(words) == 1 else "class"
    return (f"Why the loss of {names} levels off near {smoothed_loss_floor(value):.2f} and not 0: it trains with "
            f"label smoothing {value:g}. Its answer key says \"{100 * right:.0f}% the right {word}, {100 * other:.0f}% "
            f"each other {word}\" instead of \"100% the right {word}\", so even a perfect network scores a loss of "
            f"{smoothed_loss_floor(value):.2f} against it (and one that is 100% sure scores more). "
            + ("Dropout during training keeps it a little higher still. "
               if any(trains_with_dropout(configs[name]) for name in smoothed) else "")
            + "The test accuracy is what to watch.")


def markdown_table(rows: list[dict]) -> str:
    """A Markdown table of rows (the keys of the first are the columns): its cells wrap, unlike a data grid's."""
    if not rows:
        return ""
    columns = list(rows[0])

    def cell(value) -> str:
        text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


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
