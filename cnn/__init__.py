"""The CNN classroom engine: the tutorial's MNIST network and the networks to compare it with, MNIST and
Fashion-MNIST offline, training, checkpoints.

It never imports streamlit; the app's pages call these functions.
"""
from .checkpoint import CheckpointError, load_model
from .config import ARTICLE, FAST, PRESETS, SOFTMAX, TrainConfig
from .data import DATASETS, DataError, load_dataset
from .model import NETWORKS, ConvNet, SoftmaxRegression, build_model, layer_table

__all__ = ["ARTICLE", "DATASETS", "FAST", "NETWORKS", "PRESETS", "SOFTMAX", "CheckpointError", "ConvNet", "DataError",
           "SoftmaxRegression", "TrainConfig", "build_model", "layer_table", "load_dataset", "load_model"]
