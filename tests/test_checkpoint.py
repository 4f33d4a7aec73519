"""cnn.checkpoint: round trip, tampered/truncated/foreign files refused, atomic save, run names."""
import json
import os
import pickle

import pytest
import torch

from cnn.checkpoint import (CheckpointError, load_checkpoint, make_card, run_dir, save_checkpoint, state_digest,
                            validate_run_name)
from cnn.config import ARTICLE, SOFTMAX
from cnn.model import ConvNet, SoftmaxRegression


def _saved(tmp_path, name="model.pt"):
    torch.manual_seed(0)
    model = ConvNet().eval()
    path = save_checkpoint(tmp_path / name, model, make_card(ARTICLE, model, accuracy=0.5))
    return model, path


def test_round_trip_gives_the_same_predictions(tmp_path):
    model, path = _saved(tmp_path)
    loaded, card = load_checkpoint(path)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert card["preset"] == "article" and card["accuracy"] == 0.5 and card["parameters"] == 1_378_698
    assert (tmp_path / "model.json").exists()


def test_softmax_checkpoint_round_trip(tmp_path):
    model = SoftmaxRegression()
    path = save_checkpoint(tmp_path / "s.pt", model, make_card(SOFTMAX, model))
    loaded, card = load_checkpoint(path)
    assert isinstance(loaded, SoftmaxRegression) and card["architecture"] == "softmax"


def test_truncated_checkpoint_is_refused_with_a_sentence(tmp_path):
    _, path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_tampered_checkpoint_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    for offset in range(len(data) // 3, len(data) // 3 + 64):  # scribble over the middle
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_wrong_shapes_are_refused(tmp_path):
    model = ConvNet()
    state = model.state_dict()
    state["fc.weight"] = torch.zeros(10, 10)
    card = json.dumps({"config": {}, "weights_sha256": state_digest(state)})  # consistent, but the wrong network
    torch.save({"state_dict": state, "card": card}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="fc.weight has shape"):
        load_checkpoint(tmp_path / "bad.pt")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/cnn-checkpoint-pwned",))


def test_pickle_with_code_does_not_run(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": _RunsCode(), "card": "{}"}, handle)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    torch.save({"state_dict": _RunsCode(), "card": "{}"}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "evil2.pt")
    assert not os.path.exists("/tmp/cnn-checkpoint-pwned")


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_crash_mid_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, path = _saved(tmp_path)
    before = path.read_bytes()

    def crash(obj, stream, *args, **kwargs):
        stream.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(CheckpointError, match="previous checkpoint is unchanged"):
        save_checkpoint(path, ConvNet(), make_card(ARTICLE, model))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    monkeypatch.undo()
    load_checkpoint(path)


@pytest.mark.parametrize("name", ["article-1", "fast_run.2", "A"])
def test_good_run_names(name, tmp_path):
    assert validate_run_name(name) == name
    assert run_dir(name, tmp_path).parent == tmp_path.resolve()


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "/etc", "a\\b", ".hidden", "a..b", "x" * 65,
                                  "naïve", "a b", "-rf"])
def test_bad_run_names(name, tmp_path):
    with pytest.raises(ValueError, match="not a valid run name"):
        run_dir(name, tmp_path)
