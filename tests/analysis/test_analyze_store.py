"""nc-analyze on whole stores: bad input, chunking invariance, schedulers, the CLI."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from ncprobe.analyze import AnalysisError
from ncprobe.analyze.cli import main
from ncprobe.analyze.run import AnalysisOptions, analyze_store
from ncprobe.data.store import IncompleteStoreError, SchemaError, open_metrics
from ncprobe.data.store.from_arrays import write_activation_store
from tests.helpers import synthetic_store


def small_store(path, x=None, y=None, n_classes=3, **kw):
    rng = np.random.default_rng(0)
    if y is None:
        y = np.repeat(np.arange(n_classes), 5)
    if x is None:
        x = rng.standard_normal((y.size, 4)) + 3 * np.eye(4)[y % 4]
    write_activation_store(path, {"train": {"a": x[None, None]}}, {"train": y},
                           n_classes=n_classes, **kw)
    return path


def test_chunking_does_not_change_results(tmp_path):
    a = synthetic_store(tmp_path / "a.zarr", chunk_samples=7)[0]
    b = synthetic_store(tmp_path / "b.zarr", chunk_samples=1000)[0]
    ma = analyze_store(a, progress=False)["summary"].to_dataset()
    mb = analyze_store(b, progress=False)["summary"].to_dataset()
    xr.testing.assert_allclose(ma, mb, rtol=1e-10)


@pytest.mark.slow
def test_localcluster_equals_threads(tmp_path):
    path = synthetic_store(tmp_path / "a.zarr", chunk_samples=20)[0]
    threads = analyze_store(path, progress=False)["summary"].to_dataset()
    procs = analyze_store(path, progress=False, scheduler="localcluster:2")
    xr.testing.assert_allclose(threads, procs["summary"].to_dataset(), rtol=1e-12)


def test_own_localcluster_workers_start_without_dasks_malloc_trim_threshold(monkeypatch):
    import os

    import dask

    from ncprobe.analyze.cluster import TRIM_KEY, connect

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert dask.config.get(TRIM_KEY) is not None  # dask's default, which the cluster drops
    with connect("localcluster:1") as client:
        seen = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert list(seen.values()) == [None]
    assert dask.config.get(TRIM_KEY) is not None  # the caller's dask config is unchanged


def test_written_store_opens_with_plain_xarray_and_csv(tmp_path):
    path = synthetic_store(tmp_path / "a.zarr")[0]
    out = tmp_path / "m.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main([str(path), "--out", str(out), "--no-progress"]) == 0
        tree = xr.open_datatree(out, engine="zarr")
    assert tree.attrs["schema"] == "ncprobe-metrics/2"
    assert list(tree["summary"].layer.values) == ["l0", "l1"]
    assert list(tree["summary"]["depth"].values) == [0, 1]  # .depth is the tree depth
    df = pd.read_csv(tmp_path / "m.csv")
    assert set(df.metric) >= {"nc1", "ncc_acc", "leap_rate", "etf_distance", "nc1_shuffled"}
    row = df[(df.metric == "nc1") & (df.grouping == "label") & (df.layer == "l1")
             & (df.condition == "clean") & (df.split == "train")]
    assert row.value.item() == pytest.approx(
        float(tree["summary"]["nc1"].sel(split="train", layer="l1", condition="clean",
                                         grouping="label").isel(checkpoint=0)))
    open_metrics(out)


def test_rerun_same_output_replaces_but_other_source_needs_overwrite(tmp_path, capsys):
    a = synthetic_store(tmp_path / "a.zarr")[0]
    b = synthetic_store(tmp_path / "b.zarr", seed=3)[0]
    out = tmp_path / "m.zarr"
    assert main([str(a), "--out", str(out), "--no-progress"]) == 0
    assert main([str(a), "--out", str(out), "--no-progress"]) == 0
    assert main([str(b), "--out", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([str(b), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    assert main([str(a), "--out", str(tmp_path / "notes"), "--no-progress"]) == 2
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_unknown_schema_and_incomplete_store(tmp_path, capsys):
    path = small_store(tmp_path / "s.zarr")
    zarr.open_group(str(path), mode="r+", use_consolidated=False).attrs["schema"] = \
        "ncprobe-activations/9"
    with pytest.raises(SchemaError, match="newer ncprobe"):
        analyze_store(path, progress=False)
    g = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    g.attrs.update(schema="ncprobe-activations/1", complete=False)
    # delete one chunk: the error names what is missing
    chunk = sorted(p for p in (path / "train/layers/a/features").rglob("*") if p.is_file()
                   and p.name != "zarr.json")[0]
    chunk.unlink()
    with pytest.raises(IncompleteStoreError, match="train/layers/a/features: 0 of 1 chunks"):
        analyze_store(path, progress=False)
    assert main([str(path), "--out", str(tmp_path / "m.zarr")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-partial" in err
    with pytest.raises(AnalysisError, match="NaN or inf"):
        analyze_store(path, options=AnalysisOptions(allow_partial=True), progress=False)


def test_nan_features_named(tmp_path):
    x = np.random.default_rng(1).standard_normal((15, 4))
    x[3, 1] = np.nan
    x[4, 2] = np.inf
    path = small_store(tmp_path / "s.zarr", x=x)
    with pytest.raises(AnalysisError, match=r"layer 'a', checkpoint 0, condition 'clean': 2 NaN"):
        analyze_store(path, progress=False)


def test_labels_out_of_range_and_single_class(tmp_path):
    y = np.array([0, 1, 2, 7] * 4)
    with pytest.raises(AnalysisError, match="labels outside 0..2"):
        analyze_store(small_store(tmp_path / "a.zarr", y=y), progress=False)
    with pytest.raises(AnalysisError, match="at least 2 classes"):
        analyze_store(small_store(tmp_path / "b.zarr", y=np.zeros(6, int), n_classes=1),
                      progress=False)


def test_empty_and_singleton_classes_warn_and_are_handled(tmp_path):
    y = np.array([0] * 6 + [1] * 6 + [3])  # class 2 empty, class 3 has one sample
    path = small_store(tmp_path / "s.zarr", y=y, n_classes=4)
    with pytest.warns(UserWarning) as rec:
        m = analyze_store(path, progress=False)
    text = " ".join(str(w.message) for w in rec)
    assert "empty classes excluded" in text and "single sample" in text
    pc = m["per_class"].to_dataset().isel(split=0, layer=0, checkpoint=0, condition=0)
    assert pc["count"].values.tolist() == [6, 6, 0, 1]
    assert np.isnan(pc["within_var"].values[2])  # empty: undefined
    assert pc["within_var"].values[3] == 0.0  # one sample sits on its own mean (docs/metrics.md)
    s = m["summary"].to_dataset().isel(split=0, layer=0, checkpoint=0, condition=0).sel(
        grouping="label")
    assert np.isfinite(float(s["nc1"])) and int(s["rank_b"]) == 2
    assert np.isfinite(float(s["cdnv"]))


def test_cli_warnings_are_one_line_each_and_leave_the_callers_filters(tmp_path, capsys):
    y = np.array([0] * 6 + [1] * 6 + [3])
    path = small_store(tmp_path / "s.zarr", y=y, n_classes=4)
    before = (warnings.filters[:], warnings.showwarning)
    assert main([str(path), "--out", str(tmp_path / "m.zarr"), "--no-progress"]) == 0
    assert (warnings.filters, warnings.showwarning) == before
    err = capsys.readouterr().err.splitlines()
    said = [line for line in err if "warning" in line.lower()]
    assert any(line.startswith("nc-analyze: warning: empty classes excluded") for line in said)
    assert all(line.startswith("nc-analyze: warning: ") for line in said), said
    assert not any(line.startswith(" ") or "UserWarning" in line for line in err), err


def test_root_attrs_record_source_and_options(tmp_path):
    path = synthetic_store(tmp_path / "a.zarr")[0]
    m = analyze_store(path, tmp_path / "m.zarr", AnalysisOptions(layers=["l1"]), progress=False)
    attrs = xr.open_datatree(tmp_path / "m.zarr", engine="zarr").attrs
    assert attrs["source"] == str(path) and attrs["options"]["layers"] == ["l1"]
    assert json.dumps(attrs["versions"])
    assert list(m["summary"].layer.values) == ["l1"]


def test_a_reduced_classifier_input_layer_gives_nan_classifier_metrics_and_a_warning(tmp_path):
    """Weights (C, D_full) against features reduced to D < D_full (e.g. --project): no
    broadcast error after both passes; nc3 and the *_w metrics are NaN, with a warning."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 8)
    x = rng.standard_normal((1, 1, y.size, 4))
    path = tmp_path / "s.zarr"
    write_activation_store(path, {"train": {"a": x}}, {"train": y}, n_classes=3,
                           classifier=("a", rng.standard_normal((1, 3, 9)), np.zeros((1, 3))))
    with pytest.warns(UserWarning, match="was it reduced at extraction"):
        m = analyze_store(path, progress=False)
    s = m["summary"].to_dataset().isel(split=0, layer=0, checkpoint=0, condition=0)
    assert np.isnan(float(s["nc3"])) and np.isnan(float(s["equinorm_w"]))
    assert np.isfinite(float(s["nc1"].sel(grouping="label")))


def test_metrics_store_of_the_unsquared_nc3_is_refused_then_renewed(tmp_path):
    """A store of schema ncprobe-metrics/1 (nc3 was the square root) is refused in one line
    that says to analyse again, and analysing again to the same path replaces it."""
    acts = small_store(tmp_path / "acts.zarr")
    out = tmp_path / "m.zarr"
    analyze_store(acts, out, progress=False)
    zarr.open_group(str(out), mode="r+", use_consolidated=False).attrs["schema"] = \
        "ncprobe-metrics/1"
    with pytest.raises(SchemaError, match=r"^store .* has schema 'ncprobe-metrics/1', written by "
                                          r"an older ncprobe: its nc3 is the unsquared distance; "
                                          r"rerun nc-analyze") as e:
        open_metrics(out)
    assert "\n" not in str(e.value)
    analyze_store(acts, out, progress=False)
    assert open_metrics(out).attrs["schema"] == "ncprobe-metrics/2"
