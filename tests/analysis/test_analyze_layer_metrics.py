"""One analysis path: the DataArray API broadcasts over any dims and equals what the store
runner writes, because the runner is built from it."""

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from ncprobe.analyze import class_stats, nc1, ncc_predict, within_stats
from ncprobe.analyze.metrics import clean_reference, grouping_labels, layer_metrics
from ncprobe.analyze.run import AnalysisOptions, analyze_store
from ncprobe.data.datasets import make_synthetic_arrays
from tests import reference
from tests.helpers import raise_if_computed, synthetic_store


def stacked_features(seed=0):
    """(checkpoint 2, condition 3, sample, feature) with a different noise level per slice."""
    x, y, _ = make_synthetic_arrays(4, 9, 25, noise=0.7, seed=seed)
    rng = np.random.default_rng(seed)
    data = np.stack([np.stack([x * (k + 1) + s * rng.standard_normal(x.shape)
                               for s in (0.0, 1.0, 2.5)]) for k in range(2)])
    h = xr.DataArray(data, dims=("checkpoint", "condition", "sample", "feature"),
                     coords={"checkpoint": [10, 20], "condition": ["clean", "pgd", "noise"]})
    return h, xr.DataArray(y, dims="sample")


def test_statistics_broadcast_over_leading_dims_like_slices():
    h, y = stacked_features()
    s = class_stats(h, y, 4)
    w = within_stats(h, y, s)
    n = nc1(h, y, 4)
    assert n.dims == ("checkpoint", "condition")
    for k in range(2):
        for q in range(3):
            one = h.isel(checkpoint=k, condition=q)
            s1 = class_stats(one, y, 4)
            np.testing.assert_allclose(s["mean"][k, q], s1["mean"], rtol=1e-13)
            np.testing.assert_allclose(w["projected"][k, q], within_stats(one, y, s1)["projected"],
                                       rtol=1e-12)
            assert float(n[k, q]) == pytest.approx(reference.nc1(one.values, y.values, 4), rel=1e-9)
    pred = ncc_predict(h, s["mean"])
    assert pred.dims == ("checkpoint", "condition", "sample")
    np.testing.assert_array_equal(pred[1, 2], ncc_predict(h[1, 2], s["mean"][1, 2]))


def test_layer_metrics_is_lazy_and_chunking_invariant():
    h, y = stacked_features(1)
    pred = xr.DataArray(np.broadcast_to(y.values, (2, 3, y.size)).copy(),
                        dims=("checkpoint", "condition", "sample"))
    eager = layer_metrics(h, y, 4, pred=pred)
    with raise_if_computed(0):
        lazy = layer_metrics(h.chunk({"sample": 13}), y, 4, pred=pred)
    assert all(isinstance(v.data, da.Array) for v in lazy.data_vars.values())
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-10)
    assert eager["nc1"].dims == ("checkpoint", "condition", "grouping")
    assert eager["class_align_angle"].dims == ("checkpoint", "condition", "class")
    assert eager["transitions"].dims == ("checkpoint", "condition", "label", "vertex")
    assert eager["means"].dims == ("checkpoint", "condition", "grouping", "class", "feature")
    # pred == label everywhere: the network is always right and never flipped
    np.testing.assert_array_equal(eager["net_acc"], 1.0)
    assert np.isnan(eager["leap_rate"]).all()


def test_without_predictions_the_prediction_metrics_are_nan_not_made_up():
    h, y = stacked_features(2)
    m = layer_metrics(h, y, 4)
    assert np.isnan(m["net_acc"]).all() and np.isnan(m["leap_rate"]).all()
    assert np.isnan(m["nc4"]).all()
    assert np.isnan(m["nc1"].sel(grouping="pred")).all()
    assert np.isfinite(m["nc1"].sel(grouping="label")).all()
    assert np.isfinite(m["ncc_acc"]).all()


def test_layer_metrics_equals_the_metrics_store_for_a_slice_of_a_store(tmp_path):
    """What a notebook computes for one layer of a store is what nc-analyze wrote."""
    path = synthetic_store(tmp_path / "acts.zarr", n_classes=4, checkpoints=(3, 7))[0]
    written = analyze_store(path, tmp_path / "m.zarr", AnalysisOptions(dense=True),
                            progress=False)
    acts = xr.open_datatree(path, engine="zarr", chunks={})
    weight = acts["classifier"]["weight"]
    train_clean = None
    for split in ("train", "test"):
        for layer in ("l0", "l1"):
            f = acts[f"{split}/layers/{layer}"]["features"]
            out = acts[f"{split}/outputs"]
            ref = None if split == "train" else clean_reference(class_stats(
                train_clean[layer], grouping_labels(train_clean[layer]["label"]), 4))
            m = layer_metrics(f, f["label"], 4, pred=out["pred"], target=out["target"],
                              reference=ref, weight=weight if layer == "l1" else None,
                              dense=True).compute()
            for name in ("nc1", "nc1_shuffled", "ncc_acc", "leap_rate", "align_angle", "nc3",
                         "etf_distance", "nc4", "net_acc"):
                want = written["summary"][name].sel(split=split, layer=layer)
                np.testing.assert_allclose(m[name].transpose(*want.dims), want, rtol=1e-12)
            np.testing.assert_array_equal(
                m["transitions"], written["transitions"]["count"].sel(split=split, layer=layer))
            np.testing.assert_allclose(
                m["sigma_w"], written[f"layers/{layer}"]["sigma_w"].sel(split=split), rtol=1e-12)
        train_clean = {la: acts[f"train/layers/{la}"]["features"] for la in ("l0", "l1")}


def test_without_clean_centres_nothing_is_nearest_and_ncc_metrics_are_nan():
    """A store without a 'clean' condition: no NCC centres, so ncc_acc, leap_rate, the
    transitions and align_angle are NaN or empty, not counts against made-up centres."""
    h, y = stacked_features(3)
    attacked_only = h.assign_coords(condition=["pgd", "noise", "fgsm"])
    m = layer_metrics(attacked_only, y, 4)
    assert np.isnan(m["ncc_acc"]).all() and np.isnan(m["align_angle"]).all()
    assert int(m["transitions"].sum()) == 0
    # one condition, no condition dim: its own class means are the centres
    one = layer_metrics(h.isel(checkpoint=0, condition=0), y, 4)
    assert float(one["ncc_acc"]) == pytest.approx(float(one["ncc_acc_self"].sel(
        grouping="label")))
