"""Shared fixtures. Unit tests use small SYNTHETIC data (fast, says so); tests marked `mnist` need real MNIST."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cnn.data import MNIST

ROOT = Path(__file__).resolve().parent.parent


def synthetic_mnist(n_train: int = 512, n_test: int = 256, seed: int = 0) -> MNIST:
    """SYNTHETIC stand-in for MNIST: each class is a bright bar at its own position plus noise.

    Learnable in a few dozen steps, so the loop's behaviour can be tested in seconds.
    """
    generator = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % 10
        images = torch.randint(0, 40, (n, 28, 28), generator=generator, dtype=torch.uint8)
        for i, label in enumerate(labels.tolist()):
            images[i, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        return images, labels

    train_images, train_labels = make(n_train)
    test_images, test_labels = make(n_test)
    return MNIST(train_images, train_labels, test_images, test_labels, source="synthetic")


@pytest.fixture
def tiny_data() -> MNIST:
    return synthetic_mnist()


@pytest.fixture(scope="session")
def real_mnist() -> MNIST:
    """Real MNIST through the project's own chain (the cache after the first load)."""
    from cnn.data import load_mnist

    return load_mnist(os.environ.get("CNN_DATA_DIR", ROOT / "data"))
