"""Many classes: more classes than dimensions (C > D + 1), sparse transitions, NCC ties."""

import warnings

import numpy as np
import pytest
import xarray as xr
from sklearn.metrics import confusion_matrix
from sklearn.neighbors import NearestCentroid

from ncprobe.analyze import layer_metrics
from ncprobe.analyze.kernels import geometry, passes
from ncprobe.analyze.run import analyze_store
from ncprobe.data.datasets import simplex_etf
from ncprobe.data.store.from_arrays import write_activation_store
from tests import reference

C, D, PER = 24, 6, 5  # 24 classes in 6 dimensions: no simplex ETF exists


def wide_store(path, c=C, d=D, per=PER, seed=0):
    """Clean and attacked features of c classes in d dimensions (c > d + 1), train and test."""
    rng = np.random.default_rng(seed)
    centres = 4 * rng.standard_normal((c, d))
    feats, labels, outputs = {}, {}, {}
    for s, n in (("train", per), ("test", max(2, per // 2 + 1))):
        y = np.repeat(np.arange(c), n)
        clean = centres[y] + rng.standard_normal((y.size, d))
        atk = clean + 2.5 * rng.standard_normal((y.size, d))
        feats[s] = {"l0": np.stack([clean, atk])[None], "l1": (2 * np.stack([clean, atk]))[None]}
        pred = np.stack([y, (y + rng.integers(0, 3, y.size)) % c])[None]
        labels[s] = y
        outputs[s] = {"logits": np.eye(c)[pred], "pred": pred}
    write_activation_store(path, feats, labels, n_classes=c, conditions=("clean", "pgd"),
                           outputs=outputs)
    return path, {s: {k: v.astype(np.float32).astype(np.float64) for k, v in f.items()}
                  for s, f in feats.items()}, labels, outputs


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    d = tmp_path_factory.mktemp("wide")
    path, feats, labels, outputs = wide_store(d / "acts.zarr")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = analyze_store(path, progress=False)
    return m, feats, labels, outputs, [str(w.message) for w in caught]


def close(a, b, rtol=1e-8):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("q", [0, 1])
def test_every_statistic_above_d_plus_one_matches_the_references(analysed, q):
    m, feats, labels, outputs, _ = analysed
    h, y = feats["test"]["l1"][0, q], labels["test"]
    s = m["summary"].to_dataset().isel(checkpoint=0, condition=q).sel(split="test", layer="l1")
    lab = s.sel(grouping="label")
    close(float(lab["nc1"]), reference.nc1(h, y, C))
    close(float(lab["nc1_trace"]), reference.nc1_trace(h, y, C))
    close(float(lab["cdnv"]), reference.cdnv(h, y, C))
    close(float(s["fuzziness"]), reference.fuzziness(h, y, C))
    assert int(lab["rank_b"]) == D
    close(float(lab["equinorm"]), reference.nc2(reference.simplex_matrix(h, y, C).T)["equinorm"],
          rtol=1e-7)
    for k in ("equiangular", "max_angle", "etf_distance"):
        assert np.isnan(float(lab[k])), k
    mean, var = reference.uniformity(h, y, C)
    close(float(lab["uniformity"]), mean)
    close(float(lab["uniformity_var"]), var)
    margins = reference.hull_margins(h, y, C)
    pc = m["per_class"].to_dataset().isel(checkpoint=0, condition=q).sel(split="test",
                                                                         layer="l1")
    np.testing.assert_allclose(pc["hull_margin"].values, margins, rtol=1e-6, atol=1e-7)
    close(float(s["hull_margin"]), margins.min(), rtol=1e-6)
    clf = NearestCentroid().fit(feats["train"]["l1"][0, 0], labels["train"])
    near = clf.predict(h)
    close(float(s["ncc_acc"]), np.mean(near == y))
    t = m["transitions"]["count"].isel(checkpoint=0, condition=q).sel(split="test", layer="l1")
    np.testing.assert_array_equal(t.values, confusion_matrix(y, near, labels=range(C)))
    np.testing.assert_allclose(pc["ncc_recall"].values,
                               [np.mean(near[y == c] == c) for c in range(C)], rtol=1e-12)
    pred = outputs["test"]["pred"][0, q]
    own = reference.nearest_centre(h, reference.class_means(h, y, C))
    close(float(lab["ncc_acc_self"]), np.mean(own == y))
    close(float(lab["nc4"]), np.mean(own != pred))
    close(float(s["net_acc"]), np.mean(pred == y))
    ref = reference.class_means(feats["train"]["l1"][0, 0], labels["train"], C)
    lr = reference.leap_rate(h, y, pred, ref)
    assert np.isnan(float(s["leap_rate"])) if np.isnan(lr) else \
        float(s["leap_rate"]) == pytest.approx(lr, rel=1e-12)
    angles = reference.align_angles(h, feats["test"]["l1"][0, 0], y, C)
    np.testing.assert_allclose(pc["align_angle"].values, angles, rtol=1e-6, atol=1e-5)
    close(pc["within_var"].values, [np.mean(np.sum((h[y == c] - h[y == c].mean(0)) ** 2, 1))
                                    for c in range(C)])
    close(pc["mean_norm"].values,
          np.linalg.norm(reference.simplex_matrix(h, y, C), axis=0))


def test_one_warning_says_why_the_simplex_metrics_are_nan(analysed):
    msgs = [w for w in analysed[4] if "no simplex ETF" in w]
    assert len(msgs) == 1, analysed[4]
    assert f"{C} classes in {D} dimensions" in msgs[0]
    assert "etf_distance" in msgs[0] and "uniformity" in msgs[0]


def test_layer_metrics_warns_too():
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(8), 3)
    h = xr.DataArray(rng.standard_normal((y.size, 3)), dims=("sample", "feature"))
    with pytest.warns(UserWarning, match="8 classes in 3 dimensions"):
        out = layer_metrics(h, xr.DataArray(y, dims="sample"), 8)
    assert np.isnan(float(out["etf_distance"].sel(grouping="label")))
    assert np.isfinite(float(out["uniformity"].sel(grouping="label")))


def test_uniformity_and_hull_margin_of_an_exact_etf():
    for c, d in ((3, 5), (6, 5), (10, 12)):
        v = 2.5 * simplex_etf(c, d)
        present = np.ones(c, bool)
        u = geometry.uniformity(v, present)
        # every pair of unit vertices is sqrt(2 C / (C - 1)) apart
        assert float(u["mean"]) == pytest.approx(-0.5 * np.log(2 * c / (c - 1)), rel=1e-12)
        assert float(u["var"]) == pytest.approx(0.0, abs=1e-24)
        np.testing.assert_allclose(geometry.hull_margins(v, present), c / (c - 1), rtol=1e-9)


def test_pairwise_blocks_give_the_same_numbers(monkeypatch):
    """Class blocks bound the memory; the numbers do not depend on the block size."""
    rng = np.random.default_rng(2)
    v, present = rng.standard_normal((3, 40, 7)), rng.random((3, 40)) > 0.2
    var = rng.random((3, 40))
    whole = (geometry.nc2(v, present), geometry.uniformity(v, present),
             geometry.cdnv(v, var, present))
    monkeypatch.setattr(geometry, "PAIR_BLOCK", 7)
    blocked = (geometry.nc2(v, present), geometry.uniformity(v, present),
               geometry.cdnv(v, var, present))
    for a, b in zip(whole[:2], blocked[:2], strict=True):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12)
    np.testing.assert_allclose(whole[2], blocked[2], rtol=1e-12)


def test_sparse_transitions_beyond_the_dense_limit(tmp_path, monkeypatch):
    from dataclasses import replace

    from ncprobe.analyze.kernels.statistics import STATISTICS

    monkeypatch.setitem(STATISTICS, "transitions",
                        replace(STATISTICS["transitions"], sparse_beyond=10))
    path, feats, labels, _ = wide_store(tmp_path / "acts.zarr", c=16, d=20)
    m = analyze_store(path, tmp_path / "m.zarr", progress=False)
    t = xr.open_datatree(tmp_path / "m.zarr", engine="zarr")["transitions"].to_dataset()
    assert set(t.data_vars) == {"label", "vertex", "count"} and "entry" in t.dims
    assert t.attrs["form"] == "sparse"
    clf = NearestCentroid().fit(feats["train"]["l0"][0, 0], labels["train"])
    for q in range(2):
        h, y = feats["test"]["l0"][0, q], labels["test"]
        want = confusion_matrix(y, clf.predict(h), labels=range(16))
        b = t.sel(split="test", layer="l0").isel(checkpoint=0, condition=q)
        got = np.zeros((16, 16), np.int64)
        keep = b["count"].values > 0
        np.add.at(got, (b["label"].values[keep], b["vertex"].values[keep]),
                  b["count"].values[keep])
        np.testing.assert_array_equal(got, want)
    lazy = layer_metrics(xr.DataArray(feats["test"]["l0"][0], dims=("condition", "sample",
                                                                    "feature"),
                                      coords={"condition": ["clean", "pgd"]}),
                         xr.DataArray(labels["test"], dims="sample"), 16)
    assert lazy["transitions"].dtype == object and lazy["transitions"].dims == ("condition",)
    assert int(lazy["transitions"].values[0].counts.sum()) == labels["test"].size
    assert float(m["summary"]["ncc_acc"].sel(split="test", layer="l0", condition="clean")
                 .isel(checkpoint=0)) == pytest.approx(np.mean(clf.predict(
                     feats["test"]["l0"][0, 0]) == labels["test"]))


def test_ncc_ties_go_to_the_lowest_class_as_scikit_learn():
    """A sample exactly between centres (values exact in binary) is given the lowest class,
    by ncc_predict and the pass kernels' argmin alike, as NearestCentroid does."""
    from ncprobe.analyze import ncc_predict

    centres = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    h = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.5], [1.5, 0.0], [0.5, 1.5]])
    got = ncc_predict(xr.DataArray(h, dims=("sample", "feature")),
                      xr.DataArray(centres, dims=("class", "feature"))).values
    with np.errstate(invalid="ignore", divide="ignore"):  # sklearn's spread of 1 sample
        clf = NearestCentroid().fit(centres, [0, 1, 2])
    np.testing.assert_array_equal(got, clf.predict(h))
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 1, 2])
    near = passes.nearest(h[:, None, :], centres[None])
    np.testing.assert_array_equal(near.ravel(), got)


def test_the_report_stays_readable_with_many_classes(tmp_path):
    """60 classes: leaps as named bars instead of a heatmap of unreadable cells, every other
    figure drawn, per-class values summarised."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import QuadMesh

    from ncprobe.plots import figures
    from ncprobe.plots.cli import main as plot

    path, *_ = wide_store(tmp_path / "acts.zarr", c=60, d=12, per=4)
    m = analyze_store(path, tmp_path / "m.zarr", progress=False)
    ax = figures.transition_matrix(m, "pgd")
    assert not any(isinstance(a, QuadMesh) for a in ax.get_children())
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 10 and all("→" in s for s in labels)
    plt.close("all")
    assert plot([str(tmp_path / "m.zarr"), "--out", str(tmp_path / "fig"), "--names", "wide",
                 "--no-progress"]) == 0
    drawn = {p.stem for p in (tmp_path / "fig").glob("*.png")}
    assert {"transitions", "alignment", "nc2_per_layer", "collapse_per_layer"} <= drawn
