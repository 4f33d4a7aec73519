"""The CNN classroom engine: the tutorial's MNIST network and the networks to compare it with, MNIST and
Fashion-MNIST offline, training, checkpoints, and what happens inside a network (one unit end to end, what a unit
wants to see, the hidden layer's map of the test set, layer health).

It never imports streamlit; the app's pages call these functions.
"""
from .checkpoint import CheckpointError, load_model
from .config import ARTICLE, FAST, PRESETS, SOFTMAX, TrainConfig
from .data import DATASETS, DataError, load_dataset
from .health import HealthMonitor, activation_health, gradient_norms, health_layers, weight_histograms
from .inside import channel_contributions, conv_unit, dense_unit, overview_columns, pool_window, receptive_field
from .model import NETWORKS, ConvNet, SoftmaxRegression, build_model, layer_table
from .optvis import beating_fraction, check_units, top_patches, unit_activation, visualize_unit
from .projection import (PROJECTIONS, Projection, alignment, cached_projection, fit_projection, hidden_projection,
                         neighbour_accuracy)

__all__ = ["ARTICLE", "DATASETS", "FAST", "NETWORKS", "PRESETS", "PROJECTIONS", "SOFTMAX", "CheckpointError",
           "ConvNet", "DataError", "HealthMonitor", "Projection", "SoftmaxRegression", "TrainConfig",
           "activation_health", "alignment", "beating_fraction", "build_model", "cached_projection",
           "channel_contributions", "check_units", "conv_unit", "dense_unit", "fit_projection", "gradient_norms",
           "health_layers", "hidden_projection", "layer_table", "load_dataset", "load_model", "neighbour_accuracy",
           "overview_columns", "pool_window", "receptive_field", "top_patches", "unit_activation", "visualize_unit",
           "weight_histograms"]
