"""Every network trains on every dataset: through the job manager, from the Train page and from the CLI (SYNTHETIC
data: bars whose row is the class, learnable in a few steps), and each checkpoint says what it is and refuses the
other dataset with a sentence."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import streamlit as st
import torch
from streamlit.testing.v1 import AppTest

from cnn import load_model
from cnn.checkpoint import CheckpointError
from cnn.config import PRESETS, presets_for
from cnn.data import DATASETS, FASHION_SPEC, to_float, write_cache
from cnn.jobs import JobManager
from cnn.model import NETWORKS, count_parameters
from cnn.runs import list_runs, read_filter_snapshots, run_name_stem
from tests.conftest import ROOT, synthetic_mnist

CPU = torch.device("cpu")
OTHER = {"mnist": "fashion", "fashion": "mnist"}
# What each network's conv1 is, read off its definition in cnn/model.py (None: no convolution to replay).
CONV1 = {"cnn": (32, 3, 3), "one-conv": (32, 3, 3), "lenet": (6, 5, 5), "mlp": None, "softmax": None}


def accuracy_of(model, data) -> float:
    """The share of data's test images the model reads right, computed here by calling the model directly."""
    with torch.no_grad():
        predicted = model(to_float(data.test_images)).argmax(1)
    return (predicted == data.test_labels).double().mean().item()


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("network", list(NETWORKS))
def test_each_network_trains_on_each_dataset_and_its_checkpoint_says_so(network, dataset, tmp_path):
    data = synthetic_mnist(dataset=dataset)
    manager = JobManager(lambda name: data, runs_dir=tmp_path / "runs", device=CPU)
    # The network's default recipe (softmax regression: the softmax preset; the others: ARTICLE), 8 steps of 64.
    config = PRESETS[presets_for(network)[0]].replace(architecture=network, dataset=dataset, epochs=1, batch_size=64)
    job = manager.wait(manager.submit(config, "run", owner="alice"), timeout=300)
    manager.stop_all()
    assert job["status"] == "finished", job["error"]
    assert job["step"] == 8 and len(job["epochs"]) == 1

    model, card = load_model(tmp_path / "runs" / "run" / "model.pt")
    assert (card["network"], card["dataset"]) == (network, dataset)
    assert (model.network, model.dataset) == (network, dataset) and type(model) is NETWORKS[network].make
    assert card["parameters"] == count_parameters(model)
    assert card["accuracy"] == pytest.approx(accuracy_of(model, data), abs=1e-9)  # the weights that were tested
    snapshots = read_filter_snapshots(tmp_path / "runs" / "run")
    if CONV1[network] is None:
        assert snapshots is None  # nothing to replay: no filters
    else:
        assert snapshots[1].shape[1:] == CONV1[network] and snapshots[0][0] == 0  # from the random start
    # Listed on disk with what it is (the Train page's history and model choice read this card).
    listed = {run.name: run for run in list_runs(tmp_path / "runs", include_bundled=False)}
    assert listed["run"].card["network"] == network and listed["run"].card["dataset"] == dataset

    with pytest.raises(CheckpointError) as refused:
        load_model(tmp_path / "runs" / "run" / "model.pt", dataset=OTHER[dataset])
    trained, other = DATASETS[dataset].title, DATASETS[OTHER[dataset]].title
    assert f"was trained on {trained}" in str(refused.value) and f"not on {other}" in str(refused.value)
    assert str(tmp_path) not in str(refused.value)  # a sentence, not the server's path


def test_the_default_run_names_say_dataset_and_network_unless_they_are_the_tutorials():
    assert run_name_stem("fast", "cnn", "mnist") == "fast"  # the tutorial's runs keep their short names
    assert run_name_stem("softmax", "softmax", "mnist") == "softmax"
    assert run_name_stem("article", "softmax", "mnist") == "softmax-article"
    assert run_name_stem("fast", "mlp", "fashion") == "fashion-mlp-fast"
    assert run_name_stem("article", "cnn", "fashion") == "fashion-article"


# ---------------------------------------------------------------- the CLI

def synthetic_cache(spec, folder) -> None:
    """A full-size SYNTHETIC cache (60,000 / 10,000 images: the sizes the spec checks), bars as in conftest."""
    rng = np.random.default_rng(0)

    def make(n):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
        for label in range(10):
            images[labels == label, 2 + 2 * label: 4 + 2 * label, 4:24] = 255
        return images, labels.astype(np.uint8)

    (train_images, train_labels), (test_images, test_labels) = make(spec.train_size), make(spec.test_size)
    write_cache({"train_images": train_images, "train_labels": train_labels, "test_images": test_images,
                 "test_labels": test_labels}, folder, spec)


def test_the_cli_trains_lenet_on_fashion_and_evaluate_reports_fashion(tmp_path):
    synthetic_cache(FASHION_SPEC, tmp_path / "data")
    env = {**os.environ, "CNN_DATA_DIR": str(tmp_path / "data"), "CNN_RUNS_DIR": str(tmp_path / "runs"),
           "CNN_TRAIN_THREADS": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "cnn", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=600)

    trained = cli("train", "--network", "lenet", "--dataset", "fashion", "--epochs", "1", "--max-steps", "3",
                  "--out", "lenet-fashion")
    assert trained.returncode == 0, trained.stderr[-2000:]  # it had crashed since issue 11 (on_start)
    checkpoint = tmp_path / "runs" / "lenet-fashion" / "model.pt"
    card = json.loads(checkpoint.with_suffix(".json").read_text())
    assert (card["network"], card["dataset"], card["steps"]) == ("lenet", "fashion", 3)
    assert card["preset"] == presets_for("lenet")[0]  # no --preset: the network's default recipe

    evaluated = cli("evaluate", str(checkpoint), "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    report = json.loads(evaluated.stdout)
    assert (report["dataset"], report["network"], report["n"]) == ("fashion", "lenet", 10_000)
    assert report["class_names"][-1] == "Ankle boot"
    assert report["accuracy"] == pytest.approx(card["accuracy"])  # the same weights on the same 10,000 images

    refused = cli("evaluate", str(checkpoint), "--dataset", "mnist", "--json")
    assert refused.returncode == 1 and "trained on Fashion-MNIST" in refused.stderr
    assert "Traceback" not in refused.stderr


# ---------------------------------------------------------------- the Train page (AppTest)

@pytest.fixture
def train_app(tmp_path, monkeypatch):
    """The app on a laptop (its one user is the teacher) whose datasets are SYNTHETIC: 512 training images each,
    so a 1-epoch run is 8 steps of 64. Put in the server's shared data holders before the first page loads them."""
    from streamlit import config

    from pages.shared import data_holder, job_manager

    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    for name in DATASETS:
        data_holder(name).data = synthetic_mnist(dataset=name)
    address = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    yield AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    config.set_option("server.address", address)
    job_manager().stop_all()
    st.cache_resource.clear()


def set_form(app, **values) -> None:
    """Set the Train form's kept widgets (one rerun each, as a browser sends each change)."""
    for key, value in values.items():
        widget = app.selectbox(key=f"kept.{key}") if key in ("dataset", "network", "preset") else (
            app.number_input(key=f"kept.{key}"))
        widget.set_value(value).run()
        assert not app.exception, app.exception


def test_choosing_a_network_brings_its_default_preset_and_the_softmax_preset_brings_its_network(train_app):
    app = train_app
    app.switch_page("pages/train.py").run()
    assert not app.exception
    assert [app.selectbox(key=f"kept.{k}").value for k in ("dataset", "network", "preset")] == [
        "mnist", "cnn", "article"]  # ARTICLE is the article's network on MNIST
    set_form(app, dataset="fashion")
    captions = " ".join(c.value for c in app.caption)
    assert "T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot" in captions
    set_form(app, network="softmax")
    assert app.selectbox(key="kept.preset").value == "softmax"  # softmax regression's default recipe
    assert app.number_input(key="kept.epochs").value == 5 and app.number_input(key="kept.lr").value == 0.5
    assert NETWORKS["softmax"].lesson in " ".join(c.value for c in app.caption)
    assert app.text_input(key="kept.run_name").value.startswith("fashion-softmax-")
    set_form(app, preset="fast")  # FAST trains softmax regression too: the network stays
    assert app.selectbox(key="kept.network").value == "softmax"
    set_form(app, network="mlp")
    assert app.selectbox(key="kept.preset").value == "article"
    assert app.text_input(key="kept.run_name").value.startswith("fashion-mlp-article-")
    set_form(app, preset="softmax")  # SGD from zeros cannot train an MLP: the preset brings its own network
    assert app.selectbox(key="kept.network").value == "softmax"


@pytest.mark.parametrize("network, dataset", [("cnn", "fashion"), ("softmax", "mnist"), ("mlp", "fashion"),
                                              ("lenet", "mnist"), ("one-conv", "fashion")])
def test_each_network_trains_from_the_train_page_and_can_be_made_active(train_app, network, dataset):
    from pages.shared import job_manager

    app = train_app
    app.switch_page("pages/train.py").run()
    set_form(app, dataset=dataset, network=network, epochs=1, batch=64)
    # Only the keep-probabilities this network's dropout uses are offered (LeNet and softmax regression have none).
    sliders = sorted(slider.label for slider in app.slider)
    assert sliders == {"cnn": ["Keep-probability, conv", "Keep-probability, hidden"], "one-conv": [
        "Keep-probability, conv", "Keep-probability, hidden"], "mlp": ["Keep-probability, hidden",
        "Keep-probability, input pixels"], "lenet": [], "softmax": []}[network], sliders
    app.text_input(key="kept.run_name").set_value(f"page-{network}")
    next(b for b in app.button if b.label == "Start").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    job = job_manager().jobs()[0]
    assert (job["name"], job["config"]["architecture"], job["config"]["dataset"]) == (
        f"page-{network}", network, dataset)
    assert job_manager().wait(job["id"], timeout=300)["status"] == "finished"
    app.run()
    assert not app.exception
    row = next(row for row in app.dataframe[0].value.to_dict("records") if row["run"] == f"page-{network}")
    assert (row["network"], row["dataset"]) == (NETWORKS[network].title, DATASETS[dataset].title)
    choice = app.selectbox(key="active_model_choice")
    label = f"page-{network}" + ("" if (network, dataset) == ("cnn", "mnist") else
                                 f" ({NETWORKS[network].title} on {DATASETS[dataset].title})")
    assert label in choice.options
    choice.set_value(f"page-{network}").run()
    assert not app.exception
    assert any(c.value == f"page-{network}: {NETWORKS[network].title} on {DATASETS[dataset].title}." for c in app.caption)
    probe = AppTest.from_string("""
import streamlit as st
from pages.shared import active_model
model, card, run = active_model()
st.write(f"{run}|{model.network}|{model.dataset}")
""", default_timeout=120)
    probe.session_state["active_run"] = app.session_state["active_run"]  # the choice the Train page made
    probe.run()
    assert probe.markdown[0].value == f"page-{network}|{network}|{dataset}"


def fashion_bundle(folder):
    """A stand-in for models/fashion-cnn.pt (being trained meanwhile): the article's CNN for Fashion-MNIST, fresh
    weights, saved as the bundled model is, card and all."""
    from cnn.checkpoint import make_card, save_checkpoint
    from cnn.config import ARTICLE
    from cnn.model import build_model

    config = ARTICLE.replace(dataset="fashion")
    model = build_model(config, generator=torch.Generator().manual_seed(0))
    return save_checkpoint(folder / "fashion-cnn.pt", model, make_card(config, model, status="finished", epochs=1,
                                                                       steps=469, accuracy=0.5))


def test_the_bundled_fashion_model_is_offered_beside_the_mnist_one_and_the_pages_follow_it(train_app, tmp_path,
                                                                                         monkeypatch):
    from cnn import checkpoint

    monkeypatch.setitem(checkpoint.BUNDLED_MODELS, "bundled-fashion", fashion_bundle(tmp_path))
    # Beside it, as in models/, the MNIST article run's filter history: not the Fashion model's, so never shown for it.
    shutil.copy(ROOT / "models" / "filters.npz", tmp_path / "filters.npz")
    app = train_app
    app.switch_page("pages/train.py").run()
    assert not app.exception
    replay = "**How conv1's"
    assert any(m.value.startswith(replay) for m in app.markdown)  # the bundled MNIST model's own history
    choice = app.selectbox(key="active_model_choice")
    assert choice.options[:2] == ["bundled (the article's CNN on MNIST, shipped with the app)",
                                 "bundled-fashion (the article's CNN on Fashion-MNIST, shipped with the app)"]
    choice.set_value("bundled-fashion").run()
    assert not app.exception and app.session_state["active_run"] == "bundled-fashion"
    rows = {row["run"]: row for row in app.dataframe[0].value.to_dict("records")}
    assert (rows["bundled-fashion"]["dataset"], rows["bundled"]["dataset"]) == ("Fashion-MNIST", "MNIST")
    assert not any(m.value.startswith(replay) for m in app.markdown)
    # Nor its training curves: models/metrics.jsonl lies beside both bundled models too.
    shutil.copy(ROOT / "models" / "metrics.jsonl", tmp_path / "metrics.jsonl")
    app.multiselect(key="kept.overlay").set_value(["bundled-fashion"]).run()
    assert not app.exception
    assert any(m.value == "These runs have no finished epoch to compare." for m in app.caption)
    app.multiselect(key="kept.overlay").set_value(["bundled"]).run()
    assert not any(m.value == "These runs have no finished epoch to compare." for m in app.caption)
    app.switch_page("pages/home.py").run()  # another page, with the Fashion model active
    assert not app.exception
    # Home speaks of the active model in its dataset's words: clothes, not digits.
    text = " ".join(m.value for m in app.markdown)
    assert "the article's CNN on Fashion-MNIST" in text and "A 28x28 grey image of a piece of clothing" in text
    assert "one per digit" not in text and "handwritten digit:" not in text
    assert any(link.label == "Draw a piece of clothing and see it read, live" for link in app.get("page_link"))


def test_a_students_form_offers_the_networks_the_class_allows(train_app, monkeypatch):
    from cnn.classroom import ClassSettings, write_class_settings
    from pages.shared import job_manager

    monkeypatch.setenv("CNN_TEACHER_TOKEN", "a-class-server-token")  # a class server: this session is a student
    app = train_app
    app.switch_page("pages/train.py").run()
    assert not app.exception
    assert len(app.selectbox(key="kept.network").options) == len(NETWORKS)  # FAST trains every network
    set_form(app, network="lenet", dataset="fashion")
    assert app.selectbox(key="kept.preset").value == "fast"  # ARTICLE is not the class's: LeNet's first allowed
    write_class_settings(os.environ["CNN_RUNS_DIR"], ClassSettings(allowed_presets=("softmax",), max_epochs=1))
    app.run()
    assert not app.exception
    # The kept LeNet is put back to the only network the softmax recipe (SGD from zeros) can train.
    assert app.selectbox(key="kept.network").options == ["Softmax regression"]
    assert app.selectbox(key="kept.preset").value == "softmax"
    next(b for b in app.button if b.label == "Start").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    job = job_manager().jobs()[0]
    assert (job["config"]["architecture"], job["config"]["dataset"], job["preset"]) == ("softmax", "fashion", "softmax")


def test_start_pressed_on_a_form_the_class_no_longer_allows_starts_nothing_and_says_why(train_app, monkeypatch):
    """A student's page still shows An MLP with FAST when the teacher allows only the softmax baseline: the Start
    pressed on it (the first run of the page since) must not start the softmax run the form is put back to, unseen;
    the sentence says why, and the next Start starts what the form now shows."""
    from cnn.classroom import ClassSettings, write_class_settings
    from pages.shared import job_manager

    monkeypatch.setenv("CNN_TEACHER_TOKEN", "a-class-server-token")  # a class server: this session is a student
    app = train_app
    app.switch_page("pages/train.py").run()
    set_form(app, network="mlp")
    assert app.selectbox(key="kept.preset").value == "fast"
    write_class_settings(os.environ["CNN_RUNS_DIR"], ClassSettings(allowed_presets=("softmax",), max_epochs=1))
    next(b for b in app.button if b.label == "Start").click().run()  # pressed on the MLP + FAST form
    assert not app.exception
    assert job_manager().jobs() == []
    assert any("Your teacher has changed what students may start" in w.value for w in app.warning)
    assert app.selectbox(key="kept.network").value == "softmax" and app.selectbox(key="kept.preset").value == "softmax"
    next(b for b in app.button if b.label == "Start").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert [job["preset"] for job in job_manager().jobs()] == ["softmax"]


def test_the_default_run_name_follows_even_when_the_browser_sends_an_older_default(train_app):
    """A choice made while the page still draws arrives with the name the browser showed one run earlier: that is
    still a name the page gave, not one the student typed, so the next default replaces it."""
    app = train_app
    app.switch_page("pages/train.py").run()
    name = app.text_input(key="kept.run_name")
    first = name.value
    set_form(app, dataset="fashion")
    assert app.text_input(key="kept.run_name").value.startswith("fashion-article-")
    app.text_input(key="kept.run_name").set_value(first)  # the stale echo, sent with the next choice
    app.selectbox(key="kept.network").set_value("mlp").run()
    assert app.text_input(key="kept.run_name").value.startswith("fashion-mlp-article-")
    app.text_input(key="kept.run_name").set_value("my-own-name").run()  # typed: kept through a new choice
    app.selectbox(key="kept.network").set_value("lenet").run()
    assert app.text_input(key="kept.run_name").value == "my-own-name"
