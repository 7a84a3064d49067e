"""The metric registry: one declaration reaches layer_metrics, nc-analyze's store and CSV."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ncprobe.analyze import layer_metrics, registry
from ncprobe.analyze.cli import main as analyze
from ncprobe.analyze.registry import Metric, MetricError
from ncprobe.data.datasets import make_synthetic_arrays
from ncprobe.data.store import open_metrics
from tests import reference
from tests.helpers import synthetic_store

ROOT = Path(__file__).resolve().parents[2]


def trace_sigma_w(g):
    """A test-only metric: Tr Sigma_W = sum_c within_c / N."""
    return g.where_valid(g.within.sum(axis=-1) / g.n)


def within_share(b):
    """A test-only per-class metric: each class's share of the within-class scatter."""
    w = b.label.within
    return w / w.sum(axis=-1, keepdims=True)


@pytest.fixture
def extra_metrics():
    added = [registry.register(Metric("trace_w", trace_sigma_w, ("within", "n", "where_valid"),
                                      "Tr Sigma_W", groupings=registry.REPORTED)),
             registry.register(Metric("within_share", within_share, ("label",),
                                      "share of the within-class scatter", dims=("class",)))]
    yield added
    for m in added:
        registry.unregister(m.key)


def test_a_registered_metric_reaches_layer_metrics_the_store_and_the_csv(extra_metrics,
                                                                          tmp_path):
    x, y, _ = make_synthetic_arrays(n_classes=3, dim=5, n_per_class=30, noise=0.4)
    h = xr.DataArray(x, dims=("sample", "feature"))
    m = layer_metrics(h, xr.DataArray(y, dims="sample"), 3)
    assert float(m["trace_w"].sel(grouping="label")) == pytest.approx(
        np.trace(reference.sigma_w(x, y, 3)), rel=1e-10)
    assert m["class_within_share"].dims == ("class",)
    assert float(m["class_within_share"].sum()) == pytest.approx(1.0)

    path, feats, labels, _, _ = synthetic_store(tmp_path / "acts.zarr")
    assert analyze([str(path), "--out", str(tmp_path / "m.zarr"), "--no-progress"]) == 0
    tree = open_metrics(tmp_path / "m.zarr")
    got = tree["summary"]["trace_w"].sel(split="train", layer="l1", condition="clean",
                                         grouping="label").isel(checkpoint=0)
    want = np.trace(reference.sigma_w(feats["train"]["l1"][0, 0], labels["train"], 4))
    assert float(got) == pytest.approx(want, rel=1e-9)
    assert "within_share" in tree["per_class"]
    csv = pd.read_csv(tmp_path / "m.csv")
    rows = csv[csv.metric == "trace_w"]
    assert len(rows) == 2 * 2 * 3 * 3  # split x layer x condition x grouping
    assert set(rows.grouping) == {"label", "pred", "target"}


def test_a_kernel_reads_only_what_it_declares():
    def sneaky(g):
        return g.projected.sum(axis=-1)  # declares only "within"

    registry.register(Metric("sneaky", sneaky, ("within",), "x", groupings=("label",)))
    try:
        x, y, _ = make_synthetic_arrays(n_classes=3, dim=4, n_per_class=10)
        with pytest.raises(MetricError, match="'sneaky' reads 'projected'"):
            layer_metrics(xr.DataArray(x, dims=("sample", "feature")),
                          xr.DataArray(y, dims="sample"), 3)
    finally:
        registry.unregister("sneaky")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"name": "nc1"}, "already registered"),
    ({"needs": ("nope",)}, "needs \\['nope'\\]"),
    ({"dims": ("feature",)}, "has dims"),
    ({"groupings": ("label", "elsewhere")}, "per-grouping metrics"),
    ({"groupings": "elsewhere"}, "not one of"),
])
def test_unsound_declarations_are_refused(kwargs, match):
    decl = {"name": "new", "kernel": trace_sigma_w, "needs": ("within",), "formula": "x",
            "groupings": ("label",), **kwargs}
    with pytest.raises(MetricError, match=match):
        registry.register(Metric(**decl))
    assert "new" not in registry.METRICS


def test_docs_table_is_the_registry():
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert registry.markdown_table() in text, (
        "docs/metrics.md's metric table differs from the registry; paste "
        "ncprobe.analyze.registry.markdown_table() over it")


def _random_block(c=3, d=4, only=None):
    """A Block of random statistics of every declared shape (or only those ``only`` names)."""
    import zlib

    from ncprobe.analyze.kernels.collapse import Block
    from ncprobe.analyze.kernels.statistics import STATISTICS

    sizes = {"grouping": 4, "class": c, "label": c, "vertex": c, "feature": d, "feature2": d}
    # each statistic drawn from its own seed: the same values whatever else is held
    stats = {s.name: np.abs(np.random.default_rng(zlib.crc32(s.name.encode()))
                            .standard_normal(s.shape(sizes))) + 1.0
             for s in STATISTICS.values() if s.block_input and (only is None or s.name in only)}
    return Block(**stats)


def test_every_declared_statistic_exists():
    """What a kernel may declare in ``needs`` is what a Block and a Grouping hold."""
    from ncprobe.analyze.kernels.collapse import Block, Grouping

    block = _random_block()
    for source, cls in ((block, Block), (block.label, Grouping)):
        for name in cls.vocabulary():
            assert getattr(source, name) is not None, name


@pytest.mark.parametrize("key", list(registry.METRICS))
def test_each_metric_computes_from_the_statistics_its_needs_reach(key):
    """collapse.READS is complete: every metric runs on a Block holding only the statistics
    that needed_statistics gives for it (any other is a LookupError)."""
    only = registry.needed_statistics([key])
    full, partial = _random_block(), _random_block(only=only)
    np.testing.assert_array_equal(registry.METRICS[key].compute(partial),
                                  registry.METRICS[key].compute(full))


def test_passes_needed_follow_the_needs():
    nc2 = ["equinorm", "equiangular", "max_angle", "etf_distance", "uniformity", "rank_b"]
    assert registry.passes_needed(nc2 + ["nc3", "align_angle", "class_count",
                                         "class_mean_norm"]) == {1}
    assert registry.passes_needed(["nc1"]) == {1, 2}
    assert registry.passes_needed() == {1, 2}


def test_only_names_registered_metrics():
    from ncprobe.analyze import (
        AnalysisError,
        class_stats,
        collapse_metrics,
        grouping_labels,
        within_stats,
    )

    x, y, _ = make_synthetic_arrays(n_classes=3, dim=4, n_per_class=10)
    h = xr.DataArray(x, dims=("sample", "feature"))
    g = grouping_labels(xr.DataArray(y, dims="sample"))
    st = class_stats(h, g, 3)
    w = within_stats(h, g, st)
    assert list(collapse_metrics(st, w, only=["nc1"]).data_vars) == ["nc1", "means"]
    with pytest.raises(AnalysisError, match=r"unknown metrics \['nc9'\]"):
        collapse_metrics(st, w, only=["nc9"])
