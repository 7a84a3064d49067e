"""The memory budget: which layers are read once, and results bitwise equal to streaming."""

import logging

import dask
import pytest
import xarray as xr

from ncprobe.analyze import AnalysisError
from ncprobe.analyze.cli import main
from ncprobe.analyze.memory import (
    AUTO_FRACTION,
    AUTO_LOCAL_BATCH,
    auto_budget,
    available_memory,
    parse_memory,
    plan_reads,
)
from ncprobe.analyze.run import analyze_store
from tests.helpers import synthetic_store


@pytest.mark.parametrize("given, want", [("auto", None), (None, None), (0, 0), ("0", 0),
                                         (123, 123), ("512MiB", 512 * 2**20), ("8GB", 8e9)])
def test_parse_memory(given, want):
    assert parse_memory(given) == want


@pytest.mark.parametrize("given", ["lots", -1, "-5MB", True, "5 foos"])
def test_parse_memory_refuses_what_is_not_a_size(given):
    with pytest.raises(AnalysisError, match="memory"):
        parse_memory(given)


def test_auto_is_a_fraction_of_what_is_available_capped_for_local_stores(tmp_path):
    budget, source = available_memory()
    assert 0 < budget
    assert f"{AUTO_FRACTION:g} of the" in source
    local, why = auto_budget(tmp_path / "a.zarr")
    assert local == min(budget, AUTO_LOCAL_BATCH) and "local store" in why
    assert auto_budget("memory://bucket/a.zarr")[0] >= local


def test_plan_keeps_a_layer_together_reference_split_first_and_streams_what_cannot_fit():
    sizes = {("test", "a"): 40, ("train", "a"): 50, ("test", "b"): 300, ("train", "b"): 30,
             ("test", "c"): 60, ("train", "c"): 70}
    plan = plan_reads(sizes, 100, "given", "train")
    assert plan.streamed == [("test", "b")]
    assert plan.batches == [[("train", "a"), ("test", "a")], [("train", "b"), ("train", "c")],
                            [("test", "c")]]
    assert all(sum(sizes[k] for k in b) <= 100 for b in plan.batches)
    assert "5 of 6 split/layer arrays read once" in plan.describe()
    assert plan_reads(sizes, 0, "given", "train").batches == []


def _identical(a, b):
    for group in a.groups:
        if group != "/":
            xr.testing.assert_identical(a[group].to_dataset(), b[group].to_dataset())


def test_held_and_streamed_results_are_bitwise_identical(tmp_path, caplog):
    path, stored, _, _, _ = synthetic_store(tmp_path / "a.zarr", dims=(12, 6, 9),
                                            chunk_samples=11, checkpoints=(0, 1))
    one_layer = max(a.size for f in stored.values() for a in f.values()) * 4
    with caplog.at_level(logging.INFO, logger="ncprobe.analyze"):
        streamed = analyze_store(path, progress=False, memory=0)
        held = analyze_store(path, progress=False, memory="1GiB")
        # a budget for about one array: several batches, and the largest arrays streamed
        mixed = analyze_store(path, progress=False, memory=one_layer - 1)
    logs = [r.getMessage() for r in caplog.records if "memory budget" in r.getMessage()]
    assert "0 of 6 split/layer arrays read once" in logs[0]
    assert "6 of 6 split/layer arrays read once and kept, 0 streamed" in logs[1]
    assert " 0 streamed" not in logs[2] and "0 of 6" not in logs[2]
    _identical(streamed, held)
    _identical(streamed, mixed)


def test_small_one_chunk_layers_held_run_in_numpy_and_equal_the_streamed(tmp_path, monkeypatch):
    import ncprobe.analyze.run as run

    path = synthetic_store(tmp_path / "a.zarr", dims=(12, 6, 9), chunk_samples=1000,
                           checkpoints=(0, 1))[0]
    streamed = analyze_store(path, progress=False, memory=0)

    kept = []
    real = run.persist_all

    def numpy_only(collections, *args, **kwargs):
        assert not any(dask.is_dask_collection(c) for c in collections), \
            "a small one-chunk layer was held through a dask graph"
        kept.append(len(collections))
        return real(collections, *args, **kwargs)

    monkeypatch.setattr(run, "persist_all", numpy_only)
    held = analyze_store(path, progress=False, memory="1GiB")
    assert kept  # the same code path, with numpy in it
    _identical(streamed, held)


def test_cli_memory_flag(tmp_path, capsys):
    path = synthetic_store(tmp_path / "a.zarr")[0]
    assert main([str(path), "--out", str(tmp_path / "m.zarr"), "--memory", "lots",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'lots' is not a size" in err
    assert not (tmp_path / "m.zarr").exists()
    assert main([str(path), "--out", str(tmp_path / "m.zarr"), "--memory", "0",
                 "--no-progress"]) == 0


def test_many_classes_pass2_and_metrics_block_by_block_equal_the_whole(tmp_path, monkeypatch):
    """Beyond PLAN_BYTES, pass 2 runs one (checkpoint, condition) block at a time with its plan
    made before it; beyond BLOCK_BYTES the metrics are computed one block at a time. Both
    give the results of the whole layer at once, bitwise."""
    import ncprobe.analyze.metrics as metrics
    import ncprobe.analyze.run as run
    import ncprobe.analyze.stats as stats

    path = synthetic_store(tmp_path / "a.zarr", dims=(12, 6, 9), chunk_samples=11,
                           checkpoints=(0, 1))[0]
    whole = {m: analyze_store(path, progress=False, memory=m) for m in (0, "1GiB")}
    blocks = []
    real = run.within_stats

    def one_block(features, *args, **kwargs):
        blocks.append((features.sizes["checkpoint"], features.sizes["condition"]))
        return real(features, *args, **kwargs)

    monkeypatch.setattr(run, "within_stats", one_block)
    for module, name in ((stats, "PLAN_BYTES"), (metrics, "BLOCK_BYTES")):
        monkeypatch.setattr(module, name, 0)
    for memory, want in whole.items():
        blocks.clear()
        _identical(analyze_store(path, progress=False, memory=memory), want)
        n_conditions = want["summary"].sizes["condition"]
        # 2 splits x 3 layers, each in 2 checkpoints x n_conditions blocks
        assert blocks == [(1, 1)] * (6 * 2 * n_conditions)


def test_chunk_file_reads_equal_zarr_reads_held_and_streamed(tmp_path, monkeypatch):
    """The analysis reads the features, labels, predictions and classifier of a local store from
    their chunk files in its own threads; the metrics are bitwise those of zarr's reads."""
    from ncprobe.data.store import chunk_file

    path = synthetic_store(tmp_path / "a.zarr", dims=(12, 6, 9), chunk_samples=11)[0]
    read = []
    real = chunk_file.ChunkFileReader.read

    def counted(self, coords):
        read.append(self._path)
        return real(self, coords)

    monkeypatch.setattr(chunk_file.ChunkFileReader, "read", counted)
    direct = {m: analyze_store(path, progress=False, memory=m) for m in (0, "1GiB")}
    assert {p.rsplit("/", 1)[-1] for p in read} == {"features", "label", "pred", "target",
                                                     "weight"}
    read.clear()
    monkeypatch.setenv(chunk_file.READS_ENV, "zarr")
    for m, got in direct.items():
        _identical(got, analyze_store(path, progress=False, memory=m))
    assert not read
