"""cnn.views: the rows, charts and sentences of the Train page (SYNTHETIC training steps and job views)."""
from collections import Counter

import pytest

from cnn.views import (config_summary, default_watch, epoch_of, eval_rows, job_label, leading_job, live_charts,
                       live_step_rows, overlay_charts, progress_summary, run_colors, shown_runs, smoothed_loss_floor,
                       smoothing_note, started_watch, status_sentence, step_rows, steps_per_epoch, watch_echo,
                       watched_job)


def steps(n: int) -> list[dict]:
    return [{"step": i + 1, "loss": 2.3 / (i + 1), "batch_accuracy": i / n, "images_per_second": 1000.0}
            for i in range(n)]


def test_live_rows_keep_every_metric_and_at_most_500_points_each():
    rows = live_step_rows(steps(3000), "run")
    counts = Counter(r["metric"] for r in rows)
    assert set(counts) == {"training loss", "batch accuracy", "images/s"}
    assert all(250 <= c <= 500 for c in counts.values())
    accuracy = [r["value"] for r in rows if r["metric"] == "batch accuracy"]
    assert accuracy == sorted(accuracy) and accuracy[-1] > 0.5  # the smoothed curve, rising, not a constant


def test_a_short_run_is_sent_whole():
    assert live_step_rows(steps(40), "run") == step_rows(steps(40), "run")
    assert live_step_rows([], "run") == []


def test_the_app_icon_is_drawn_here_a_kernel_of_blue_and_red():
    from cnn.views import app_icon

    icon = app_icon(63)
    assert icon.shape == (63, 63, 3) and icon.dtype.name == "uint8"
    left, right = icon[31, 10], icon[31, 52]  # the middle row of a Sobel-x kernel: -1 ... +1
    assert left[2] == 255 and left[0] < 128 and right[0] == 255 and right[2] < 128


# ---------------------------------------------------------------- the live panel's sentences (issue 11)



def job(status: str, *, epochs_done=(), planned=10, step=0, total=4690, seconds=37.0, place=None, owner="me",
        job_id=1, name="run", started=True, **config) -> dict:
    """A job view as JobManager.snapshot() gives it (the fields the sentences read)."""
    return {"id": job_id, "name": name, "owner": owner, "status": status, "step": step, "steps_total": total,
            "epoch": len(epochs_done) + 1, "elapsed_seconds": seconds, "queue_position": place,
            "started": 1.0 if started else None, "test_accuracy": epochs_done[-1] if epochs_done else None,
            "epochs": [{"epoch": i + 1, "step": 469 * (i + 1), "test_accuracy": a} for i, a in enumerate(epochs_done)],
            "config": {"epochs": planned, "batch_size": 128, "eval_every": 100, "label_smoothing": 0.0, **config},
            "steps": [], "evals": []}


def test_a_finished_run_says_its_accuracy_epochs_and_time_in_one_plural_aware_line():
    assert status_sentence(job("finished", epochs_done=[0.9909], planned=1, step=938, total=938)) == \
        "Finished: 99.09% after 1 epoch, 37 s"
    assert status_sentence(job("finished", epochs_done=[0.97, 0.9811], planned=2, seconds=75)) == \
        "Finished: 98.11% after 2 epochs, 1 min 15 s"


def test_a_stopped_run_gives_its_last_full_epochs_accuracy_or_says_no_model_was_kept():
    text = status_sentence(job("stopped", epochs_done=[0.97, 0.981], step=1000))
    assert text.startswith("Stopped after 2 of 10 epochs: 98.10%") and "None" not in text
    assert "step 1,000 of 4,690" in text
    assert status_sentence(job("stopped", step=37)) == \
        "Stopped before the first epoch ended (step 37 of 4,690): no model kept."
    assert status_sentence(job("stopped", started=False)) == "Stopped before it started."  # dropped from the queue


def test_a_queued_run_says_its_place_once():
    text = status_sentence(job("queued", place=1))
    assert text.startswith("Queued: #1 in line") and text.count("queued") + text.count("Queued") == 1
    assert job_label(job("queued", place=1, name="x")) == "x (queued, #1 in line)"
    assert job_label(job("running", name="x")) == "x (running)"
    assert progress_summary(job("queued", place=2))["fraction"] == 0.0


def test_a_run_at_step_0_does_not_say_step_0_of_1():
    text = status_sentence(job("running", step=0, total=0))
    assert "step 0" not in text and "of 1" not in text and text.startswith("Running: starting")


def test_time_left_comes_from_the_training_pace_and_a_paused_run_says_once_resumed():
    # 100 of 1,000 steps in 10 s of training: 900 steps left at 0.1 s each.
    running = status_sentence(job("running", step=100, total=1000, seconds=10.0, planned=2))
    assert running == "Running: epoch 1 of 2, step 100 of 1,000, 10 s of training, about 1 min 30 s left"
    paused = status_sentence(job("paused", step=100, total=1000, seconds=10.0, planned=2))
    assert paused.startswith("Paused: ") and paused.endswith("about 1 min 30 s left once resumed")
    # The first steps are slow (oneDNN starts its kernels): no guess from them.
    early = status_sentence(job("running", step=2, total=469, seconds=1.0, planned=1))
    assert early == "Running: epoch 1 of 1, step 2 of 469, 1 s of training"
    assert status_sentence(job("running", step=10, total=469, seconds=1.0, planned=1)).endswith("about 46 s left")
    # The recent pace, when the job has one, over the average that the slow first steps drag down (the walk saw
    # "about 1 min 05 s left" at step 14 of a run that took ~20 s): 0.04 s a step x 455 steps left.
    recent = dict(job("running", step=14, total=469, seconds=2.0, planned=1), seconds_per_step=0.04)
    assert recent["elapsed_seconds"] / 14 * 455 > 60 and status_sentence(recent).endswith("about 18 s left")


def test_between_an_epochs_last_step_and_its_test_the_line_says_it_is_testing():
    # The walk saw "step 469 of 469, 20 s of training" for ~3 s and nothing about the test under way.
    last = dict(job("running", step=469, total=938, seconds=20.0, planned=2), steps_per_epoch=469)
    assert status_sentence(last) == ("Running: epoch 1 of 2, step 469 of 938, 20 s of training; now testing it on "
                                     "the 10,000 test images")
    fashion = dict(job("running", step=938, total=938, seconds=40.0, planned=2, dataset="fashion", epochs_done=[0.8]),
                   steps_per_epoch=469, epoch=2)
    assert status_sentence(fashion).endswith("now testing it on the 10,000 test images")
    tested = dict(job("running", step=469, total=938, seconds=21.0, planned=2, epochs_done=[0.97]),
                  steps_per_epoch=469, epoch=1)
    assert "testing" not in status_sentence(tested)  # its test is in: the next step is on its way
    capped = dict(job("running", step=50, total=100, seconds=5.0, planned=2), steps_per_epoch=469)
    assert "testing" not in status_sentence(capped)  # a server's step cap is not an epoch's end


def test_after_the_last_epochs_test_the_line_says_the_model_is_being_saved():
    # The walk saw "(running)" and "step 469 of 469" for a few seconds after the last test, as if nothing happened.
    saving = dict(job("running", step=469, total=469, seconds=20.0, planned=1, epochs_done=[0.991]),
                  steps_per_epoch=469, epoch=1)
    assert status_sentence(saving) == "Running: epoch 1 of 1, step 469 of 469, 20 s of training; saving the model"
    middle = dict(job("running", step=469, total=938, seconds=21.0, planned=2, epochs_done=[0.97]),
                  steps_per_epoch=469, epoch=1)
    assert "saving" not in status_sentence(middle)  # an epoch's model is saved too, but the run goes on
    capped = dict(job("running", step=100, total=100, seconds=5.0, planned=2), steps_per_epoch=469)
    assert "saving" not in status_sentence(capped)  # stopped at a cap before its epochs: no test, no "saving"


def test_the_epoch_axis_lines_up_runs_of_different_batch_sizes():
    fast, article = steps_per_epoch(64), steps_per_epoch(128)
    assert (fast, article) == (938, 469)  # ceil(60,000 / 64), ceil(60,000 / 128)
    assert epoch_of(938, fast) == 1.0 and epoch_of(938, article) == 2.0
    assert steps_per_epoch(32, train_size=512) == 16
    rows = step_rows(steps(10), "r", per_epoch=4)
    assert {(r["step"], r["epoch"]) for r in rows} == {(s, s / 4) for s in range(1, 11)}
    evals = eval_rows([{"step": 469, "n": 10000, "full": True, "accuracy": 0.97}], "a", article)
    assert evals[0]["epoch"] == 1.0 and evals[0]["test set"] == "full 10,000"


def test_the_test_accuracy_charts_subtitle_names_only_what_it_draws():
    def subtitle(evals):
        watched = dict(job("finished", step=60, total=60, planned=1), evals=evals)
        chart = next(item for item in live_charts(watched, 60, run_colors(["run"])) if item["title"] == "test accuracy")
        return chart["spec"]["title"]["subtitle"]

    quick = {"step": 50, "epoch": 1, "accuracy": 0.9, "n": 1000, "full": False}
    full = {"step": 60, "epoch": 1, "accuracy": 0.95, "n": 10000, "full": True}
    assert subtitle([quick, full]) == "line: 1,000 images, dots: all 10,000"
    # A run shorter than eval_every has its one full test and no line: the walk saw "line: 1,000 images" on it.
    assert subtitle([full]) == "dots: all 10,000"
    assert subtitle([quick]) == "line: 1,000 images"  # still in its first epoch
    assert subtitle([dict(quick, n=256), dict(full, n=2000)]) == "line: 256 images, dots: all 2,000"  # another set


def test_every_live_chart_with_a_subtitle_draws_it_as_large_as_its_axis_words():
    """Vega draws a subtitle at 11 px unless told: on a projector the walk could not read the test-accuracy one."""
    evals = [{"step": 50, "epoch": 1, "accuracy": 0.9, "n": 1000, "full": False}]
    watched = dict(job("running", step=60, total=600, planned=1), evals=evals,
                   steps=[{"step": i, "loss": 1.0, "batch_accuracy": 0.5, "images_per_second": 900.0} for i in range(1, 61)])
    charts = [item["spec"] for item in live_charts(watched, 600, run_colors(["run"])) if "spec" in item]
    with_subtitle = [spec for spec in charts if isinstance(spec.get("title"), dict) and spec["title"].get("subtitle")]
    assert with_subtitle  # the test-accuracy chart's
    for spec in with_subtitle:
        config = spec["config"]
        assert config["title"].get("subtitleFontSize", 11) >= config["axis"]["labelFontSize"] >= 13


def test_a_run_that_ended_before_its_first_step_or_epoch_does_not_promise_one():
    from cnn.views import accuracy_text

    stopped = dict(job("stopped", step=0, total=0, planned=1), steps=[])
    sentences = [item["sentence"] for item in live_charts(stopped, 469, run_colors(["run"])) if "sentence" in item]
    # The walk read "No training step yet" three times under a run stopped at step 0.
    assert sentences.count("No training step: the run ended before its first.") == 3
    assert not any("yet" in sentence for sentence in sentences)
    running = dict(job("running", step=0, total=0, planned=1), steps=[])
    assert all("yet" in item["sentence"] for item in live_charts(running, 469, run_colors(["run"])))
    assert [accuracy_text(None, status) for status in ("running", "queued", "stopped", "failed", "interrupted")] == \
        ["no epoch yet", "no epoch yet", "no epoch", "no epoch", "no epoch"]
    assert accuracy_text(0.99094, "stopped") == "99.09%" and accuracy_text(None) == "no epoch yet"


def test_a_run_that_ended_before_its_first_test_does_not_promise_one():
    def sentence(status, **config):
        watched = dict(job(status, step=28, total=469, planned=1, **config), steps=steps(28))
        chart = next(item for item in live_charts(watched, 469, run_colors(["run"])) if item["title"] == "test accuracy")
        return chart["sentence"]

    assert sentence("running") == "No test yet: the first comes at step 100."
    assert sentence("paused") == "No test yet: the first comes at step 100."
    # The walk stopped a run at step 28 and read "the first comes at step 100", as if one were still coming.
    assert sentence("stopped") == "No test: the run ended before its first, due at step 100."
    assert sentence("failed", eval_every=0) == "No test: the run ended before its first, due at the end of the first epoch."


def _colour_scales(spec: dict) -> list[dict]:
    layers = spec.get("layer", [spec])
    return [layer["encoding"]["color"] for layer in layers]


def test_every_chart_shares_one_colour_scale_and_only_one_chart_has_a_legend():
    watched = job("running", step=10, name="fast-1", batch_size=64)
    watched["steps"] = steps(10)
    watched["evals"] = [{"step": 5, "epoch": 1, "accuracy": 0.5, "n": 1000, "full": False}]
    shown = shown_runs("fast-1", ["article-1", "fast-1"])
    assert shown == ["fast-1", "article-1"]
    scale = run_colors(shown)
    curves = {"article-1": (steps(20), [{"step": 20, "epoch": 1, "accuracy": 0.9, "n": 256, "full": True}], 20),
              "fast-1": (steps(10), [], 10)}
    items = live_charts(watched, 938, scale) + overlay_charts(curves, scale)
    specs = [item["spec"] for item in items]
    assert len(specs) == 6
    colours = [colour for spec in specs for colour in _colour_scales(spec)]
    assert all(colour["field"] == "run" and colour["scale"] == scale for colour in colours)
    assert scale["domain"] == ["fast-1", "article-1"] and len(set(scale["range"])) == 2
    assert sum(colour["legend"] is not None for colour in colours) == 1  # one legend, not one per chart
    assert all(spec["encoding"]["x"]["field"] == "epoch" for spec in specs if "encoding" in spec)


def test_no_empty_chart_is_drawn_a_sentence_is_given_instead():
    """An empty chart makes Vega log "Infinite extent" in the browser console."""
    items = live_charts(job("running", step=0, total=0), 938, run_colors(["run"]))
    assert items and all("spec" not in item and item["sentence"] for item in items)
    overlay = overlay_charts({"bundled": ([], [], 469)}, run_colors(["bundled"]))
    assert all("spec" not in item for item in overlay)


def test_watch_defaults_to_my_newest_run_then_a_running_one_then_the_newest_finished():
    others_stopped = job("stopped", owner="other", job_id=9)  # newest, someone else's, no steps: never the default
    running = job("running", owner="other", job_id=5, step=30)
    finished = job("finished", owner="other", job_id=4, step=469, epochs_done=[0.9])
    mine = job("queued", owner="me", job_id=3)
    assert default_watch([others_stopped, running, finished, mine], "me") == 3
    assert default_watch([others_stopped, running, finished], "me") == 5
    assert default_watch([others_stopped, finished], "me") == 4
    assert default_watch([others_stopped], "me") == 9  # nothing else to show
    assert default_watch([], "me") is None


def test_a_view_nobody_chose_follows_the_sessions_own_or_the_teachers_newest_live_run():
    teachers_old = {**job("finished", owner="teacher", job_id=4, step=469), "by_teacher": True}
    teachers_new = {**job("queued", owner="teacher", job_id=6), "by_teacher": True}
    students = job("running", owner="other", job_id=7, step=20)
    mine_done = job("finished", owner="me", job_id=2, step=469)
    mine_live = job("running", owner="me", job_id=8, step=5)
    jobs = [students, teachers_new, teachers_old]
    assert watched_job(jobs, "me", 4, chosen=False) == 6  # the teacher started a new run: the view moves to it
    assert watched_job(jobs, "me", 4, chosen=True) == 4  # picked from the list: it stays
    assert watched_job([students, teachers_old], "me", 4, chosen=False) == 4  # another student's run: no move
    assert leading_job([students, teachers_old], "me") is None
    assert watched_job([mine_live, *jobs], "me", 6, chosen=False) == 8  # one's own live run comes first
    assert watched_job([students, teachers_new, mine_done], "me", 2, chosen=False) == 6
    # One's own run just ended (the teacher stopped it): the view stays on it, not on an older teacher's run.
    mine_stopped = job("stopped", owner="me", job_id=9, step=40)
    assert watched_job([mine_stopped, students, teachers_new], "me", 9, chosen=False) == 9
    assert watched_job([students, teachers_old], "me", 99, chosen=True) == 7  # the pick left the list: default_watch
    assert watched_job([students, teachers_old], "me", None, chosen=False) == 7  # nothing shown yet: default_watch
    assert watched_job([], "me", 4, chosen=True) is None


def test_the_smoothed_loss_floor_is_the_lowest_cross_entropy_torch_computes():
    import torch
    import torch.nn.functional as F

    target = torch.full((10,), 0.01)
    target[3] = 0.91  # label smoothing 0.1 over 10 digits, as torch defines it
    best = F.cross_entropy(target.log().unsqueeze(0), torch.tensor([3]), label_smoothing=0.1).item()
    assert smoothed_loss_floor(0.1) == pytest.approx(best, rel=1e-5)
    sure = torch.full((1, 10), -20.0)
    sure[0, 3] = 20.0  # 100% sure and right: worse, not better
    assert F.cross_entropy(sure, torch.tensor([3]), label_smoothing=0.1).item() > best
    assert smoothed_loss_floor(0.0) == 0.0
    note = smoothing_note({"fast-1": {"label_smoothing": 0.1}, "article-1": {"label_smoothing": 0.0}})
    assert "fast-1" in note and "article-1" not in note and "0.50" in note and "label smoothing 0.1" in note
    assert smoothing_note({"article-1": {"label_smoothing": 0.0}}) is None


def test_a_runs_recipe_in_one_line():
    from cnn.config import FAST

    assert config_summary(FAST.replace(epoch_images=0, batch_size=128, learning_rate=0.01).to_dict()) == \
        "FAST: 1 epoch, batch 128, learning rate 0.01, seed 0"
    assert config_summary(FAST.to_dict()) == "FAST: 1 epoch of 30,000 images, batch 96, learning rate 0.01, seed 0"
    whole_set = FAST.replace(epochs=2, epoch_images=0, name="article")
    assert config_summary(whole_set.to_dict()).startswith("ARTICLE: 2 epochs, ")


def test_every_train_chart_names_its_scales_domains_so_vega_never_computes_an_empty_extent():
    # Streamlit's front end draws a chart before adding its rows; a domain Vega must compute from no rows is
    # "Infinite extent". Each quantitative scale of the Train charts is given its data's span instead.
    from cnn.views import extent, live_charts, run_colors

    job = {"name": "r", "config": {"eval_every": 100}, "steps": [
        {"step": s, "loss": 2.0 / s, "batch_accuracy": 0.5, "images_per_second": 900.0 + s} for s in range(1, 40)],
        "evals": [{"step": 20, "accuracy": 0.9, "full": False, "n": 1000}]}
    charts = [c["spec"] for c in live_charts(job, 100, run_colors(["r"])) if "spec" in c]
    assert len(charts) == 4
    for spec in charts:
        encodings = [layer["encoding"] for layer in spec.get("layer", [])] or [spec["encoding"]]
        for encoding in encodings:
            for channel in ("x", "y"):
                assert "domain" in encoding[channel]["scale"], (spec.get("title"), channel)
    assert extent([{"v": 3.0}, {"v": None}, {"v": 1.0}], "v") == [1.0, 3.0]
    assert extent([{"v": 2.0}], "v") == [1.5, 2.5]  # one point still spans something
    assert extent([{"v": 2.0}], "v", zero=True) == [0.0, 2.0]
    assert extent([{"v": None}], "v") is None


def test_an_accuracy_axis_with_one_point_stays_between_0_and_100_percent():
    """A run's first test is one point: its axis spans a point either side of it, never 47.8-147.8% (seen at 1024 px
    in a browser walk). The same for a run's first step's batch accuracy and an overlay of one finished epoch."""
    from cnn.views import extent, live_charts, overlay_charts, run_colors

    def y_domains(spec):
        encodings = [layer["encoding"] for layer in spec.get("layer", [])] or [spec["encoding"]]
        return [encoding["y"]["scale"]["domain"] for encoding in encodings]

    job = {"name": "r", "config": {"eval_every": 100}, "steps": [
        {"step": 1, "loss": 2.3, "batch_accuracy": 1.0, "images_per_second": 900.0}],
        "evals": [{"step": 100, "accuracy": 0.978, "full": False, "n": 1000}]}
    charts = {c["title"]: c["spec"] for c in live_charts(job, 469, run_colors(["r"])) if "spec" in c}
    for low, high in y_domains(charts["test accuracy"]):
        assert (low, high) == pytest.approx((0.968, 0.988))
    for low, high in y_domains(charts["batch accuracy (smoothed)"]):
        assert 0.0 <= low < high <= 1.0
    # Both accuracies in percent (the walk saw 0-1 beside 97-99%); the loss keeps its plain numbers.
    assert charts["batch accuracy (smoothed)"]["encoding"]["y"]["axis"]["format"].endswith("%")
    assert charts["test accuracy"]["layer"][0]["encoding"]["y"]["axis"]["format"].endswith("%")
    assert "axis" not in charts["training loss (smoothed)"]["encoding"]["y"]
    curves = {"r": ([], [{"step": 469, "accuracy": 0.9931, "full": True, "n": 10000}], 469)}
    full = next(c["spec"] for c in overlay_charts(curves, run_colors(["r"])) if "spec" in c)
    for low, high in y_domains(full):
        assert low == pytest.approx(0.9831) and high == 1.0
    assert extent([{"a": 1.0}], "a", limits=(0.0, 1.0)) == pytest.approx([0.99, 1.0])
    assert extent([{"a": 0.0}], "a", limits=(0.0, 1.0)) == pytest.approx([0.0, 0.01])
    assert extent([{"v": 2.0}], "v") == [1.5, 2.5]  # an unbounded quantity keeps its +-0.5


# ---------------------------------------------------------------- which network, which dataset (issue 12)

def test_a_run_that_is_not_the_articles_cnn_on_mnist_says_what_it_is_in_every_label():
    from cnn.views import card_model, model_note, run_subject

    assert job_label(job("running", name="x", architecture="mlp", dataset="fashion")) == \
        "x (running, an MLP on Fashion-MNIST)"
    assert job_label(job("queued", place=2, name="y", architecture="softmax", dataset="mnist")) == \
        "y (queued, #2 in line, softmax regression on MNIST)"
    assert job_label(job("running", name="z", architecture="cnn", dataset="mnist")) == "z (running)"  # the tutorial's
    assert job_label(job("finished", name="z", architecture="cnn", dataset="fashion")) == \
        "z (finished, the article's CNN on Fashion-MNIST)"
    # A card names them; a card from before issue 12 names neither: the article's CNN on MNIST.
    assert card_model({"network": "lenet", "dataset": "fashion", "config": {}}) == ("lenet", "fashion")
    assert card_model({"architecture": "softmax", "config": {"architecture": "softmax"}}) == ("softmax", "mnist")
    assert card_model(None) == ("cnn", "mnist")
    assert model_note("weird", "mnist") == "an unknown network on MNIST"  # a foreign card: no KeyError
    assert run_subject({"architecture": "one-conv", "dataset": "fashion"}).startswith(
        "The article's first block alone on Fashion-MNIST (its 10 classes: T-shirt/top, Trouser,")
    assert run_subject({}).startswith("The article's CNN on MNIST (its 10 digits: 0, 1, 2,")


def test_the_history_table_names_each_runs_network_and_dataset(tmp_path):
    from cnn.config import ARTICLE, FAST
    from cnn.runs import RunInfo
    from cnn.views import history_rows

    live = dict(job("running", name="live", architecture="lenet", dataset="fashion"), preset="article")
    disk = [RunInfo("old", tmp_path / "old", tmp_path / "old" / "model.pt", {"preset": "article",
                                                                            "config": ARTICLE.to_dict()}),
            RunInfo("mlp", tmp_path / "mlp", tmp_path / "mlp" / "model.pt",
                    {"preset": "fast", "network": "mlp", "dataset": "fashion", "config": FAST.to_dict()}),
            RunInfo("broken", tmp_path / "broken", None, None, "Run 'broken' cannot be shown.")]
    rows = {row["run"]: (row["network"], row["dataset"]) for row in history_rows(disk, [live])}
    assert rows == {"live": ("a LeNet-5-style network", "Fashion-MNIST"), "old": ("the article's CNN", "MNIST"),
                    "mlp": ("an MLP", "Fashion-MNIST"), "broken": ("?", "?")}


def test_a_live_runs_history_time_is_its_last_completed_epochs():
    """The walk: a training run's time in the Run history stood at "1 s" (the table is drawn again only when a run's
    state changes). A live row now says its last completed epoch's time, like its accuracy and epochs."""
    from cnn.views import history_rows

    def live(status, name, epoch_seconds=(), **kwargs):
        view = job(status, name=name, epochs_done=[0.97 + 0.001 * i for i in range(len(epoch_seconds))], **kwargs)
        for epoch, seconds in zip(view["epochs"], epoch_seconds):
            epoch["elapsed_seconds"] = seconds
        return view

    jobs = [live("running", "two-epochs", (41.6, 83.2), seconds=101.0),
            live("running", "first-epoch", seconds=12.0),
            live("paused", "paused", (41.6,), seconds=60.0),
            live("queued", "queued", started=False, seconds=0.0),
            live("finished", "finished", (41.6, 95.4), seconds=95.4),
            live("stopped", "stopped", (41.6,), seconds=70.2)]
    rows = {row["run"]: (row["time"], row["epochs"], row["accuracy"]) for row in history_rows([], jobs)}
    assert rows == {"two-epochs": ("1 min 23 s", 2, "97.10%"), "first-epoch": ("-", 0, "no epoch yet"),
                    "paused": ("42 s", 1, "97.00%"), "queued": ("-", 0, "no epoch yet"),
                    "finished": ("1 min 35 s", 2, "97.10%"), "stopped": ("1 min 10 s", 1, "97.00%")}


def test_the_history_is_drawn_again_when_a_run_changes_state_or_ends_an_epoch_not_at_every_step():
    from cnn.views import history_state

    before = [job("running", epochs_done=[0.97], step=500, seconds=40.0), job("queued", job_id=2, started=False)]
    later_step = [job("running", epochs_done=[0.97], step=700, seconds=55.0), job("queued", job_id=2, started=False)]
    next_epoch = [job("running", epochs_done=[0.97, 0.98], step=938, seconds=75.0),
                  job("queued", job_id=2, started=False)]
    started = [job("running", epochs_done=[0.97], step=700, seconds=55.0), job("running", job_id=2)]
    assert history_state(later_step) == history_state(before)
    assert history_state(next_epoch) != history_state(before)
    assert history_state(started) != history_state(later_step)
    assert history_state(before[:1]) != history_state(before)  # a run dropped from the list


def test_the_history_says_which_runs_changed_their_presets_recipe(tmp_path):
    from cnn.config import FAST
    from cnn.runs import RunInfo
    from cnn.views import history_rows

    live = dict(job("running", name="live"), preset="fast")
    live["config"] = FAST.replace(learning_rate=0.02).to_dict()  # a learning rate typed into the form
    old = {**FAST.to_dict(), "batch_size": 128}
    disk = [RunInfo("old", tmp_path / "old", tmp_path / "old" / "model.pt", {"preset": "fast", "config": old}),
            RunInfo("same", tmp_path / "same", tmp_path / "same" / "model.pt",
                    {"preset": "fast", "config": FAST.replace(seed=2).to_dict()}),
            RunInfo("bare", tmp_path / "bare", tmp_path / "bare" / "model.pt", {"preset": "article"}),
            RunInfo("broken", tmp_path / "broken", None, None, "Run 'broken' cannot be shown.")]
    rows = {row["run"]: row["preset"] for row in history_rows(disk, [live])}
    assert rows == {"live": "fast, changed", "old": "fast, changed", "same": "fast", "bare": "article", "broken": "?"}


def test_the_smoothing_note_blames_dropout_only_for_runs_that_drop():
    from cnn.config import FAST

    dropout = "Dropout during training keeps it a little higher still."
    assert dropout not in smoothing_note({"fast": FAST.to_dict()})  # FAST keeps every value (keep 1)
    assert dropout in smoothing_note({"fast": FAST.replace(p_keep_hidden=0.5).to_dict()})
    assert dropout in smoothing_note({"old": {"label_smoothing": 0.1}})  # a config from before keeps: 0.8 and 0.5
    lenet = {"label_smoothing": 0.1, "architecture": "lenet", "p_keep_conv": 0.8, "p_keep_hidden": 0.5}
    assert dropout not in smoothing_note({"lenet": lenet})  # a network without dropout drops nothing
    both = smoothing_note({"fast": FAST.to_dict(), "mlp": {"label_smoothing": 0.1, "architecture": "mlp"}})
    assert dropout in both and both.endswith("The test accuracy is what to watch.")


def test_the_smoothing_note_speaks_of_classes_for_fashion_and_digits_for_mnist():
    fashion = smoothing_note({"f": {"label_smoothing": 0.1, "dataset": "fashion"}})
    assert "the right class" in fashion and "digit" not in fashion
    assert "the right digit" in smoothing_note({"m": {"label_smoothing": 0.1, "dataset": "mnist"}})


def test_shape_story_follows_the_networks_layer_table():
    from cnn.config import ARTICLE
    from cnn.model import build_model, layer_table
    from cnn.views import shape_story

    def story(network):
        return shape_story(layer_table(build_model(ARTICLE.replace(architecture=network))))

    assert story("cnn").endswith("Sizes shrink 28 -> 14 -> 7 -> 4 while the number of maps grows 32 -> 64 -> 128.")
    assert story("lenet").endswith("Sizes shrink 28 -> 14 -> 10 -> 5 while the number of maps grows 6 -> 16.")
    assert story("one-conv").endswith("Sizes shrink 28 -> 14, in 32 maps.")
    assert "laid out flat" in story("mlp") and "Sizes" not in story("softmax")


def test_the_experiments_subject_names_the_network_its_dataset_whose_it_is_and_the_epoch():
    from cnn.views import experiment_subject

    assert experiment_subject("cnn", "mnist", "the class model") == (
        "Your experiments work on a copy of the article's CNN on MNIST (the class model).")
    assert experiment_subject("mlp", "fashion", "your choice", 2) == (
        "Your experiments work on a copy of an MLP on Fashion-MNIST (your choice), as it was after epoch 2.")


def test_a_watcher_is_told_about_pausing_only_while_the_run_is_live():
    from cnn.views import watch_only_sentence

    live = "Started by session 49e5: you can watch it; only that session or the teacher can pause or stop it."
    for status in ("running", "paused", "queued"):
        assert watch_only_sentence({"status": status, "started_by": "session 49e5"}) == live
    for status in ("finished", "stopped", "failed"):  # the walk saw the pause sentence under a finished run
        assert watch_only_sentence({"status": status, "started_by": "session 49e5"}) == "Started by session 49e5."
    assert watch_only_sentence({"status": "finished"}) == "Started by another session."
    teachers = {"status": "running", "started_by": "the teacher", "by_teacher": True}
    assert watch_only_sentence(teachers) == \
        "Started by the teacher: you can watch it; only the teacher can pause or stop it."
    assert watch_only_sentence(dict(teachers, status="finished")) == "Started by the teacher."


def test_homes_words_read_the_presets_numbers(monkeypatch):
    import cnn.config
    from cnn.views import glossary

    words = glossary()
    assert "all 60,000 of MNIST's for ARTICLE, which trains for 10;" in words["Epoch"]
    assert "a fresh random 30,000 of them" in words["Epoch"]  # FAST's epoch: half the set
    assert "(128 for ARTICLE, 96 for FAST)" in words["Batch"]
    assert "469 for ARTICLE, 313 for FAST." in words["Step"]  # ceil(60,000 / 128), ceil(30,000 / 96)
    assert "(20% after the conv layers, 50% after FC 625, in ARTICLE)" in words["Dropout"]
    # A preset that changes changes the words (they were written out by hand and went stale once).
    monkeypatch.setattr(cnn.config, "FAST", cnn.config.FAST.replace(batch_size=32, epoch_images=12_000))
    words = glossary()
    assert "(128 for ARTICLE, 32 for FAST)" in words["Batch"] and "a fresh random 12,000 of them" in words["Epoch"]
    assert "469 for ARTICLE, 375 for FAST." in words["Step"]


def test_homes_epoch_help_says_what_an_epoch_of_the_active_models_run_was():
    from cnn.config import ARTICLE, FAST
    from cnn.views import active_model_words, card_epoch_images

    fast_card = {"config": FAST.to_dict()}
    assert card_epoch_images(fast_card) == 30_000 and card_epoch_images({"config": ARTICLE.to_dict()}) == 0
    assert active_model_words("cnn", "mnist", card_epoch_images(fast_card))["epoch_help"] == (
        "An epoch of this model's training was one pass over a fresh random 30,000 of the 60,000 training images.")
    assert active_model_words("cnn", "mnist")["epoch_help"] == "An epoch is one pass over the 60,000 training images."
    assert active_model_words("cnn", "mnist", 90_000)["epoch_help"] == (  # more than the set: all of it
        "An epoch is one pass over the 60,000 training images.")
    for forged in (True, "30000", -5, 2.5, None):  # a card is a file on disk: anything may be in it
        assert card_epoch_images({"config": {"epoch_images": forged}}) == 0
    assert card_epoch_images({}) == 0 and card_epoch_images({"config": None}) == 0


def test_only_the_replaced_run_coming_back_within_seconds_of_a_start_is_an_echo():
    started = started_watch(old=3, new=5, now=100.0)  # Start moved the box from run 3 to run 5
    assert watch_echo(started, 3, now=100.4)  # run 3 back 0.4 s later: a tick sent before the browser saw run 5
    assert watch_echo(started, 3, now=104.9)  # a busy server runs the tick after the Start's own rerun
    assert not watch_echo(started, 3, now=105.0)  # five seconds on: the student picked it
    assert not watch_echo(started, 4, now=100.4)  # another run: a pick
    assert not watch_echo(started, 3, now=99.0)  # a clock behind the Start's (not monotonic): a pick
    assert not watch_echo(None, 3, now=100.4)  # no Start moved the box
    assert started_watch(old=None, new=5, now=100.0) is None  # the box showed nothing before
    assert started_watch(old=5, new=5, now=100.0) is None
