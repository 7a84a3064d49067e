"""Stores at fsspec URLs: an in-memory filesystem stands in for object storage."""

import uuid
import warnings

import fsspec
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from ncprobe.analyze.run import analyze_store
from tests.helpers import synthetic_store


@pytest.fixture
def root():
    name = f"memory://ncprobe-{uuid.uuid4().hex}"
    yield name
    fs, path = fsspec.core.url_to_fs(name)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def test_write_analyse_and_read_back_through_fsspec(root, tmp_path):
    _, feats, labels, _, _ = synthetic_store(f"{root}/acts.zarr")
    local = synthetic_store(tmp_path / "acts.zarr")[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        remote_m = analyze_store(f"{root}/acts.zarr", f"{root}/metrics.zarr", progress=False)
        tree = xr.open_datatree(f"{root}/metrics.zarr", engine="zarr")
        acts = xr.open_datatree(f"{root}/acts.zarr", engine="zarr")
    np.testing.assert_array_equal(acts["train/layers/l0"]["features"].values,
                                  feats["train"]["l0"].astype(np.float32))
    assert tree.attrs["complete"] is True and tree.attrs["source"] == f"{root}/acts.zarr"
    local_m = analyze_store(local, progress=False)
    np.testing.assert_allclose(tree["summary"]["nc1"].values, local_m["summary"]["nc1"].values,
                               rtol=1e-12)
    np.testing.assert_array_equal(remote_m["transitions"]["count"].values,
                                  local_m["transitions"]["count"].values)
    fs, path = fsspec.core.url_to_fs(f"{root}/metrics.csv")
    with fs.open(path) as f:
        csv = pd.read_csv(f)
    assert set(csv.metric) >= {"nc1", "ncc_acc"}


def test_extract_to_a_url(root, tmp_path):
    from ncprobe.extract.extraction import ExtractConfig, extract_store
    from ncprobe.extract.training import TrainConfig, train

    train(TrainConfig(epochs=1, schedule="constant", lr=0.05), tmp_path / "run", progress=False)
    cfg = ExtractConfig(checkpoints=[str(tmp_path / "run/checkpoints/epoch-0001.pt")],
                        attacks=["clean", "fgsm:eps=0.1"], limit=60, chunk_samples=25)
    extract_store(cfg, f"{root}/acts.zarr", progress=False)
    extract_store(cfg, tmp_path / "acts.zarr", progress=False)
    remote = xr.open_datatree(f"{root}/acts.zarr", engine="zarr")
    local = xr.open_datatree(tmp_path / "acts.zarr", engine="zarr")
    for layer in ("block1", "logits"):
        np.testing.assert_array_equal(remote[f"test/layers/{layer}"]["features"].values,
                                      local[f"test/layers/{layer}"]["features"].values)
    assert remote.attrs["complete"] is True
    fs, path = fsspec.core.url_to_fs(root)
    assert not fs.exists(f"{path}/.acts.zarr.lock")
