"""docs/metrics.md's conventions table, checked number by number.

Each other code's quantity is written here from its published definition (float64 numpy, no
code copied), computed on the features of a small store, and set beside what ``nc-analyze``
stored, converted by the table's factor:

* Su et al.'s ``eval.py`` (``neural_collapse``): Sigma_W / N, M centred on the sample-weighted
  mean mu_G, Sigma_B = M Mᵀ / C, NC1 = Tr(Sigma_W Sigma_B⁺); norms' std (ddof 1) / mean;
  angles mean over c ≠ c' of |cos + 1/(C-1)|; NC3 squared; NC4 with each condition's own means.
* Papyan, Han and Donoho's published code: the same, but M centred on the mean of the class
  means mu_bar, and Sigma_B⁺ from its top C-1 eigenpairs.
* rhubarbwu/neural-collapse (``measure.py``): M centred on mu_bar, V_inter = Mᵀ M / D,
  ``covariance_pinv`` = Tr(V_inter⁺ V_intra) / K, ``covariance_ratio`` = Tr V_intra / Tr V_inter,
  ``simplex_etf_error`` = ‖G/‖G‖_F - (I - 11ᵀ/K)/sqrt(K-1)‖_F, CDNV as Galanti et al.,
  ``clf_ncc_agreement`` = share of samples where argmax W h (no bias) is the nearest mean.
"""

import itertools

import numpy as np
import pytest

from ncprobe.analyze.run import analyze_store
from ncprobe.data.store.from_arrays import write_activation_store

C, D = 5, 12
RTOL = 1e-6  # features are stored as float32; every quantity is computed from those values


def _store(path, counts, seed=0):
    """Features of two conditions (clean, noisy) at the layer feeding a bias-free classifier
    whose rows are near, not at, the class means (so NC3 and NC4 are not 0)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(C), counts)
    centres = 3 * rng.standard_normal((C, D))
    clean = centres[y] + rng.standard_normal((y.size, D))
    noisy = clean + 1.5 * rng.standard_normal(clean.shape)
    h = np.stack([clean, noisy]).astype(np.float32)  # (condition, sample, feature)
    weight = (centres + 1.5 * rng.standard_normal((C, D))).astype(np.float32)
    logits = h.astype(np.float64) @ weight.T.astype(np.float64)
    write_activation_store(path, {"train": {"feat": h[None]}}, {"train": y}, n_classes=C,
                           conditions=("clean", "noise"),
                           outputs={"train": {"logits": logits[None],
                                              "pred": logits.argmax(-1)[None]}},
                           classifier=("feat", weight[None], np.zeros((1, C))))
    return h.astype(np.float64), y, weight.astype(np.float64), logits.argmax(-1)


def _means(h, y):
    return np.stack([h[y == c].mean(axis=0) for c in range(C)])  # (C, D)


def _sigma_w(h, y):
    r = h - _means(h, y)[y]
    return r.T @ r / len(h)


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def _equinorm(rows):
    n = np.linalg.norm(rows, axis=1)
    return np.std(n, ddof=1) / np.mean(n)


def _mean_abs_cos_shift(rows):
    return np.mean([abs(_cos(rows[a], rows[b]) + 1 / (C - 1))
                    for a, b in itertools.permutations(range(C), 2)])


def _nc3_squared(weight, m):
    return np.linalg.norm(weight / np.linalg.norm(weight) - m / np.linalg.norm(m)) ** 2


def _nearest_mean(h, means):
    return np.array([np.argmin([np.sum((x - mu) ** 2) for mu in means]) for x in h])


def su_et_al(h, y, weight, pred):
    """Su et al.'s ``neural_collapse``: the same loader for both arguments, own means."""
    means = _means(h, y)
    m = means - h.mean(axis=0)  # (C, D): the sample-weighted global mean mu_G
    sb = m.T @ m / C
    return {"NC1": np.trace(_sigma_w(h, y) @ np.linalg.pinv(sb, rcond=1e-10)),
            "NC2 norms M": _equinorm(m), "NC2 norms W": _equinorm(weight),
            "NC2 angles M": _mean_abs_cos_shift(m), "NC2 angles W": _mean_abs_cos_shift(weight),
            "NC3": _nc3_squared(weight, m),
            "NC4": np.mean(_nearest_mean(h, means) != pred)}


def papyan_et_al(h, y, weight, pred):
    """Papyan et al.'s code: M centred on mu_bar; Sigma_B⁺ from the top C-1 eigenpairs."""
    means = _means(h, y)
    m = means - means.mean(axis=0)
    sb = m.T @ m / C
    vals, vecs = np.linalg.eigh(sb)
    top = np.argsort(vals)[::-1][:C - 1]
    inv = (vecs[:, top] / vals[top]) @ vecs[:, top].T
    return {"NC1": np.trace(_sigma_w(h, y) @ inv), "NC2 norms M": _equinorm(m),
            "NC2 norms W": _equinorm(weight), "NC2 angles M": _mean_abs_cos_shift(m),
            "NC2 angles W": _mean_abs_cos_shift(weight), "NC3": _nc3_squared(weight, m),
            "NC4": np.mean(_nearest_mean(h, means) != pred)}


def rhubarbwu(h, y, weight):
    """rhubarbwu/neural-collapse's ``measure.py`` with its accumulators' defaults."""
    means = _means(h, y)
    m = means - means.mean(axis=0)  # MeanAccumulator.compute(): unweighted m_G
    v_inter = m.T @ m / D
    v_intra = _sigma_w(h, y)
    var = np.array([np.mean(np.sum((h[y == c] - means[c]) ** 2, axis=1)) for c in range(C)])
    cdnv = np.mean([(var[a] + var[b]) / 2 / np.sum((means[a] - means[b]) ** 2)
                    for a, b in itertools.combinations(range(C), 2)])
    g = m @ m.T
    ideal = (np.eye(C) - np.ones((C, C)) / C) / np.sqrt(C - 1)
    linear = (h @ weight.T).argmax(axis=1)
    return {"covariance_pinv": np.trace(np.linalg.pinv(v_inter, rcond=1e-10) @ v_intra) / C,
            "covariance_ratio": np.trace(v_intra) / np.trace(v_inter),
            "variability_cdnv": cdnv,
            "simplex_etf_error": np.linalg.norm(g / np.linalg.norm(g) - ideal),
            "clf_ncc_agreement": np.mean(linear == _nearest_mean(h, means))}


# the table in docs/metrics.md: (other code's quantity, ncprobe metric, factor(C, D))
SU = [("NC1", "nc1", lambda: C), ("NC2 norms M", "equinorm", lambda: 1),
      ("NC2 norms W", "equinorm_w", lambda: 1), ("NC2 angles M", "max_angle", lambda: 1),
      ("NC2 angles W", "max_angle_w", lambda: 1), ("NC3", "nc3", lambda: 1),
      ("NC4", "nc4", lambda: 1)]
PAPYAN = SU
RHUBARBWU = [("covariance_pinv", "nc1", lambda: D / C), ("covariance_ratio", "nc1_trace",
                                                         lambda: D / C),
             ("variability_cdnv", "cdnv", lambda: 1), ("simplex_etf_error", "etf_distance",
                                                       lambda: 1)]


@pytest.fixture(scope="module")
def balanced(tmp_path_factory):
    d = tmp_path_factory.mktemp("conventions")
    h, y, weight, pred = _store(d / "acts.zarr", [30] * C)
    m = analyze_store(d / "acts.zarr", d / "metrics.zarr", progress=False)
    return m["summary"].to_dataset().sel(split="train", layer="feat", grouping="label").isel(
        checkpoint=0), h, y, weight, pred


@pytest.mark.parametrize("q", [0, 1])
@pytest.mark.parametrize(("code", "table"), [(su_et_al, SU), (papyan_et_al, PAPYAN)])
def test_su_and_papyan_codes_by_the_table(balanced, q, code, table):
    s, h, y, weight, pred = balanced
    theirs = code(h[q], y, weight, pred[q])
    for name, metric, factor in table:
        ours = float(s[metric].isel(condition=q))
        np.testing.assert_allclose(theirs[name], factor() * ours, rtol=RTOL, err_msg=name)
    assert 0.05 < float(s["nc3"].isel(condition=q)) < 2  # the check is not of a zero


@pytest.mark.parametrize("q", [0, 1])
def test_rhubarbwu_by_the_table(balanced, q):
    s, h, y, weight, pred = balanced
    theirs = rhubarbwu(h[q], y, weight)
    for name, metric, factor in RHUBARBWU:
        np.testing.assert_allclose(theirs[name], factor() * float(s[metric].isel(condition=q)),
                                   rtol=RTOL, err_msg=name)
    # a bias-free classifier and the split's own means: agreement is 1 - nc4
    np.testing.assert_allclose(theirs["clf_ncc_agreement"], 1 - float(s["nc4"].isel(condition=q)),
                               rtol=RTOL)


def test_nc3_was_the_square_root_before(balanced):
    """The value an ``ncprobe-metrics/1`` store held is the square root of today's."""
    s, h, y, weight, _ = balanced
    m = _means(h[0], y)
    m = m - m.mean(axis=0)
    old = np.linalg.norm(weight / np.linalg.norm(weight) - m / np.linalg.norm(m))
    np.testing.assert_allclose(float(s["nc3"].isel(condition=0)), old ** 2, rtol=RTOL)


def test_unequal_classes_centre_matters(tmp_path):
    """With unequal counts, Su et al.'s NC1 (centred on mu_G as ours) is still C·nc1, while
    the mu_bar-centred NC2 of their code differs from ncprobe's, as the table says."""
    h, y, weight, pred = _store(tmp_path / "acts.zarr", [10, 20, 30, 40, 80], seed=1)
    m = analyze_store(tmp_path / "acts.zarr", tmp_path / "metrics.zarr", progress=False)
    s = m["summary"].to_dataset().sel(split="train", layer="feat", grouping="label").isel(
        checkpoint=0, condition=0)
    su = su_et_al(h[0], y, weight, pred[0])
    np.testing.assert_allclose(su["NC1"], C * float(s["nc1"]), rtol=RTOL)
    np.testing.assert_allclose(papyan_et_al(h[0], y, weight, pred[0])["NC2 norms M"],
                               float(s["equinorm"]), rtol=RTOL)
    assert abs(su["NC2 norms M"] - float(s["equinorm"])) > 1e-3
