"""Activation-store schema: writer round trip, validation errors, resume and refusal rules."""

import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from ncprobe.data import schema
from ncprobe.data.store import (
    IncompleteStoreError,
    NotInStoreError,
    SchemaError,
    StoreError,
    layer_dataset,
    open_activations,
    select_conditions,
)
from ncprobe.data.store.from_arrays import write_activation_store
from ncprobe.data.store.layout import LayerSpec
from ncprobe.data.store.lock import StoreLockedError
from ncprobe.data.store.writer import ActivationStoreWriter


def _store(path, **kw):
    rng = np.random.default_rng(0)
    feats = {"train": {"a": rng.standard_normal((2, 2, 50, 3))},
             "test": {"a": rng.standard_normal((2, 2, 20, 3))}}
    labels = {"train": rng.integers(0, 3, 50), "test": rng.integers(0, 3, 20)}
    write_activation_store(path, feats, labels, n_classes=3, conditions=["clean", "pgd"],
                           checkpoints=[10, 20], chunk_samples=16, **kw)
    return feats, labels


def test_round_trip_plain_xarray_no_warnings(tmp_path):
    feats, labels = _store(tmp_path / "s.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree = xr.open_datatree(tmp_path / "s.zarr", engine="zarr")
        ds = xr.open_zarr(tmp_path / "s.zarr", group="train/layers/a")
    f = tree["train/layers/a"]["features"]
    assert f.dims == (schema.CHECKPOINT, schema.CONDITION, schema.SAMPLE, schema.FEATURE)
    np.testing.assert_array_equal(f.values, feats["train"]["a"].astype(np.float32))
    assert ds["features"].chunks[2][0] == 16
    assert list(ds.condition.values) == ["clean", "pgd"]
    assert ds.checkpoint.values.tolist() == [10, 20]
    np.testing.assert_array_equal(ds.label.values, labels["train"])
    assert tree.attrs["schema"] == schema.ACTIVATIONS_SCHEMA and tree.attrs["complete"] is True
    clean = f.sel(condition="clean")
    assert clean.shape == (2, 50, 3)


def test_split_smaller_than_a_chunk_is_one_chunk_of_its_size(tmp_path):
    """zarr pads a chunk to its full shape: a 20-sample split in 1000-sample chunks would be
    stored as 1000 rows of which 980 are NaN."""
    rng = np.random.default_rng(0)
    f = {"train": {"a": rng.standard_normal((1, 1, 50, 3))},
         "test": {"a": rng.standard_normal((1, 1, 20, 3))}}
    write_activation_store(tmp_path / "s.zarr", f, {"train": np.arange(50) % 2,
                                                    "test": np.arange(20) % 2},
                           n_classes=2, chunk_samples=1000)
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert root["train/layers/a/features"].chunks == (1, 1, 50, 3)
    assert root["test/layers/a/features"].chunks == (1, 1, 20, 3)
    assert root["test/outputs/logits"].chunks == (1, 1, 20, 2)
    assert root["test/outputs/pred"].chunks == (1, 1, 20)
    assert root.attrs["config"]["chunk_samples"] == 1000
    np.testing.assert_array_equal(root["test/layers/a/features"][...],
                                  f["test"]["a"].astype(np.float32))


def test_float16(tmp_path):
    feats, _ = _store(tmp_path / "s.zarr", dtype="float16")
    ds = layer_dataset(open_activations(tmp_path / "s.zarr"), "train", "a")
    assert ds["features"].dtype == np.float16
    np.testing.assert_allclose(ds["features"].values, feats["train"]["a"], rtol=1e-3, atol=1e-3)


def test_validation_errors_name_what_exists(tmp_path):
    _store(tmp_path / "s.zarr")
    tree = open_activations(tmp_path / "s.zarr")
    with pytest.raises(NotInStoreError, match="layer 'b' not in split 'train'; available: a"):
        layer_dataset(tree, "train", "b")
    with pytest.raises(NotInStoreError, match="split 'val' not in store; available: train, test"):
        layer_dataset(tree, "val", "a")
    with pytest.raises(NotInStoreError, match="condition 'fgsm' not in store; available: clean"):
        select_conditions(layer_dataset(tree, "train", "a"), ["fgsm"])


def test_unknown_schema_and_not_a_store(tmp_path):
    _store(tmp_path / "s.zarr")
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+", use_consolidated=False)
    g.attrs["schema"] = "ncprobe-activations/2"
    with pytest.raises(SchemaError, match="'ncprobe-activations/2'.*expected "
                                          "'ncprobe-activations/1'"):
        open_activations(tmp_path / "s.zarr")
    g.attrs["schema"] = "something-else"
    with pytest.raises(SchemaError):
        open_activations(tmp_path / "s.zarr")
    with pytest.raises(StoreError, match="no zarr store"):
        open_activations(tmp_path / "missing.zarr")


def test_incomplete_store_lists_missing_and_partial_read(tmp_path):
    spec = [LayerSpec("a", 0, "a", (3,), "flatten", 3)]
    y = np.arange(40) % 2
    w = ActivationStoreWriter(tmp_path / "s.zarr", layers=spec, checkpoints=[0],
                              conditions=[{"name": "clean"}], samples={"train": (np.arange(40), y)},
                              n_classes=2, config={"x": 1},
                              attrs={"dataset": {"splits": ["train"]}}, chunk_samples=16)
    w.open()
    w.write_block("train", 0, 0, 0, {"a": np.ones((16, 3))}, np.zeros((16, 2)), y[:16],
                  -np.ones(16), np.zeros(16))
    assert ("train", 0, 0, 0) in w.done_blocks() and ("train", 0, 0, 1) not in w.done_blocks()
    with pytest.raises(IncompleteStoreError, match=r"features: 1 of 3 chunks"):
        open_activations(tmp_path / "s.zarr")
    tree = open_activations(tmp_path / "s.zarr", allow_partial=True)
    f = tree["train/layers/a"]["features"].values
    assert (f[0, 0, :16] == 1).all() and np.isnan(f[0, 0, 16:]).all()
    with pytest.raises(StoreError, match="cannot be marked complete"):
        w.finalize()


def test_resume_same_config_refuse_other_never_delete_foreign(tmp_path):
    spec = [LayerSpec("a", 0, "a", (3,), "flatten", 3)]
    kw = dict(layers=spec, checkpoints=[0], conditions=[{"name": "clean"}],
              samples={"train": (np.arange(8), np.arange(8) % 2)}, n_classes=2,
              attrs={"dataset": {"splits": ["train"]}}, chunk_samples=4)
    w = ActivationStoreWriter(tmp_path / "s.zarr", config={"x": 1}, **kw).open()
    w.write_block("train", 0, 0, 0, {"a": np.ones((4, 3))}, np.zeros((4, 2)), np.zeros(4),
                  np.zeros(4), np.zeros(4))
    with pytest.raises(StoreLockedError, match="being written by another process"):
        ActivationStoreWriter(tmp_path / "s.zarr", config={"x": 1}, **kw).open()
    w.close()
    again = ActivationStoreWriter(tmp_path / "s.zarr", config={"x": 1}, **kw).open()
    assert ("train", 0, 0, 0) in again.done_blocks()  # resumed, not recreated
    again.close()
    with pytest.raises(StoreError, match=r"differs in: x\); pass `overwrite`"):
        ActivationStoreWriter(tmp_path / "s.zarr", config={"x": 2}, **kw).open()
    fresh = ActivationStoreWriter(tmp_path / "s.zarr", config={"x": 2}, **kw).open(overwrite=True)
    assert not fresh.done_blocks()
    fresh.close()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not an ncprobe activation store"):
        ActivationStoreWriter(foreign, config={"x": 1}, **kw).open(overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"


def test_resume_drops_stale_consolidated_metadata(tmp_path):
    _store(tmp_path / "s.zarr")
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r+", use_consolidated=False)
    g.attrs["complete"] = False
    # a reader must now see the store as incomplete, not the stale consolidated "complete"
    with pytest.raises(IncompleteStoreError):
        open_activations(tmp_path / "s.zarr")
