"""The package as a whole: `import cnn` stays free of streamlit; the CLI's offline commands."""
import json
import subprocess
import sys

from cnn.cli import main
from tests.conftest import ROOT


def test_import_cnn_does_not_import_streamlit():
    code = ("import sys, cnn, cnn.data, cnn.train, cnn.runs, cnn.checkpoint, cnn.bench, cnn.cli; "
            "import importlib, pkgutil; [importlib.import_module('cnn.' + m.name) for m in pkgutil.iter_modules(cnn.__path__) if m.name != '__main__']; "
            "print('streamlit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_no_module_in_cnn_mentions_streamlit_imports():
    for path in (ROOT / "cnn").glob("*.py"):
        assert "import streamlit" not in path.read_text(), path.name


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["total_params"] == 1_378_698
    assert [layer["name"] for layer in info["layers"]][:4] == ["input", "conv1", "relu1", "pool1"]


def test_train_cli_rejects_a_bad_run_name(capsys):
    assert main(["train", "--out", "runs/../../etc", "--max-steps", "1"]) == 2
    assert "not a valid run name" in capsys.readouterr().err


def test_evaluate_cli_reports_a_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["evaluate", str(bad), "--json"]) == 1
    assert "not a readable checkpoint" in capsys.readouterr().err
