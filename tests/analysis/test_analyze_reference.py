"""The store analysis against the slow float64 references of tests/reference.py."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix
from sklearn.neighbors import NearestCentroid

from ncprobe.analyze.run import AnalysisOptions, analyze_store
from tests import reference
from tests.helpers import synthetic_store

RTOL = 1e-8
C = 4


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    d = tmp_path_factory.mktemp("ref")
    path, feats, labels, outputs, weight = synthetic_store(d / "acts.zarr", n_classes=C)
    m = analyze_store(path, d / "metrics.zarr", AnalysisOptions(dense=True), progress=False)
    return m, feats, labels, outputs, weight


def close(a, b, rtol=RTOL):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)


CASES = [(s, la, q) for s in ("train", "test") for la in ("l0", "l1") for q in range(3)]


@pytest.mark.parametrize(("split", "layer", "q"), CASES)
def test_collapse_metrics_match_reference(analysed, split, layer, q):
    m, feats, labels, outputs, _ = analysed
    h = feats[split][layer][0, q]
    y = labels[split]
    summ = m["summary"].to_dataset().isel(checkpoint=0, condition=q).sel(split=split, layer=layer)
    groupings = {"label": y, "pred": outputs[split]["pred"][0, q],
                 "target": outputs[split]["target"][0, q]}
    for name, g in groupings.items():
        s = summ.sel(grouping=name)
        if (g < 0).all():
            assert np.isnan(float(s["nc1"]))
            continue
        close(float(s["nc1"]), reference.nc1(h, g, C))
        close(float(s["nc1_trace"]), reference.nc1_trace(h, g, C))
        close(float(s["cdnv"]), reference.cdnv(h, g, C))
        ref2 = reference.nc2(reference.simplex_matrix(h, g, C).T)
        for k, v in ref2.items():
            close(float(s[k]), v, rtol=1e-7)
        own = reference.nearest_centre(h, reference.class_means(h, g, C))
        close(float(s["ncc_acc_self"]), np.mean(own == y))
        close(float(s["nc4"]), np.mean(own != outputs[split]["pred"][0, q]))
        assert int(s["rank_b"]) == np.linalg.matrix_rank(reference.centred_matrix(h, g, C))
    close(float(summ["fuzziness"]), reference.fuzziness(h, y, C))


@pytest.mark.parametrize(("split", "layer", "q"), CASES)
def test_ncc_leap_transitions_align_match_reference(analysed, split, layer, q):
    m, feats, labels, outputs, _ = analysed
    h = feats[split][layer][0, q]
    y = labels[split]
    ref = reference.class_means(feats["train"][layer][0, 0], labels["train"], C)
    near = reference.nearest_centre(h, ref)
    sel = dict(split=split, layer=layer)
    summ = m["summary"].to_dataset().isel(checkpoint=0, condition=q).sel(sel)
    close(float(summ["ncc_acc"]), np.mean(near == y))
    pred = outputs[split]["pred"][0, q]
    close(float(summ["net_acc"]), np.mean(pred == y))
    lr = reference.leap_rate(h, y, pred, ref)
    if np.isnan(lr):
        assert np.isnan(float(summ["leap_rate"]))
    else:
        close(float(summ["leap_rate"]), lr)
    trans = m["transitions"]["count"].isel(checkpoint=0, condition=q).sel(sel).values
    np.testing.assert_array_equal(trans, reference.transitions(y, near, C))
    angles = reference.align_angles(h, feats[split][layer][0, 0], y, C)
    pc = m["per_class"].to_dataset().isel(checkpoint=0, condition=q).sel(sel)
    # arccos in the reference is good to ~1e-6 degree near 0; the code uses Kahan's formula
    np.testing.assert_allclose(pc["align_angle"].values, angles, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(float(summ["align_angle"]), angles.mean(), rtol=1e-6, atol=1e-5)
    shuffled = y[np.random.default_rng(0).permutation(y.size)]
    close(float(summ["nc1_shuffled"]), reference.nc1(h, shuffled, C))


def test_ncc_agrees_with_sklearn_nearest_centroid(analysed):
    m, feats, labels, _, _ = analysed
    clf = NearestCentroid().fit(feats["train"]["l1"][0, 0], labels["train"])
    for q in range(3):
        pred = clf.predict(feats["test"]["l1"][0, q])
        sel = dict(split="test", layer="l1", condition=m["summary"].condition.values[q])
        s = m["summary"].to_dataset().isel(checkpoint=0).sel(sel)
        close(float(s["ncc_acc"]), np.mean(pred == labels["test"]))
        t = m["transitions"]["count"].isel(checkpoint=0).sel(sel).values
        np.testing.assert_array_equal(t, confusion_matrix(labels["test"], pred, labels=range(C)))


def test_classifier_metrics_and_dense_covariances(analysed):
    m, feats, labels, _, weight = analysed
    h, y = feats["train"]["l1"][0, 0], labels["train"]
    s = m["summary"].to_dataset().sel(split="train", layer="l1", condition="clean").isel(
        checkpoint=0)
    close(float(s["nc3"]), reference.nc3(weight[0], h, y, C))
    for k, v in reference.nc2(weight[0]).items():
        close(float(s[f"{k}_w"]), v, rtol=1e-7)
    assert np.isnan(float(m["summary"]["nc3"].sel(split="train", layer="l0",
                                                  condition="clean").isel(checkpoint=0)))
    lay = m["layers/l1"].to_dataset().sel(split="train", condition="clean").isel(checkpoint=0)
    close(lay["sigma_w"].values, reference.sigma_w(h, y, C))
    close(lay["sigma_b"].values, reference.sigma_b(h, y, C))
    means = reference.class_means(h, y, C)
    close(lay["means"].sel(grouping="label").values, np.stack([means[c] for c in range(C)]))


def test_separation_law_needs_three_layers(analysed):
    m = analysed[0]
    law = m["separation"].to_dataset()
    assert set(law.data_vars) == {"rho", "a", "r2", "n_layers"}
    assert law["rho"].dims == ("split", "checkpoint", "condition")
    assert (law["n_layers"] == 2).all() and law["rho"].isnull().all()
