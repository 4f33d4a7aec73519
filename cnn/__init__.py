"""The CNN classroom engine: the tutorial's MNIST network and the networks to compare it with, MNIST and
Fashion-MNIST offline, training, checkpoints, what happens inside a network (one unit end to end, what a unit
wants to see, the hidden layer's map of the test set, layer health), and experiments on a copy of a network
(filter surgery, transformed images, adversarial examples).

It never imports streamlit; the app's pages call these functions.
"""
from .adversarial import Fooling, adversarial, fool, smallest_flipping_epsilon
from .checkpoint import CheckpointError, load_model
from .config import ARTICLE, FAST, PRESETS, SOFTMAX, TrainConfig
from .data import DATASETS, DataError, load_dataset
from .experiments import quick_accuracy
from .health import HealthMonitor, activation_health, gradient_norms, health_layers, weight_histograms
from .inside import channel_contributions, conv_unit, dense_unit, overview_columns, pool_window, receptive_field
from .model import NETWORKS, ConvNet, SoftmaxRegression, build_model, layer_table
from .optvis import beating_fraction, check_units, top_patches, unit_activation, visualize_unit
from .projection import (PROJECTIONS, Projection, alignment, cached_projection, fit_projection, hidden_projection,
                         neighbour_accuracy)
from .surgery import CLASSIC_KERNELS, ablatable_layers, ablation_sweep, classic_kernel, editable_kernels, edited_model
from .transforms import (CURVE_VALUES, TRANSFORM_RANGES, class_sweep, robustness_curve, transform_image,
                         transform_images)

__all__ = ["ARTICLE", "CheckpointError", "CLASSIC_KERNELS", "ConvNet", "CURVE_VALUES", "DataError", "DATASETS",
           "FAST", "Fooling", "HealthMonitor", "NETWORKS", "PRESETS", "Projection", "PROJECTIONS", "SOFTMAX",
           "SoftmaxRegression", "TrainConfig", "TRANSFORM_RANGES", "ablatable_layers", "ablation_sweep",
           "activation_health", "adversarial", "alignment", "beating_fraction", "build_model", "cached_projection",
           "channel_contributions", "check_units", "class_sweep", "classic_kernel", "conv_unit", "dense_unit",
           "editable_kernels", "edited_model", "fit_projection", "fool", "gradient_norms", "health_layers",
           "hidden_projection", "layer_table", "load_dataset", "load_model", "neighbour_accuracy",
           "overview_columns", "pool_window", "quick_accuracy", "receptive_field", "robustness_curve",
           "smallest_flipping_epsilon", "top_patches", "transform_image", "transform_images", "unit_activation",
           "visualize_unit", "weight_histograms"]
