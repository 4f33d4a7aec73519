"""cnn.checkpoint: round trip, tampered/truncated/foreign files refused, atomic save, run names."""
import errno
import json
import os
import pickle
import shutil
import struct
import zipfile

import pytest
import torch

from cnn import checkpoint as checkpoint_module
from cnn.checkpoint import (CheckpointError, load_checkpoint, make_card, read_checkpoint, run_dir, save_checkpoint,
                            state_digest, validate_run_name)
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


def _tensor_bytes_span(path, entry_suffix):
    """(start, end) byte offsets of one tensor's raw bytes inside the checkpoint's zip (stored, uncompressed)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(entry_suffix))
    assert info.compress_type == zipfile.ZIP_STORED  # torch stores tensors uncompressed: the bytes are the floats
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        header = handle.read(30)  # a zip local file header: name and extra-field lengths at bytes 26-29
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    start = info.header_offset + 30 + name_length + extra_length
    return start, start + info.file_size


def test_tampered_checkpoint_is_refused_by_the_sha256_check(tmp_path):
    model, path = _saved(tmp_path)
    fc = model.state_dict()["fc.weight"]
    start, end = _tensor_bytes_span(path, "data/3")  # archive/data/3 holds fc.weight (2048 x 625 float32)
    assert end - start == fc.numel() * 4
    data = bytearray(path.read_bytes())
    assert bytes(data[start:start + 64]) == fc.flatten()[:16].numpy().tobytes()  # really fc.weight's first floats
    middle = (start + end) // 2
    for offset in range(middle, middle + 64):  # flip bits inside the weights, not in zip metadata
        data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match the checksum on its card"):
        load_checkpoint(path)


def _write_raw(path, state, card=None):
    """A checkpoint written by hand with torch.save: the card's SHA-256 matches when the tensors allow it."""
    card = dict(card or {"config": {}})
    try:
        card.setdefault("weights_sha256", state_digest(state))
    except (TypeError, RuntimeError):  # the old digest cannot hash every dtype or layout
        card.setdefault("weights_sha256", "0" * 64)
    torch.save({"state_dict": state, "card": json.dumps(card)}, path)
    return path


def test_nan_weights_are_refused(tmp_path):
    model = ConvNet()
    with torch.no_grad():
        model.conv2.weight[0, 0, 1, 1] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", model, make_card(ARTICLE, model))  # the checksum is consistent
    with pytest.raises(CheckpointError, match="conv2.weight holds NaN or infinite values"):
        load_checkpoint(path)


def test_checkpoint_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    _, path = _saved(tmp_path)
    load_checkpoint(path)  # a good checkpoint...
    monkeypatch.setattr(checkpoint_module, "MAX_CHECKPOINT_BYTES", path.stat().st_size - 1)
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    with pytest.raises(CheckpointError, match="is larger than"):  # ...one byte over the limit
        load_checkpoint(path)
    assert loads == []  # refused without unzipping it


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_layer_set_must_be_the_networks(tmp_path, change):
    state = ConvNet().state_dict()
    if change == "extra":
        state["conv4.weight"] = torch.zeros(3, 3)
    else:
        del state["conv3.weight"]
    path = _write_raw(tmp_path / f"{change}.pt", state)
    read_checkpoint(path)  # the file itself is consistent: only the layer set is wrong
    expected = "unexpected conv4.weight" if change == "extra" else "missing conv3.weight"
    with pytest.raises(CheckpointError, match=f"does not fit the cnn network: .*{expected}"):
        load_checkpoint(path)


@pytest.mark.parametrize("convert, words", [
    (lambda t: t.to(torch.bfloat16), "bfloat16 numbers, not float32"),
    (lambda t: t.to(torch.float64), "float64 numbers, not float32"),
    (lambda t: t.round().to(torch.int64), "int64 numbers, not float32"),
    (lambda t: t.to_sparse(), "sparse_coo tensor, not a dense one"),
])
def test_weights_that_are_not_dense_float32_are_refused(tmp_path, convert, words):
    state = ConvNet().state_dict()
    state["conv1.weight"] = convert(state["conv1.weight"])
    path = _write_raw(tmp_path / "odd.pt", state)
    with pytest.raises(CheckpointError, match=f"conv1.weight .*{words}"):
        load_checkpoint(path)


@pytest.mark.parametrize("field, value", [("config", "fast"), ("wall_seconds", "12s"), ("status", "exploded"),
                                          ("accuracy", 7.5), ("config", {"batch_size": "many"})])
def test_a_card_with_wrong_types_inside_the_checkpoint_is_refused(tmp_path, field, value):
    model = ConvNet()
    card = dict(make_card(ARTICLE, model), **{field: value})
    path = save_checkpoint(tmp_path / "model.pt", model, card)  # save_checkpoint writes what it is given
    with pytest.raises(CheckpointError, match=f"is not a checkpoint of this app: .*{field}"):
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
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(tmp_path / "evil2.pt")
    assert not os.path.exists("/tmp/cnn-checkpoint-pwned")
    # Our own sentence: never torch's advice to turn the safety off, never the server's folder.
    message = str(refused.value)
    assert message == "evil2.pt is not a readable checkpoint: it is corrupt, truncated, or was not made by this app."
    assert isinstance(refused.value.__cause__, pickle.UnpicklingError)  # torch's detail stays in the chain for logs


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="No checkpoint missing.pt") as missing:
        load_checkpoint(tmp_path / "missing.pt")
    assert str(tmp_path) not in str(missing.value)


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


def _torch_full_disk(obj, stream, *args, **kwargs):
    """What torch.save raises when the disk fills mid-write (seen on a full disk; /dev/full gives the same)."""
    stream.write(b"PK\x03\x04 half a zip")
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1280 vs 1174")


def _read_only(source, target):
    raise OSError(errno.EROFS, "Read-only file system", str(target))


def _permission_denied(obj, stream, *args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", stream.name)


@pytest.mark.parametrize("target, failure, words", [
    ("torch.save", _torch_full_disk, "could not be written in full"),
    ("os.replace", _read_only, "the disk is read-only"),
    ("torch.save", _permission_denied, "may not write in that folder"),
])
def test_failed_save_says_so_in_our_words_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, target, failure,
                                                                           words):
    model, path = _saved(tmp_path)
    before, card_before = path.read_bytes(), (tmp_path / "model.json").read_bytes()
    module, name = target.split(".")
    monkeypatch.setattr({"torch": torch, "os": os}[module], name, failure)
    with pytest.raises(CheckpointError) as failed:
        save_checkpoint(path, ConvNet(), make_card(ARTICLE, model, epochs=2))
    monkeypatch.undo()
    message = str(failed.value)
    assert message.startswith("Could not save model.pt: ") and words in message
    assert "previous checkpoint is unchanged" in message
    assert str(tmp_path) not in message and "enforce fail" not in message  # no server path, no torch internals
    assert path.read_bytes() == before and (tmp_path / "model.json").read_bytes() == card_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.pt"]  # no temp file left behind
    load_checkpoint(path)  # and still usable


def test_save_is_refused_up_front_when_the_disk_is_clearly_too_full(tmp_path, monkeypatch):
    model, path = _saved(tmp_path)
    before = path.read_bytes()
    real = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: real._replace(free=2 * 2**20))  # 2 MB left; ~5.5 needed
    writes = []
    monkeypatch.setattr(torch, "save", lambda *a, **k: writes.append(a))
    with pytest.raises(CheckpointError, match=r"Could not save model.pt: the disk is full: model.pt needs about "
                                              r"[0-9.]+ MB and only 2.0 MB is free") as refused:
        save_checkpoint(path, ConvNet(), make_card(ARTICLE, model))
    assert writes == [] and path.read_bytes() == before and str(tmp_path) not in str(refused.value)


@pytest.mark.parametrize("name", ["article-1", "fast_run.2", "A", "console", "nullish", "com10", "a.b", "my-bundled"])
def test_good_run_names(name, tmp_path):
    assert validate_run_name(name) == name
    assert run_dir(name, tmp_path).parent == tmp_path.resolve()


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "/etc", "a\\b", ".hidden", "a..b", "x" * 65,
                                  "naïve", "a b", "-rf", "my run", "café", None, 7])
def test_bad_run_names(name, tmp_path):
    with pytest.raises(ValueError, match="not a valid run name"):
        run_dir(name, tmp_path)


@pytest.mark.parametrize("name, why", [
    ("abc\n", "use 1-64 letters"),  # re.match with '$' let a trailing newline through
    ("abc.", "may not end with '.'"),
    ("abc ", "use 1-64 letters"),
    ("bundled", "bundled model"), ("Bundled", "bundled model"), ("BUNDLED", "bundled model"),
    ("con", "Windows keeps it"), ("PRN", "Windows keeps it"), ("Aux", "Windows keeps it"), ("nul", "Windows keeps it"),
    ("nul.txt", "Windows keeps it"), ("COM1", "Windows keeps it"), ("com9.log", "Windows keeps it"),
    ("lpt1", "Windows keeps it"), ("LPT9.tar.gz", "Windows keeps it"),
])
def test_names_that_break_a_server_are_refused(name, why, tmp_path):
    with pytest.raises(ValueError, match=f"not a valid run name: .*{why}"):
        validate_run_name(name)
    with pytest.raises(ValueError):
        run_dir(name, tmp_path)


def test_a_very_long_name_is_not_repeated_whole_in_the_sentence(tmp_path):
    with pytest.raises(ValueError, match="not a valid run name") as refused:
        run_dir("x" * 10_000, tmp_path)
    assert len(str(refused.value)) < 300
