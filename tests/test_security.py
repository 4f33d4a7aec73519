"""Security settings a class server depends on."""
import tomllib

from tests.conftest import ROOT


def test_streamlit_config_is_locked_down():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"]["maxUploadSize"] <= 2
    assert config["server"]["headless"] is True
    assert config["server"]["fileWatcherType"] == "none"
    assert config["browser"]["gatherUsageStats"] is False
    assert config["client"]["showErrorDetails"] == "none"


def test_streamlit_config_skips_the_full_collection_after_every_run():
    # On by default; with torch loaded it is a ~270 ms pause for the whole server after each stroke (load test).
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False


def test_every_torch_load_uses_weights_only():
    for path in (ROOT / "cnn").glob("*.py"):
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"


def test_no_page_opens_a_path_built_from_user_text():
    # Pages reach files only through checkpoint_for(run) / list_runs / default_class_dir, never open().
    for path in (ROOT / "pages").glob("*.py"):
        text = path.read_text()
        assert "open(" not in text.replace("st.file_uploader", ""), path.name
