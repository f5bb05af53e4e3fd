"""The package's shape: no import cycles, and modules a reader can hold in mind (issue 26)."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "vae_zoo"
#: Modules allowed past 400 lines, and why (none today).
LONG_MODULES: dict[str, str] = {}
#: the ELBO contract: what a model defines and the shared objective, the maths only
BASE_LINES = 300


def check_import_cycles():
    """tools/check_import_cycles.py, the check .ci/run runs, as a module."""
    spec = importlib.util.spec_from_file_location("check_import_cycles", REPO / "tools" / "check_import_cycles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycle_in_the_package():
    # every import statement counts: at module level, inside functions and under TYPE_CHECKING
    assert check_import_cycles().import_cycles("vae_zoo") == []


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    package = tmp_path / "circular"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from circular.b import g\n")  # a lazy import counts
    (package / "b.py").write_text("from circular import a\n\ndef g():\n    pass\n")
    (package / "c.py").write_text("from circular import b\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert check_import_cycles().import_cycles("circular") == [["circular.a", "circular.b"]]


def test_imports_go_down_the_layers_only():
    # entry points > run, evaluation > metrics, callbacks > models, data > nets > blocks > support > errors
    assert check_import_cycles().layer_violations("vae_zoo") == []


def test_the_layer_check_finds_an_import_from_below(tmp_path, monkeypatch):
    package = tmp_path / "layered"
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "low" / "helper.py").write_text("def f():\n    from layered.high import g\n")  # a lazy import counts
    (package / "high.py").write_text("from layered.low import helper\n\ndef g():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    violations = check_import_cycles().layer_violations("layered", (("high",), ("low",)))
    assert violations == ["layered.low -> layered.high (via layered.low.helper, layered.high)"]


def test_the_top_level_holds_the_commands_and_the_errors_only():
    top = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert top == ["__init__", "compare", "dashboard", "errors", "evaluate", "fid_classifier", "sample", "train"]
    commands = {
        name: len((PACKAGE / f"{name}.py").read_text().splitlines())
        for name in top
        if name not in ("__init__", "errors")
    }
    assert all(lines <= 90 for lines in commands.values()), commands  # thin: the work is in the layers


def test_modules_stay_short_or_say_why():
    lines = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    too_long = {name: count for name, count in lines.items() if count > 400 and name not in LONG_MODULES}
    assert not too_long, too_long
    assert lines["vae_zoo/models/base.py"] <= BASE_LINES  # Lightning's plumbing is in models/training.py
