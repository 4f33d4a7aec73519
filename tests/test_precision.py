"""bfloat16 training (TrainConfig.precision): where it runs, what a run records, and what stays float32.

SYNTHETIC data (tests/conftest.py synthetic_mnist): the dtypes and the bookkeeping are what is checked here; what
bf16 costs in accuracy on real MNIST is measured by `python -m cnn train --precision ...` (README).
"""
import json

import pytest
import torch

from cnn.cli import main
from cnn.config import ARTICLE, FAST, TrainConfig
from cnn.model import build_model
from cnn.runs import RunRecorder, read_card
from cnn.train import evaluate, train

SMALL = FAST.replace(batch_size=32, epochs=1, eval_every=4, eval_subset=64)


def native_bf16(device: torch.device = torch.device("cpu")) -> bool:
    """Asked of oneDNN (a CPU) or CUDA directly, not of the code under test."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def watch_convolutions(model) -> list[tuple[bool, torch.dtype]]:
    """(training?, output dtype) of every convolution the model runs from now on."""
    seen = []
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda m, i, out: seen.append((m.training, out.dtype)))
    return seen


def test_article_stays_the_float32_reference_and_fast_asks_for_bf16():
    assert ARTICLE.precision == "fp32" and FAST.precision == "bf16"
    assert TrainConfig.from_dict({"name": "old-card"}).precision == "fp32"  # a card from before precision existed
    assert "precision must be fp32 or bf16" in ARTICLE.replace(precision="fp16").problem()
    assert ARTICLE.replace(precision="bf16").problem() == ""


def test_a_bf16_run_trains_in_bfloat16_where_native_and_its_accuracy_is_measured_in_float32(tiny_data, train_device):
    config = SMALL
    model = build_model(config, generator=torch.Generator().manual_seed(0))
    seen = watch_convolutions(model)
    result = train(config, tiny_data, model=model, device=train_device)
    native = native_bf16(train_device)
    assert result.precision == ("bf16" if native else "fp32")
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16 if native else torch.float32}
    assert (False, torch.float32) in seen  # the epoch's full test: the card's number is float32's
    # ... and equals an evaluation made afterwards, in float32, by hand
    with torch.no_grad():
        images = tiny_data.test_images.float().div(255).unsqueeze(1).to(train_device)
        predicted = result.model(images).argmax(1).cpu()
    assert result.test_accuracy == pytest.approx(float((predicted == tiny_data.test_labels).float().mean()))
    assert result.test_accuracy > 0.9  # the synthetic classes are easy, in bf16 too


def test_a_float32_run_never_leaves_float32(tiny_data, train_device):
    model = build_model(SMALL, generator=torch.Generator().manual_seed(0))
    seen = watch_convolutions(model)
    result = train(SMALL.replace(precision="fp32"), tiny_data, model=model, device=train_device)
    assert result.precision == "fp32" and {dtype for _, dtype in seen} == {torch.float32}


def test_bf16_runs_are_seeded_like_float32_ones(tiny_data):
    losses = []
    for seed in (0, 0, 1):
        steps = []

        class Steps:
            gradients_every = 0

            def on_start(self, model): ...

            def on_step(self, event):
                steps.append(event.loss)

            def on_eval(self, event, model): ...

            def on_epoch_end(self, event, model): ...
        train(SMALL.replace(seed=seed), tiny_data, callbacks=[Steps()], device=torch.device("cpu"))
        losses.append(steps)
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_evaluate_in_bf16_is_a_quick_look_close_to_float32(tiny_data):
    model = train(SMALL.replace(precision="fp32"), tiny_data, device=torch.device("cpu")).model
    exact = evaluate(model, tiny_data.test_images, tiny_data.test_labels)
    quick = evaluate(model, tiny_data.test_images, tiny_data.test_labels, precision="bf16")
    assert abs(quick["accuracy"] - exact["accuracy"]) <= 0.02
    assert (quick["predictions"] != exact["predictions"]).float().mean() <= 0.02


def test_the_card_says_what_the_run_trained_in(tiny_data, tmp_path):
    for precision in ("fp32", "bf16"):
        config = SMALL.replace(precision=precision)
        recorder = RunRecorder(tmp_path / precision, config)
        result = train(config, tiny_data, callbacks=[recorder], device=torch.device("cpu"))
        card = recorder.finish(result, "finished")
        assert card["precision"] == result.precision == read_card(tmp_path / precision / "model.pt")["precision"]
        assert card["config"]["precision"] == precision  # what was asked for, beside what ran


def test_the_cli_takes_a_precision_and_refuses_another(monkeypatch, tmp_path, capsys, tiny_data):
    import cnn.cli

    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(cnn.cli, "load_data_with_progress", lambda data_dir, dataset="mnist": tiny_data)
    assert main(["train", "--preset", "article", "--precision", "bf16", "--max-steps", "3", "--out", "p"]) == 0
    card = json.loads((tmp_path / "p" / "model.json").read_text())
    assert main(["train", "--preset", "fast", "--epoch-images", "64", "--out", "q"]) == 0  # 64 of 512: one step
    printed = capsys.readouterr().out
    assert "Done: 1 step, 1 epoch of 64 images, " in printed  # not "1 full epoch"
    assert main(["train", "--preset", "fast", "--epoch-images", "0", "--epochs", "2", "--max-steps", "40",
                 "--out", "r"]) == 0  # all 512 tiny images at FAST's batch 96: 6 steps an epoch
    printed = capsys.readouterr().out
    assert "for 2 epochs, batch 96" in printed and "Done: 12 steps, 2 full epochs, " in printed
    quick = json.loads((tmp_path / "q" / "model.json").read_text())
    assert (quick["config"]["epoch_images"], quick["steps"], quick["epochs"]) == (64, 1, 1)
    assert (quick["config"]["p_keep_conv"], quick["config"]["p_keep_hidden"]) == (1.0, 1.0)  # FAST's own: no dropout
    assert card["config"]["precision"] == "bf16" and card["config"]["name"] == "article"
    assert card["precision"] == ("bf16" if native_bf16() else "fp32")
    assert " in bf16" in printed or not native_bf16()
    assert main(["train", "--preset", "fast", "--keep-conv", "0.8", "--keep-hidden", "0.5", "--label-smoothing", "0",
                 "--max-steps", "1", "--out", "k"]) == 0
    kept = json.loads((tmp_path / "k" / "model.json").read_text())["config"]
    assert (kept["p_keep_conv"], kept["p_keep_hidden"], kept["label_smoothing"]) == (0.8, 0.5, 0.0)
    assert main(["train", "--keep-conv", "0", "--out", "z"]) == 2  # refused with the config's own sentence
    assert "keep-probabilities must be above 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--precision", "fp16"])


# ---------------------------------------------------------------- an epoch of part of the set (FAST's quick pass)

def test_an_epoch_of_part_of_the_set_trains_on_a_fresh_random_draw_of_that_many_images(tiny_data):
    """512 synthetic training images, epochs of 96 at batch 32: 3 steps each, each epoch its own 96 images."""
    config = SMALL.replace(precision="fp32", epochs=2, epoch_images=96, eval_every=0)
    seen: list[set] = []
    model = build_model(config, generator=torch.Generator().manual_seed(0))
    first = next(module for module in model.modules() if isinstance(module, torch.nn.Conv2d))
    images = {bytes(image.numpy()): i for i, image in enumerate(tiny_data.train_images)}

    def record(module, args):
        if module.training:  # the images of a training step, read back from the batch the conv received
            batch = (args[0][:, 0] * 255).round().to(torch.uint8)
            seen.append({images[bytes(image.numpy())] for image in batch})
    first.register_forward_pre_hook(record)
    result = train(config, tiny_data, model=model, device=torch.device("cpu"))
    assert result.steps == 6 and result.epochs_completed == 2
    epochs = [set().union(*seen[:3]), set().union(*seen[3:])]
    assert [len(epoch) for epoch in epochs] == [96, 96]  # no image twice within an epoch
    assert epochs[0] != epochs[1]  # a fresh draw each epoch


def test_the_steps_of_a_part_epoch_are_counted_everywhere_a_run_is_sized():
    from cnn.jobs import run_steps, step_cap_sentence, steps_refusal
    from cnn.views import card_steps_per_epoch, config_summary, steps_per_epoch

    config = ARTICLE.replace(epoch_images=40_000, epochs=2)  # 40,000 / 128 = 312.5
    assert config.steps_per_epoch(60_000) == 313 and run_steps(config, 60_000) == 626
    assert ARTICLE.steps_per_epoch(60_000) == 469 and config.replace(epoch_images=90_000).steps_per_epoch(60_000) == 469
    assert steps_per_epoch(128, 60_000, 40_000) == 313 and steps_per_epoch(128, 60_000) == 469
    assert card_steps_per_epoch({"config": config.to_dict()}, 60_000) == 313
    assert steps_refusal(config, 626, 60_000) is None and "at most 1 epoch fits" in steps_refusal(config, 625, 60_000)
    assert config_summary(config.to_dict()) == "ARTICLE: 2 epochs of 40,000 images, batch 128, learning rate 0.001, seed 0"
    assert "images per epoch must be a whole number" in ARTICLE.replace(epoch_images=-1).problem()
    # The Train form's caption of the server's cap counts the part too: 1,000 // 313 = 3 epochs, not 1,000 // 469 = 2.
    assert step_cap_sentence(config, 1_000, 60_000) == (
        "This server trains at most 1,000 steps per run (epochs x 40,000 images / batch size): at batch 128 that is "
        "up to 3 epochs; a larger batch allows more.")
    assert "(epochs x 60,000 images / batch size): at batch 128 that is up to 1 epoch;" in \
        step_cap_sentence(ARTICLE, 469, 60_000)
    # The form's batch, not the preset's (the walk typed 1,024 and read "at batch 64"): ceil(40,000 / 1,024) = 40 steps.
    assert "at batch 1024 that is up to 25 epochs;" in step_cap_sentence(config, 1_000, 60_000, batch_size=1024.0)
    for forged in ("1024", 2.5, True, float("nan"), 0, 5_000, None):  # the form refuses these at Start
        assert "at batch 128 that is up to 3 epochs;" in step_cap_sentence(config, 1_000, 60_000, batch_size=forged)


def test_on_a_gpu_the_cli_suggests_fasts_gpu_recipe_and_its_flags_are_that_recipe(monkeypatch, tmp_path, capsys,
                                                                                    tiny_data):
    import cnn.cli
    from cnn.cli import gpu_advice

    cuda = torch.device("cuda")  # a device object, not a GPU: gpu_advice only reads its type
    assert gpu_advice(FAST, torch.device("cpu")) is None and gpu_advice(ARTICLE, cuda) is None
    advice = gpu_advice(FAST, cuda)
    assert advice.startswith("On a GPU, FAST's batches of 96")
    flags = "--batch-size 256 --lr 0.01 --epoch-images 0 --keep-conv 1 --keep-hidden 1"  # the README's GPU command
    assert flags in advice
    gpu_recipe = FAST.replace(batch_size=256, learning_rate=0.01, epoch_images=0, p_keep_conv=1.0, p_keep_hidden=1.0)
    assert gpu_advice(gpu_recipe, cuda) is None  # already on it
    # The suggested flags are the CLI's own, and give that recipe.
    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path))
    monkeypatch.setattr(cnn.cli, "load_data_with_progress", lambda data_dir, dataset="mnist": tiny_data)
    assert main(["train", "--preset", "fast", *flags.split(), "--max-steps", "1", "--out", "g"]) == 0
    config = TrainConfig.from_dict(json.loads((tmp_path / "g" / "model.json").read_text())["config"])
    assert config == gpu_recipe
    assert "On a GPU" not in capsys.readouterr().out  # already on the GPU recipe, or on a CPU: no advice
