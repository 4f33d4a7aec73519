"""Security settings a class server depends on."""
import ast
import tomllib

from tests.conftest import ROOT


def test_streamlit_config_is_locked_down():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"]["maxUploadSize"] <= 2
    assert config["server"]["maxMessageSize"] <= 2  # a session keeps its widgets' last values: keep each small
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


# Ways to reach a file's contents (or make a path to one) without going through cnn/: open(), Path(...),
# .read_bytes()/.read_text()/.write_*(), np.load, torch.load, ... In pages/ every one of them is refused.
FILE_CALLS = {"open", "Path", "PurePath", "read_bytes", "read_text", "write_bytes", "write_text",
              "iterdir", "glob", "rglob", "unlink", "rmtree", "mkdir"}  # not replace: config.replace is no file
FILE_MODULES = {"os": {"open", "remove", "unlink", "rename", "replace", "listdir", "scandir", "walk", "mkdir"},
                "shutil": {"copy", "copyfile", "move", "rmtree"}, "np": {"load", "loadtxt", "fromfile"},
                "numpy": {"load", "loadtxt", "fromfile"}, "torch": {"load"}, "pickle": {"load", "loads"}}


def file_calls(source: str) -> list[str]:
    """Every call in source that reads, writes, lists or names a file directly, as 'line: name'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = function.id if isinstance(function, ast.Name) else function.attr if isinstance(function, ast.Attribute) else ""
        owner = function.value.id if isinstance(function, ast.Attribute) and isinstance(function.value, ast.Name) else ""
        if owner in FILE_MODULES:
            if name in FILE_MODULES[owner]:
                found.append(f"{node.lineno}: {owner}.{name}")
        elif name in FILE_CALLS and not (owner == "st" or owner.startswith("st_")):
            found.append(f"{node.lineno}: {name}")
    return sorted(found, key=lambda call: int(call.split(":")[0]))


def test_the_file_call_check_sees_each_way_to_a_file():
    # The check itself, on code a page must never contain.
    source = """
data = open(name).read()
raw = Path(user_text).read_bytes()
text = folder.joinpath(name).read_text()
array = np.load(upload)
state = torch.load(path, weights_only=True)
os.remove(target)
for child in folder.iterdir(): pass
"""
    assert sorted(call.split(": ")[1] for call in file_calls(source)) == sorted([
        "open", "read_bytes", "Path", "read_text", "np.load", "torch.load", "os.remove", "iterdir"])
    assert file_calls("st.file_uploader('A photo'); st.download_button('x', data); holder.load()") == []


def test_no_page_reaches_a_file_except_through_cnn():
    # Pages reach files only through cnn functions (checkpoint_for(run), list_runs, read_predictions, ...),
    # which validate names and sizes; a page never opens, reads or lists a path, least of all one from user text.
    for path in sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]:
        assert file_calls(path.read_text()) == [], path.name
