"""The CNN classroom engine: the tutorial's MNIST network, offline MNIST, training, checkpoints.

It never imports streamlit; the app's pages call these functions.
"""
from .checkpoint import CheckpointError, load_model
from .config import ARTICLE, FAST, PRESETS, SOFTMAX, TrainConfig
from .model import ConvNet, SoftmaxRegression, layer_table

__all__ = ["ARTICLE", "FAST", "PRESETS", "SOFTMAX", "CheckpointError", "ConvNet", "SoftmaxRegression",
           "TrainConfig", "layer_table", "load_model"]
