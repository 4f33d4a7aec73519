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


def test_draw_page_renders_with_a_hint_and_no_prediction(app):
    app.switch_page("pages/draw.py").run()
    assert not app.exception
    assert any("Draw a digit" in info.value for info in app.info)


def test_feature_page_renders_for_a_test_image(app):
    app.switch_page("pages/features.py").run()
    assert not app.exception
    assert any("Input: test image #0 (label 7), read as 7." in c.value for c in app.caption)
    app.radio(key="layer").set_value(3).run()
    app.radio(key="stage").set_value("pool").run()
    assert not app.exception
    assert any("sums are added" in m.value for m in app.markdown)


def test_feature_page_shows_a_drawing_sent_from_draw(app):
    import numpy as np

    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 13:15] = 255
    app.session_state["chosen_image"] = {"image": image.tolist(), "label": "your drawing"}
    app.session_state["image_source"] = "sent"
    app.switch_page("pages/features.py").run()
    assert not app.exception
    assert any(c.value.startswith("Input: your drawing, read as 1") for c in app.caption)


def _png_of_a_one() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    paper = np.full((120, 90), 250, dtype=np.uint8)
    paper[15:105, 40:52] = 10  # dark ink on light paper, as a phone photo of a "1"
    buffer = io.BytesIO()
    Image.fromarray(paper).save(buffer, format="PNG")
    return buffer.getvalue()


def test_feature_page_renders_for_an_upload_and_rejects_a_non_image(app):
    app.switch_page("pages/features.py").run()
    app.radio(key="image_source_radio").set_value("Upload").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert not app.exception
    assert any(c.value.startswith("Input: upload one.png, read as 1") for c in app.caption)
    app.file_uploader[0].set_value(("notes.png", b"these are my notes", "image/png")).run()
    assert not app.exception
    assert any("not an image this app can read" in e.value for e in app.error)


def test_draw_page_upload_predicts_and_rejects(app):
    app.switch_page("pages/draw.py").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert not app.exception
    assert any("It's a 1" in m.value for m in app.markdown)
    app.file_uploader[0].set_value(("fake.jpg", b"\xff\xd8\xff garbage", "image/jpeg")).run()
    assert any("could not be read" in e.value or "not an image" in e.value for e in app.error)


def test_draw_page_saves_a_labelled_upload_to_the_class_set(app, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_CLASS_DIR", str(tmp_path / "class"))
    app.switch_page("pages/draw.py").run()
    app.file_uploader[0].set_value(("one.png", _png_of_a_one(), "image/png")).run()
    assert any(caption == "No class drawings saved yet: draw a digit, then press its number." for caption in
               (c.value for c in app.caption))
    app.pills[0].set_value(1).run()
    assert not app.exception
    assert [t.value for t in app.toast] == ["Saved as a 1 to the class's handwriting set."]
    assert len(list((tmp_path / "class" / "1").glob("*.png"))) == 1
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Active model on the class's drawings"] == "100%"
