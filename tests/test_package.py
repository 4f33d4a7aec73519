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


def test_bench_reports_ratio_and_latencies():
    """The benchmark's shape only: speed is reported by `python -m cnn bench`, never asserted here."""
    from cnn.bench import format_report, run_benchmarks

    report = run_benchmarks(rounds=1, steps_per_round=1, latency_repeats=5)
    assert report["ratio"] == round(report["project_img_s"] / report["baseline_img_s"], 3)
    for key in ("inference_single_image", "draw_stroke_grad_cam", "draw_stroke_integrated_gradients",
                "draw_stroke_occlusion", "feature_page_render"):
        assert 0 < report[key]["median_ms"] <= report[key]["p95_ms"], key
    assert "ratio" in format_report(report)


def test_bench_steps_train_the_same_network():
    """The project step and the plain baseline compute the same maths: same loss from the same weights."""
    import torch

    from cnn.bench import BaselineNet
    from cnn.model import ConvNet

    torch.manual_seed(0)
    project, baseline = ConvNet(init_std=0.1).eval(), BaselineNet().eval()
    baseline.load_state_dict({k.replace("dropout_", "drop_"): v for k, v in project.state_dict().items()})
    x = torch.rand(4, 1, 28, 28)
    fast = project.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fast, baseline(x), atol=1e-5)
