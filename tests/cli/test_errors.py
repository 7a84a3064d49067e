"""User errors are one line and exit 2; bugs say they are bugs, exit 1 and keep the traceback."""

import importlib

import numpy as np
import pytest

from ncprobe.analyze import AnalysisError
from ncprobe.analyze import cli as analyze_cli
from ncprobe.data.errors import NcprobeError, for_cli


def _boom(*args, **kwargs):
    np.ones(3) + np.ones(4)  # a broadcast ValueError: a bug, not bad input


def test_a_bug_is_reported_as_a_bug_with_its_traceback_in_a_file(tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setattr(analyze_cli, "analyze_store", _boom)
    out = tmp_path / "m.zarr"
    assert analyze_cli.main(["any.zarr", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("nc-analyze: internal error (a bug in ncprobe, not your input): "
                          "ValueError: operands could not be broadcast")
    log = next(tmp_path.glob("nc-analyze-error-*.log"))
    assert str(log) in err
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "_boom" in text
    assert not out.exists()


def test_debug_shows_the_traceback_instead(tmp_path, monkeypatch):
    monkeypatch.setattr(analyze_cli, "analyze_store", _boom)
    with pytest.raises(ValueError, match="broadcast"):
        analyze_cli.main(["any.zarr", "--out", str(tmp_path / "m.zarr"), "--debug"])
    assert not list(tmp_path.glob("*.log"))


def test_user_errors_are_one_line_with_flags_named(tmp_path, capsys):
    assert analyze_cli.main([str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "m.zarr"),
                             "--scheduler", "localcluster:x"]) == 2
    err = capsys.readouterr().err
    assert err == ("nc-analyze: error: --scheduler 'localcluster:x': worker count must be an "
                   "integer, e.g. localcluster:2\n")


def test_library_messages_name_parameters_not_flags(tmp_path):
    from ncprobe.analyze.run import analyze_store

    with pytest.raises(AnalysisError, match="^`scheduler` 'nope:1'|^unknown `scheduler`"):
        analyze_store(tmp_path / "x.zarr", scheduler="nope:1")


def test_options_in_the_place_of_out_are_refused_before_anything_is_written(tmp_path,
                                                                             monkeypatch):
    from ncprobe.analyze.run import AnalysisOptions, analyze_store

    monkeypatch.chdir(tmp_path)  # where a folder named after the options would appear
    with pytest.raises(NcprobeError,
                       match=r"^`out` must be a path, or unset \(None\); got AnalysisOptions\("):
        analyze_store(tmp_path / "x.zarr", AnalysisOptions(dense=True))
    with pytest.raises(NcprobeError,
                       match=r"^`options` must be an AnalysisOptions, or unset \(None\); got \{"):
        analyze_store(tmp_path / "x.zarr", options={"dense": True})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.torch
def test_extraction_library_names_its_parameters():
    from ncprobe.extract.extraction import ExtractConfig

    with pytest.raises(NcprobeError, match=r"^`batch_size` must be an int >= 1; got 0$"):
        ExtractConfig(checkpoints=["x.pt"], batch_size=0)


@pytest.mark.torch
def test_every_error_class_ncprobe_defines_is_an_ncprobe_error():
    """An error class that is not an NcprobeError reaches CLI users as "internal error"
    (exit 1): walk every module and find any such class, including ones added later."""
    import inspect
    import pkgutil

    packages = [importlib.import_module(f"ncprobe.{name}")
                for name in ("data", "extract", "analyze", "plots", "demo")]
    found, wrong = [], []
    for mod in (m for pkg in packages
                for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")):
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, Exception)
                    and obj.__module__ == mod.name):
                found.append(name)
                if not issubclass(obj, NcprobeError):
                    wrong.append(f"{mod.name}.{name}")
    assert len(found) >= 10, found
    assert wrong == []


def test_for_cli_rewrites_backticked_parameters_only():
    flags = {"batch_size": "--batch-size", "root": "--data-root"}
    assert for_cli("`batch_size` must be >= 1 and `root`  is\n required; `other` too, "
                   "not batch_size", flags) == \
        "--batch-size must be >= 1 and --data-root is required; other too, not batch_size"
