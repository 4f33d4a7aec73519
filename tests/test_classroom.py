"""cnn.classroom and the teacher role: who is the teacher, what students may start, the class's settings on disk.

Pure logic first; then the app's sessions through Streamlit's AppTest (the teacher link, the class model, the
Teacher page), with a throwaway runs folder and the bundled model.
"""
import json
import logging

import pytest
import streamlit as st
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from cnn.classroom import (CLASS_SETTINGS_FILE, ClassSettings, class_model_choices, forwarded, is_class_server,
                           proxied_client, read_class_settings, run_rows, settings_from_form, settings_stamp,
                           student_presets, student_refusal, teacher_link, token_matches, token_problem,
                           write_class_settings)
from cnn.config import ARTICLE, FAST, SOFTMAX
from tests.conftest import ROOT

TOKEN = "a-teacher-token-for-tests"


# ---------------------------------------------------------------- the role

@pytest.mark.parametrize("address, token, expected", [
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False), ("127.0.1.1", None, False),
    (None, None, True), ("", None, True),  # Streamlit's default: every interface
    ("0.0.0.0", None, True), ("192.168.1.20", None, True), ("::", None, True), ("classroom-pc", None, True),
    ("127.0.0.1", TOKEN, True),  # a token makes any server a class server
])
def test_a_class_server_has_a_token_or_listens_beyond_loopback(address, token, expected):
    assert is_class_server(address, token) is expected


def test_a_request_through_a_reverse_proxy_counts_as_a_students():
    # Bound to 127.0.0.1 behind nginx, every student connects from loopback: the proxy's headers tell them apart.
    assert forwarded({"X-Forwarded-For": "10.0.0.7"}) and forwarded({"x-real-ip": "10.0.0.7"})
    assert forwarded({"Forwarded": "for=10.0.0.7"})
    assert not forwarded({"Host": "localhost:8501", "User-Agent": "Chromium"}) and not forwarded({})
    assert forwarded(object())  # in doubt: a student


def test_a_proxied_client_is_the_address_the_proxy_appended_not_one_the_client_wrote():
    class Headers(dict):  # tornado's HTTPHeaders: a repeated header is kept once per line
        def get_all(self, name):
            return self[name]

    # nginx appends the address it saw; a student can write anything before it.
    assert proxied_client({"X-Forwarded-For": "10.0.0.7"}) == "10.0.0.7"
    assert proxied_client({"X-Forwarded-For": "127.0.0.1, 10.9.0.1 , 10.0.0.7 "}) == "10.0.0.7"
    assert proxied_client(Headers({"X-Forwarded-For": ["1.2.3.4", "10.0.0.8"]})) == "10.0.0.8"
    # No address at all: every such client is one "computer", never a free pass.
    for headers in ({}, {"X-Real-IP": "10.0.0.7"}, {"X-Forwarded-For": ""}, {"X-Forwarded-For": 42}, object()):
        assert proxied_client(headers) == "behind a proxy"
    assert len(proxied_client({"X-Forwarded-For": "9" * 10_000})) == 64


def test_the_settings_stamp_changes_with_every_save_even_of_the_same_size(tmp_path):
    assert settings_stamp(tmp_path) is None  # no file yet: the defaults
    write_class_settings(tmp_path, ClassSettings(max_epochs=2))
    first = settings_stamp(tmp_path)
    write_class_settings(tmp_path, ClassSettings(max_epochs=3))  # the same number of bytes
    second = settings_stamp(tmp_path)
    assert first is not None and second is not None and second != first
    assert settings_stamp(tmp_path) == second  # read again, unchanged


def test_only_the_exact_token_makes_a_teacher():
    assert token_matches(TOKEN, TOKEN)
    for offered in (TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "", None, ["a"], 42, "x" * 10_000):
        assert not token_matches(offered, TOKEN)
    assert not token_matches("", None) and not token_matches("anything", None)  # no token: nobody by link


def test_a_short_or_odd_chosen_token_is_refused_with_a_sentence():
    assert token_problem(TOKEN) == ""
    assert "at least 12 characters" in token_problem("secret")
    assert "without spaces" in token_problem("a token with spaces")


def test_the_teacher_link_puts_the_token_in_the_query():
    assert teacher_link("classroom-pc", 8501, "abc_DEF-123") == "http://classroom-pc:8501/?teacher=abc_DEF-123"
    assert teacher_link("fe80::1", 8501, "t") == "http://[fe80::1]:8501/?teacher=t"
    assert teacher_link("pc", 80, "a b&c") == "http://pc:80/?teacher=a%20b%26c"


# ---------------------------------------------------------------- what students may start

RULES = "students may start FAST or the softmax baseline, at most 2 epochs: ask your teacher for more."


@pytest.mark.parametrize("config, refused", [
    (ARTICLE, True),  # the old default Start: ARTICLE x 10
    (ARTICLE.replace(epochs=1), True),  # ARTICLE is not allowed at all
    (FAST.replace(epochs=3), True),
    (FAST.replace(epochs=2), False),
    (FAST, False),
    (FAST.replace(epochs=2, seed=7, batch_size=32, learning_rate=0.001, p_keep_conv=0.5, p_keep_hidden=0.6), False),
    (FAST.replace(optimizer="rmsprop_tf"), True),  # "fast" in name only
    (FAST.replace(init="normal", schedule="constant"), True),
    # A class's rule is about the recipe and epochs: any network, any dataset (issue 12).
    (FAST.replace(architecture="mlp"), False),
    (FAST.replace(architecture="softmax", dataset="fashion", epochs=2), False),
    (FAST.replace(architecture="lenet", dataset="fashion", optimizer="sgd"), True),  # still not FAST's recipe
    (FAST.replace(architecture="one-conv", epochs=3), True),  # still the class's epochs
    (SOFTMAX.replace(epochs=2), False),
    (SOFTMAX, True),  # its own default is 5 epochs
    (ARTICLE.replace(name="nonsense", epochs=1), True),
])
def test_student_refusal_under_the_default_class_settings(config, refused):
    refusal = student_refusal(config, ClassSettings())
    assert (refusal is not None) is refused
    if refused:
        assert refusal == "On this class server " + RULES


def test_student_refusal_when_no_training_or_anything_is_allowed():
    assert "only the teacher starts trainings" in student_refusal(FAST, ClassSettings(student_training="none"))
    assert student_refusal(ARTICLE, ClassSettings(student_training="any")) is None
    assert student_presets(ClassSettings(student_training="none")) == ()
    assert student_presets(ClassSettings(student_training="any")) == ("article", "fast", "softmax")
    assert student_presets(ClassSettings(allowed_presets=("softmax", "fast"))) == ("fast", "softmax")
    one = ClassSettings(allowed_presets=("softmax",), max_epochs=1)
    assert student_refusal(FAST.replace(epochs=1), one) == ("On this class server students may start the softmax "
                                                             "baseline, at most 1 epoch: ask your teacher for more.")


def test_a_forged_softmax_preset_run_of_a_cnn_is_still_refused_at_the_server(tmp_path):
    """The class allows the softmax preset; its all-zero start on a network with hidden layers is refused for
    everyone (TrainConfig.problem), before the class's rule is looked at."""
    from cnn.jobs import JobManager
    from tests.conftest import synthetic_mnist

    data = synthetic_mnist()
    manager = JobManager(lambda dataset: data, runs_dir=tmp_path / "runs")
    forged = SOFTMAX.replace(architecture="cnn", epochs=1)
    assert student_refusal(forged, ClassSettings()) is None  # the class's rule alone would let it through
    for network in ("cnn", "mlp", "lenet", "one-conv"):
        with pytest.raises(ValueError, match="cannot start from all-zero weights"):
            manager.submit(SOFTMAX.replace(architecture=network, epochs=1), f"forged-{network}", "student",
                           teacher=False)
    assert manager.jobs() == [] and not (tmp_path / "runs").exists()


def test_a_class_offers_the_networks_its_presets_can_train():
    from cnn.classroom import network_presets, trainable_networks

    assert trainable_networks(("fast", "softmax")) == ("cnn", "softmax", "mlp", "lenet", "one-conv")
    assert trainable_networks(("softmax",)) == ("softmax",)  # the softmax recipe trains softmax regression only
    assert network_presets("softmax", ("article", "fast", "softmax")) == ("softmax", "article", "fast")
    assert network_presets("mlp", ("fast", "softmax")) == ("fast",)
    assert network_presets("cnn", ("softmax",)) == ()


def test_the_bundled_fashion_model_can_be_the_class_model(tmp_path):
    chosen = ClassSettings(class_model="bundled-fashion")
    assert chosen.problem() == ""
    write_class_settings(tmp_path, chosen)
    assert read_class_settings(tmp_path).class_model == "bundled-fashion"


# ---------------------------------------------------------------- the settings on disk

def test_class_settings_round_trip_and_defaults(tmp_path):
    assert read_class_settings(tmp_path) == ClassSettings()  # no file yet
    chosen = ClassSettings(student_training="any", allowed_presets=("softmax",), max_epochs=7, class_model="fast-1")
    write_class_settings(tmp_path, chosen)
    assert read_class_settings(tmp_path) == chosen
    assert json.loads((tmp_path / CLASS_SETTINGS_FILE).read_text())["allowed_presets"] == ["softmax"]
    with pytest.raises(ValueError):
        write_class_settings(tmp_path, ClassSettings(max_epochs=0))
    assert read_class_settings(tmp_path) == chosen  # a refused write left the file alone


@pytest.mark.parametrize("content", [
    b"{not json", b"\xff\xfe", b"[]", b'{"student_training": "everything"}', b'{"max_epochs": 2.5}',
    b'{"max_epochs": true}', b'{"allowed_presets": []}', b'{"allowed_presets": ["article", "huge"]}',
    b'{"class_model": "../../etc"}', b'{"extra": 1}', b'{"student_training": "any"' + b" " * 70_000 + b"}",
])
def test_a_corrupt_settings_file_gives_the_defaults_and_a_logged_sentence(tmp_path, caplog, content):
    (tmp_path / CLASS_SETTINGS_FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="cnn.classroom"):
        assert read_class_settings(tmp_path) == ClassSettings()
    assert "cannot be used" in caplog.text and "the defaults are used" in caplog.text
    assert str(tmp_path) not in caplog.text  # a sentence, without the server's path


def test_the_teacher_form_is_checked_not_trusted():
    current = ClassSettings(class_model="run-a")
    assert settings_from_form(current, "limited", ["fast"], 3.0) == ClassSettings(
        allowed_presets=("fast",), max_epochs=3, class_model="run-a")
    for training, presets, epochs in (("all", ["fast"], 2), ("limited", ["fast", "x"], 2), ("limited", [], 2),
                                      ("limited", ["fast"], 2.5), ("limited", ["fast"], -1), ("limited", "fast", 2)):
        with pytest.raises(ValueError, match="cannot be saved"):
            settings_from_form(current, training, presets, epochs)


def test_run_rows_split_active_and_ended_with_the_teachers_buttons():
    def job(id_, status, error=""):
        return {"id": id_, "name": f"run-{id_}", "status": status, "started_by": f"session 000{id_}",
                "test_accuracy": None, "error": error}

    finished = dict(job(5, "finished"), test_accuracy=0.99094, config=FAST.replace(
        architecture="mlp", dataset="fashion").to_dict())
    active, ended = run_rows([job(4, "queued"), job(3, "stopped", "Stopped by the teacher."), job(2, "paused"),
                              job(1, "running"), finished], me="session 0002")
    assert [(j["id"], j["actions"]) for j in active] == [(1, ("Pause", "Stop")), (2, ("Resume", "Stop")),
                                                        (4, ("Stop",))]
    assert [j["started_by"] for j in active] == ["session 0001", "you", "session 0004"]  # the teacher's own: "you"
    teachers = {"id": 6, "name": "run-6", "status": "running", "started_by": "the teacher", "session": "session 0006",
                "test_accuracy": None, "error": ""}
    assert run_rows([teachers], me="session 0006")[0][0]["started_by"] == "you"  # by its session's tag
    assert run_rows([teachers], me="session 0002")[0][0]["started_by"] == "the teacher"  # a second teacher's tab
    # Text a table shows as it is: no "None" for a run stopped before its first epoch.
    # Each ended run says what it trained (a job view from before issue 12 has no config: the article's CNN on MNIST).
    assert ended == [{"run": "run-5", "network": "an MLP", "dataset": "Fashion-MNIST", "started by": "session 0005",
                      "status": "finished", "accuracy": "99.09%", "note": ""},
                     {"run": "run-3", "network": "the article's CNN", "dataset": "MNIST", "started by": "session 0003",
                      "status": "stopped", "accuracy": "no epoch", "note": "Stopped by the teacher."}]


def test_class_model_choices_are_ended_runs_with_a_model(tmp_path):
    from cnn.runs import RunInfo

    def run(name, status, checkpoint=True, card=True):
        return RunInfo(name, tmp_path / name, tmp_path / name / "model.pt" if checkpoint else None,
                       {"status": status} if card else None)

    runs = [run("done", "finished"), run("halted", "stopped"), run("busy", "running"), run("broken", "failed"),
            run("no-model", "finished", checkpoint=False), run("no-card", "finished", card=False)]
    assert class_model_choices(runs) == ["bundled", "done", "halted"]
    # As list_runs gives them: the runs, then the bundled models; both bundled models come first, MNIST's leading.
    listed = runs + [run("bundled", "finished"), run("bundled-fashion", "finished")]
    assert class_model_choices(listed) == ["bundled", "bundled-fashion", "done", "halted"]


# ---------------------------------------------------------------- the app's sessions (AppTest)

@pytest.fixture
def class_server(tmp_path, monkeypatch):
    """The app as a class server (CNN_TEACHER_TOKEN set) with its own runs folder."""
    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CNN_CLASS_DIR", str(tmp_path / "class"))
    monkeypatch.setenv("CNN_TEACHER_TOKEN", TOKEN)
    monkeypatch.chdir(ROOT)
    address = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")  # loopback: the token alone makes it a class server
    st.cache_resource.clear()
    yield tmp_path / "runs"
    from pages.shared import job_manager
    try:
        job_manager().stop_all()
    except ValueError:  # a test that set a bad token: no job manager could be built
        pass
    st.cache_resource.clear()
    st_config.set_option("server.address", address)


def session(query: dict | None = None) -> AppTest:
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for key, value in (query or {}).items():
        app.query_params[key] = value
    return app.run()


def test_the_teacher_link_makes_a_teacher_and_leaves_the_address_bar(class_server):
    teacher = session({"teacher": TOKEN})
    assert not teacher.exception
    assert "teacher" not in teacher.query_params  # the token is gone from the address
    assert teacher.session_state["class_teacher"] is True
    student = session()
    assert "class_teacher" not in student.session_state
    wrong = session({"teacher": TOKEN + "x"})
    assert not wrong.exception and "teacher" not in wrong.query_params
    assert "class_teacher" not in wrong.session_state
    assert any("That teacher link is not right" in w.value for w in wrong.warning)
    assert all(TOKEN not in w.value for w in wrong.warning)


def test_a_student_opening_the_teacher_page_gets_a_sentence_only(class_server):
    student = session()
    student.switch_page("pages/teacher.py").run()
    assert not student.exception
    assert [i.value for i in student.info][0].startswith("This page is for the teacher.")
    how = [c.value for c in student.caption]  # how the teacher gets in, without the token
    assert any("`?teacher=`" in text and "CNN_TEACHER_TOKEN" in text for text in how)
    assert all(TOKEN not in text for text in how)
    assert not student.button and not student.radio and not student.dataframe

    teacher = session({"teacher": TOKEN})
    teacher.switch_page("pages/teacher.py").run()
    assert not teacher.exception
    assert "Clear the queue" not in [b.label for b in teacher.button]  # nothing queued
    assert teacher.radio[0].label == "Students may start"


def test_the_teacher_page_saves_what_students_may_start(class_server):
    teacher = session({"teacher": TOKEN})
    teacher.switch_page("pages/teacher.py").run()
    teacher.radio[0].set_value("none")
    teacher.button(key="FormSubmitter:rules-Save").click().run()
    assert not teacher.exception
    assert read_class_settings(class_server).student_training == "none"
    from pages.shared import job_manager
    with pytest.raises(ValueError, match="only the teacher starts trainings"):  # what a student's Start then meets
        job_manager().submit(FAST, "student-run", "student", teacher=False)


def test_the_class_model_is_used_by_sessions_that_chose_none(class_server):
    from tests.test_app_pages import save_run

    save_run(class_server, "class-run", config=FAST)
    probe = """
import streamlit as st
from pages.shared import active_model, active_model_source
model, card, run = active_model()
st.write(f"{run}|{active_model_source()}")
"""
    app = AppTest.from_string(probe, default_timeout=120).run()
    assert app.markdown[0].value == "bundled|the bundled model"
    write_class_settings(class_server, ClassSettings(class_model="class-run"))
    app.run()
    assert app.markdown[0].value == "class-run|the class model"
    app.session_state["active_run"] = "bundled"  # this session's own choice wins
    app.run()
    assert app.markdown[0].value == "bundled|your choice"
    write_class_settings(class_server, ClassSettings(class_model="gone-run"))  # a class model that does not load
    fresh = AppTest.from_string(probe, default_timeout=120).run()
    assert not fresh.exception and fresh.markdown[0].value == "bundled|the bundled model"


def test_home_and_draw_tell_the_teacher_the_class_model_is_their_own_choice(class_server):
    from tests.test_app_pages import save_run

    save_run(class_server, "class-run", config=FAST)
    write_class_settings(class_server, ClassSettings(class_model="class-run"))
    for who, words, caption in ((session(), "the class model your teacher chose", "chosen by your teacher"),
                                (session({"teacher": TOKEN}), "the class model you chose", "chosen by you")):
        who.switch_page("pages/home.py").run()
        assert not who.exception
        assert any(m.value.startswith(f"Active model: **class-run**, {words}:") for m in who.markdown)
        who.switch_page("pages/draw.py").run()
        assert not who.exception
        assert any(f"Read by the class model (run class-run, {caption})" in c.value for c in who.caption)


def test_the_teacher_deletes_one_class_drawing_and_resets_the_set_after_confirming(class_server):
    import numpy as np

    from cnn.classset import sample_files, save_sample

    folder = class_server.parent / "class"
    kept_drawing = save_sample(folder, np.full((28, 28), 255, np.uint8), 3)
    doomed = save_sample(folder, np.zeros((28, 28), np.uint8), 7)
    teacher = session({"teacher": TOKEN})
    teacher.switch_page("pages/teacher.py").run()
    teacher.radio(key="teacher-digit").set_value(7).run()
    assert not teacher.exception
    teacher.button(key=f"delete-{doomed.name}").click().run()
    assert not teacher.exception
    assert sample_files(folder) == [kept_drawing]  # only the chosen drawing went

    teacher.button(key="teacher-reset").click().run()  # asks first: nothing deleted yet
    assert sample_files(folder) == [kept_drawing]
    assert any("cannot be undone" in w.value for w in teacher.warning)
    teacher.button(key="teacher-reset-cancel").click().run()
    assert sample_files(folder) == [kept_drawing]
    teacher.button(key="teacher-reset").click().run()
    teacher.button(key="teacher-reset-confirm").click().run()
    assert not teacher.exception and sample_files(folder) == []


def test_a_server_on_every_interface_prints_a_teacher_link_once_and_it_works(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("CNN_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("CNN_TEACHER_TOKEN", raising=False)
    monkeypatch.chdir(ROOT)
    address = st_config.get_option("server.address")
    st_config.set_option("server.address", "0.0.0.0")
    st.cache_resource.clear()
    try:
        student = session()
        printed = capfd.readouterr().err
        links = [word for word in printed.split() if word.startswith("http") and "?teacher=" in word]
        assert len(links) == 1 and printed.count("This is a class server") == 1
        token = links[0].split("?teacher=")[1]
        assert len(token) >= 32 and token not in str(student.markdown) + str(student.caption)
        assert "class_teacher" not in student.session_state  # the first session is not the teacher by itself
        teacher = session({"teacher": token})
        assert teacher.session_state["class_teacher"] is True and "teacher" not in teacher.query_params
        assert "This is a class server" not in capfd.readouterr().err  # once per server
    finally:
        st.cache_resource.clear()
        st_config.set_option("server.address", address)


def test_a_short_chosen_token_stops_the_app_with_a_sentence(class_server, monkeypatch):
    monkeypatch.setenv("CNN_TEACHER_TOKEN", "1234")
    st.cache_resource.clear()
    app = session()
    assert not app.exception
    assert [e.value for e in app.error] == [
        "The class server is not set up right: CNN_TEACHER_TOKEN must be at least 12 characters long "
        "(a short one can be guessed)."]


def test_the_class_model_chooser_lists_the_bundled_fashion_model_and_runs_of_both_datasets_labelled(
        class_server, tmp_path, monkeypatch):
    from cnn import checkpoint
    from tests.test_app_pages import save_run
    from tests.test_networks_train import fashion_bundle

    monkeypatch.setitem(checkpoint.BUNDLED_MODELS, "bundled-fashion", fashion_bundle(tmp_path))
    save_run(class_server, "digits-run", config=FAST)
    save_run(class_server, "clothes-mlp", config=FAST.replace(architecture="mlp", dataset="fashion"))
    teacher = session({"teacher": TOKEN})
    teacher.switch_page("pages/teacher.py").run()
    assert not teacher.exception
    chooser = next(box for box in teacher.selectbox if box.label.startswith("Every session that has not chosen"))
    assert chooser.options[:2] == ["bundled (the article's CNN on MNIST, shipped with the app)",
                                  "bundled-fashion (the article's CNN on Fashion-MNIST, shipped with the app)"]
    assert sorted(chooser.options[2:]) == ["clothes-mlp (an MLP on Fashion-MNIST)", "digits-run"]
    chooser.set_value("bundled-fashion")
    teacher.button(key="FormSubmitter:class-model-Make it the class model").click().run()
    assert not teacher.exception and not teacher.error
    assert read_class_settings(class_server).class_model == "bundled-fashion"
    # Every session that chose nothing now reads clothes: the other pages follow model.dataset.
    probe = AppTest.from_string("""
import streamlit as st
from pages.shared import active_model, active_model_source
model, card, run = active_model()
st.write(f"{run}|{model.dataset}|{card['dataset']}|{active_model_source()}")
""", default_timeout=120).run()
    assert probe.markdown[0].value == "bundled-fashion|fashion|fashion|the class model"
