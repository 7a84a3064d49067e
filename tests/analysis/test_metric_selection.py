"""--metrics: the metrics asked for decide the statistics computed and the passes run."""

import collections

import numpy as np
import pytest
import xarray as xr
import zarr

from ncprobe.analyze import layer_metrics, registry
from ncprobe.analyze.cli import main as analyze
from ncprobe.analyze.kernels import statistics
from ncprobe.analyze.kernels.statistics import Statistic
from ncprobe.analyze.registry import Metric
from ncprobe.analyze.run import AnalysisOptions, analyze_store
from ncprobe.data.datasets import make_synthetic_arrays
from ncprobe.data.store import open_metrics
from ncprobe.data.store.chunk_file import ChunkFileReader
from tests.helpers import synthetic_store

#: nc2, nc3 and the alignment: class means and the classifier only
FIRST_PASS = ["equinorm", "equiangular", "max_angle", "etf_distance", "uniformity", "nc3",
              "align_angle", "mean_norm", "count", "equinorm_w", "rank_b", "hull_margin",
              "nc1_trace", "cdnv", "within_var"]


@pytest.fixture
def chunk_reads(monkeypatch):
    """Every read of a feature chunk from a local zarr store, by key: by zarr, or from its
    chunk file (how the analysis reads a local store)."""
    reads = collections.Counter()
    get = zarr.storage.LocalStore.get
    read = ChunkFileReader.read

    async def counting(self, key, *args, **kwargs):
        if "/features/c/" in key:
            reads[key] += 1
        return await get(self, key, *args, **kwargs)

    def counting_files(self, coords):
        key = f"{self._path}/{self._metadata.encode_chunk_key(coords)}"
        if "/features/c/" in key:
            reads[key] += 1
        return read(self, coords)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting)
    monkeypatch.setattr(ChunkFileReader, "read", counting_files)
    return reads


def test_first_pass_selection_reads_every_array_once(tmp_path, chunk_reads):
    path = synthetic_store(tmp_path / "a.zarr", dims=(12, 6), chunk_samples=11)[0]
    assert registry.passes_needed(registry.select(FIRST_PASS)) == {1}
    analyze_store(path, progress=False, memory=0, options=AnalysisOptions(metrics=FIRST_PASS))
    assert chunk_reads and set(chunk_reads.values()) == {1}, chunk_reads
    chunks = len(chunk_reads)
    chunk_reads.clear()
    # the counter sees a second pass: the default streamed run reads each chunk twice
    analyze_store(path, progress=False, memory=0)
    assert len(chunk_reads) == chunks and set(chunk_reads.values()) == {2}


#: counted against the reference split's centres: the other splits need no second pass
AGAINST_REFERENCE = ["ncc_acc", "leap_rate", "net_acc", "transitions"]


def test_counts_against_the_reference_split_read_the_other_splits_once(tmp_path, chunk_reads):
    """ncc_acc, leap_rate and the transitions of the test split are counted against the train
    split's clean centres, reduced before the test split is read: its chunks are read once,
    with pass 1; the train split's twice (its own clean centres need its pass 1 first)."""
    path = synthetic_store(tmp_path / "a.zarr", dims=(12, 6), chunk_samples=11)[0]
    names = FIRST_PASS + AGAINST_REFERENCE
    keys = registry.select(names)
    assert registry.passes_needed(keys) == {1, 2}
    assert registry.passes_needed(keys, reference_known=True) == {1}
    got = analyze_store(path, progress=False, memory=0, options=AnalysisOptions(metrics=names))
    by_split = collections.defaultdict(set)
    for key, n in chunk_reads.items():
        by_split[key.split("/")[0]].add(n)
    assert by_split == {"train": {2}, "test": {1}}, chunk_reads
    full = analyze_store(path, progress=False, memory=0)
    for group in ("summary", "transitions"):
        for var in got[group].data_vars:
            _equal(got[group][var], full[group][var])
    assert float(got["summary"]["ncc_acc"].sel(split="test").min()) > 0


def _equal(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_metrics_value_does_not_depend_on_the_selection(tmp_path):
    """Each metric alone, nc1 alone and the first-pass set equal the default run bitwise."""
    path = synthetic_store(tmp_path / "a.zarr", dims=(12, 6), chunk_samples=11)[0]
    full = analyze_store(path, progress=False)
    selections = [FIRST_PASS, ["nc1"], ["leap_rate", "transitions"],
                  FIRST_PASS + AGAINST_REFERENCE]
    selections += [[m.name] for m in registry.METRICS.values()]
    for names in selections:
        got = analyze_store(path, progress=False, options=AnalysisOptions(metrics=names))
        groups = ("summary", "per_class", "transitions")
        for group in groups:
            for var in got[group].data_vars:
                _equal(got[group][var], full[group][var])
        stored = {v for g in groups for v in got[g].data_vars}
        wanted = {registry.METRICS[k].store_name for k in registry.select(names)}
        assert stored == wanted, (names, stored)


def test_layer_metrics_selection_skips_the_second_pass(monkeypatch):
    import ncprobe.analyze.metrics as metrics_module

    x, y, _ = make_synthetic_arrays(n_classes=3, dim=6, n_per_class=20, noise=0.2)
    h, labels = xr.DataArray(x, dims=("sample", "feature")), xr.DataArray(y, dims="sample")
    full = layer_metrics(h, labels, 3)

    def no_second_pass(*args, **kwargs):
        raise AssertionError("the second pass ran for a first-pass selection")

    monkeypatch.setattr(metrics_module, "within_stats", no_second_pass)
    got = layer_metrics(h, labels, 3, metrics=["equinorm", "etf_distance"])
    _equal(got["equinorm"], full["equinorm"])
    _equal(got["etf_distance"], full["etf_distance"])
    assert "nc1" not in got


def test_unknown_metric_is_one_line(tmp_path, capsys):
    path = synthetic_store(tmp_path / "a.zarr")[0]
    assert analyze([str(path), "--out", str(tmp_path / "m.zarr"), "--metrics", "nc1,nc7",
                    "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nc-analyze: error: unknown metric(s) nc7; expected names of "
                          "docs/metrics.md: align_angle, cdnv") and err.count("\n") == 1
    assert not (tmp_path / "m.zarr").exists()


def _sum_abs(x, groups, n_classes):
    """A test-only statistic: per class of each grouping, sum_i ||h_i||_1."""
    out = np.zeros((groups.shape[1], n_classes))
    l1 = np.abs(x).sum(axis=1)
    for k in range(groups.shape[1]):
        ok = (groups[:, k] >= 0) & (groups[:, k] < n_classes)
        out[k] = np.bincount(groups[ok, k], weights=l1[ok], minlength=n_classes)
    return out


def _mean_l1(g):
    """A test-only metric: (1/N) sum_i ||h_i||_1 of the grouping, from the new statistic."""
    return g.where_valid(g.sum_abs.sum(axis=-1) / g.n)


@pytest.fixture
def l1_metric():
    statistics.declare(Statistic("sum_abs", 1, ("grouping", "class"), "sum_{i in c} ||h_i||_1",
                                 chunk=_sum_abs))
    metric = registry.register(Metric("mean_l1", _mean_l1, ("sum_abs", "n", "where_valid"),
                                      "(1/N) Σ ‖h_i‖₁", groupings=registry.REPORTED))
    yield metric
    registry.unregister(metric.key)
    statistics.undeclare("sum_abs")


def test_a_declared_statistic_and_its_metric_reach_the_store(tmp_path, l1_metric):
    path, feats, labels, _, _ = synthetic_store(tmp_path / "a.zarr", chunk_samples=11)
    assert analyze([str(path), "--out", str(tmp_path / "m.zarr"), "--metrics",
                    "mean_l1,nc1", "--no-progress"]) == 0
    got = open_metrics(tmp_path / "m.zarr")["summary"]["mean_l1"]
    x = feats["train"]["l1"][0, 0]
    want = np.abs(x).sum(axis=1).mean()
    assert float(got.sel(split="train", layer="l1", condition="clean", grouping="label")
                 .isel(checkpoint=0)) == pytest.approx(want, rel=1e-12)


def test_a_chunk_statistic_is_computed_only_when_a_selected_metric_needs_it(tmp_path,
                                                                         l1_metric):
    path, *_ = synthetic_store(tmp_path / "a.zarr", chunk_samples=11)
    calls = []

    def counted(x, groups, n_classes):
        calls.append(len(x))
        return _sum_abs(x, groups, n_classes)

    statistics.undeclare("sum_abs")
    statistics.declare(Statistic("sum_abs", 1, ("grouping", "class"), "sum_{i in c} ||h_i||_1",
                                 chunk=counted))
    assert registry.chunk_statistics(["equinorm"]) == []
    assert registry.chunk_statistics(["mean_l1", "cdnv"]) == ["sumsq", "sum_abs"]
    m = analyze_store(path, options=AnalysisOptions(metrics=["equinorm", "nc1_trace"]),
                      progress=False)
    assert calls == [] and np.isfinite(m["summary"]["nc1_trace"]).any()
    analyze_store(path, options=AnalysisOptions(metrics=["mean_l1"]), progress=False)
    assert sum(calls) > 0


def test_within_from_one_pass_keeps_its_precision_far_from_the_origin():
    """Tr Sigma_W from pass 1's sums of squared norms (sumsq - ||s||^2 / n) loses at most
    4 eps64 sum_{i in c} ||h_i||^2 against the two-pass float64 value: the bound of
    docs/metrics.md, here with class means 4e3 standard deviations from the origin in every
    coordinate (a relative error of about 1e-8)."""
    from ncprobe.analyze.stats import class_stats

    x, y, _ = make_synthetic_arrays(n_classes=4, dim=16, n_per_class=200, noise=1.0, seed=3)
    x = (x + 4e3 * x.std()).astype(np.float32)
    h = xr.DataArray(x, dims=("sample", "feature"))
    got = class_stats(h, xr.DataArray(y, dims="sample"), 4)["within"].values
    xs = x.astype(np.float64)
    want = np.array([((xs[y == c] - xs[y == c].mean(0)) ** 2).sum() for c in range(4)])
    norms = np.array([(xs[y == c] ** 2).sum() for c in range(4)])
    bound = 4 * np.finfo(np.float64).eps * norms
    assert (np.abs(got - want) <= bound).all(), (np.abs(got - want) / bound)
    assert (np.abs(got - want) / want).max() < 1e-7
