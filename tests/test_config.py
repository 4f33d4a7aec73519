"""cnn.config: the presets are valid, and a config a forged Train form could send is refused with a sentence."""
import math

import pytest

from cnn.config import ARTICLE, FAST, PRESETS, SOFTMAX, form_config


def test_every_preset_can_be_trained():
    assert [name for name, config in PRESETS.items() if config.problem()] == []


@pytest.mark.parametrize("field, value, words", [
    ("epochs", 0, "epochs must be a whole number"),
    ("epochs", 100_000, "epochs must be a whole number"),
    ("epochs", 2.5, "epochs must be a whole number"),
    ("batch_size", 0, "batch size"),
    ("batch_size", True, "batch size"),  # a bool is not a batch size, though Python counts it as an int
    ("learning_rate", 1e9, "learning rate"),
    ("learning_rate", 0.0, "learning rate"),
    ("learning_rate", math.nan, "learning rate"),
    ("learning_rate", math.inf, "learning rate"),
    ("p_keep_conv", 0.0, "keep-probabilities"),
    ("p_keep_hidden", 5.0, "keep-probabilities"),
    ("seed", -1, "seed"),
    ("architecture", "resnet", "network"),
    ("label_smoothing", 1.0, "label smoothing"),
])
def test_values_the_form_would_never_send_are_refused(field, value, words):
    problem = ARTICLE.replace(**{field: value}).problem()
    assert problem.startswith("This run cannot start: ") and words in problem


def test_form_values_become_a_config_and_forged_ones_a_sentence():
    config = form_config(FAST, epochs=2.0, batch_size=128.0, learning_rate=0.002, seed=3.0, p_keep_conv=0.9,
                         p_keep_hidden=0.75)
    assert (config.epochs, config.batch_size, config.seed) == (2, 128, 3)
    assert isinstance(config.epochs, int) and config.optimizer == "adam"  # the rest comes from the preset
    for forged in ({"epochs": math.nan}, {"batch_size": 1.5}, {"learning_rate": -1.0}, {"p_keep_conv": 0.0},
                   {"seed": "0; rm -rf /"}):
        with pytest.raises(ValueError, match="^This run cannot start: "):
            form_config(SOFTMAX, **forged)
