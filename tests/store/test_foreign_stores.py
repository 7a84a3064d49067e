"""Stores written by other tools: plain xarray, with or without consolidated metadata, zarr
format 3 or 2 (the docs/store.md example, run as written)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ncprobe.analyze.cli import main as analyze
from ncprobe.data.store import StoreError, open_activations
from ncprobe.data.store.writer import consolidate

ROOT = Path(__file__).resolve().parents[2]


def _docs_example() -> str:
    text = (ROOT / "docs" / "store.md").read_text()
    section = text.split("## Writing a store yourself", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


@pytest.fixture
def written(tmp_path, monkeypatch):
    """The docs example run in tmp_path; returns a function writing it in a given format."""
    monkeypatch.chdir(tmp_path)
    code = _docs_example()

    def write(name, zarr_format=3):
        src = code.replace('"mine.zarr", consolidated=False',
                           f'"{name}", consolidated=False, zarr_format={zarr_format}')
        exec(compile(src, "docs/store.md", "exec"), {})  # noqa: S102 - our own docs example
        return tmp_path / name

    return write


def test_plain_xarray_stores_in_format_3_and_2_give_the_same_metrics(written, tmp_path, capsys):
    v3, v2 = written("v3.zarr"), written("v2.zarr", zarr_format=2)
    assert (v2 / ".zgroup").exists() and (v3 / "zarr.json").exists()
    for store in (v3, v2):
        assert analyze([str(store), "--out", str(tmp_path / f"m-{store.stem}.zarr"),
                        "--no-progress"]) == 0, capsys.readouterr().err
    a, b = (pd.read_csv(tmp_path / f"m-{s}.csv") for s in ("v3", "v2"))
    pd.testing.assert_frame_equal(a, b)
    nc1 = a[(a.metric == "nc1") & (a.grouping == "label")].set_index("condition").value
    assert 0 < nc1["clean"] < nc1["pgd"]


def test_consolidated_or_not_the_store_reads_the_same(written):
    plain = written("plain.zarr")
    a = open_activations(plain)
    consolidate(plain)  # as ncprobe does, with zarr's format-3 warning silenced
    b = open_activations(plain)
    np.testing.assert_array_equal(a["train/layers/penultimate"]["features"].values,
                                  b["train/layers/penultimate"]["features"].values)


def test_an_unreadable_store_is_named_in_the_error(written):
    store = written("broken.zarr")
    (store / "train" / "layers" / "penultimate" / "features" / "zarr.json").write_text("{")
    with pytest.raises(StoreError, match=re.escape(repr(str(store)))):
        open_activations(store)
