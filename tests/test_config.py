"""cnn.config: the presets are valid, and a config a forged Train form could send is refused with a sentence."""
import math

import pytest

from cnn.config import ARTICLE, FAST, FAST_ON_GPU, PRESETS, SOFTMAX, form_config, preset_label


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


def test_a_runs_preset_label_says_changed_only_when_its_recipe_is_not_the_presets():
    assert preset_label(FAST.to_dict()) == "fast"
    # What it learns, on which network, for how long and from which seed is not the recipe.
    assert preset_label(FAST.replace(architecture="lenet", dataset="fashion", epochs=3, seed=7).to_dict()) == "fast"
    assert preset_label(FAST.replace(**FAST_ON_GPU).to_dict()) == "fast"  # what FAST is on a GPU
    assert preset_label(ARTICLE.replace(**FAST_ON_GPU).to_dict()) == "article, changed"  # only FAST has a GPU form
    assert preset_label(FAST.replace(batch_size=128).to_dict()) == "fast, changed"
    assert preset_label(FAST.replace(precision="fp32").to_dict()) == "fast, changed"
    # FAST before 2026-11-27: batch 128, lr 0.01, all 60,000 images (the bundled Fashion model's is older still).
    old_fast = {**FAST.to_dict(), "batch_size": 128, "learning_rate": 0.01}
    del old_fast["epoch_images"]  # a card from before the field: it trained on the whole set
    assert preset_label(old_fast) == "fast, changed"
    assert preset_label(ARTICLE.to_dict()) == "article" and preset_label(SOFTMAX.to_dict()) == "softmax"
    article_card = {k: v for k, v in ARTICLE.to_dict().items() if k not in ("epoch_images", "precision")}
    assert preset_label(article_card) == "article"  # older cards lack newer fields, whose defaults are ARTICLE's
    assert preset_label({"name": "mine", "batch_size": 3}) == "mine"  # no such preset: its name
    assert preset_label(None) == preset_label({}) == preset_label({"name": 5}) == "?"
