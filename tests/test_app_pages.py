"""AppTest: every page renders with the bundled model and no exception; the Train form starts and refuses."""
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "app.py")


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()  # a fresh job manager that uses this test's runs folder
    yield AppTest.from_file(APP, default_timeout=120)
    from pages.shared import job_manager
    job_manager().stop_all()
    st.cache_resource.clear()


def test_home_page_shows_the_network_and_the_bundled_model(app):
    app.run()
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Active model"] == "bundled (ARTICLE)"
    assert float(metrics["Test accuracy (10,000 images)"].rstrip("%")) >= 99.0
    table = app.dataframe[0].value
    assert list(table["layer"])[:4] == ["input", "conv1", "relu1", "pool1"]
    assert int(table["weights"].sum()) == 1_378_698


def test_train_page_renders_and_refuses_a_bad_run_name(app):
    app.switch_page("pages/train.py").run()
    assert not app.exception
    app.text_input[0].set_value("../../etc")  # inside the form: sent with the click below
    app.button[0].click().run()  # the form's Start
    assert not app.exception
    assert any("not a valid run name" in e.value for e in app.error)


def test_train_page_starts_a_run_in_the_background(app):
    from pages.shared import job_manager

    app.switch_page("pages/train.py").run()
    app.selectbox(key="preset").set_value("fast").run()
    app.text_input[0].set_value("apptest-run")
    app.button[0].click().run()
    assert not app.exception and not app.error
    jobs = job_manager().jobs()
    assert [job["name"] for job in jobs] == ["apptest-run"] and jobs[0]["preset"] == "fast"
    assert jobs[0]["status"] in ("queued", "running")
