"""The comparison's statistics against scipy.stats, and manifests refused in one line."""

import math

import numpy as np
import pytest
import scipy.stats

from ncprobe.study import ManifestError, load_manifest
from ncprobe.study.statistics import ranks, sign_test, spearman, spearman_interval


@pytest.mark.parametrize("seed", range(6))
def test_spearman_equals_scipy_with_ties_and_nan(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 40))
    x = rng.integers(0, 6, n).astype(float)  # many ties
    y = x + rng.standard_normal(n)
    y[rng.random(n) < 0.15] = np.nan
    keep = np.isfinite(x) & np.isfinite(y)
    want = scipy.stats.spearmanr(x[keep], y[keep]).statistic
    assert spearman(x, y) == pytest.approx(want, abs=1e-12)
    np.testing.assert_array_equal(ranks(x), scipy.stats.rankdata(x))


def test_spearman_undefined_cases():
    assert math.isnan(spearman([1, 2], [3, 4]))  # fewer than three pairs
    assert math.isnan(spearman([1, 1, 1, 1], [1, 2, 3, 4]))  # a constant side


def test_bootstrap_interval_is_a_percentile_interval_of_resampled_rhos():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(25)
    y = x + rng.standard_normal(25)
    rho, low, high, n = spearman_interval(x, y)
    assert n == 25 and low < rho < high
    assert spearman_interval(x, y) == (rho, low, high, n)  # seeded: the same every run
    # the same resamples through scipy's spearmanr give the same interval
    draws = np.random.default_rng(0).integers(0, 25, size=(2000, 25))
    boot = [scipy.stats.spearmanr(x[i], y[i]).statistic for i in draws]
    np.testing.assert_allclose([low, high], np.nanpercentile(boot, [2.5, 97.5]), atol=1e-12)


@pytest.mark.parametrize("d", [[1, 2, 3, 4, 5, 6], [1, -2, 3, 0, 5, -1, 2, np.nan], [-1, -2],
                               [0.5, -0.5], list(np.random.default_rng(3).standard_normal(17))])
def test_sign_test_equals_scipy_binomtest(d):
    pos, neg, p = sign_test(d)
    arr = np.asarray(d, float)
    arr = arr[np.isfinite(arr) & (arr != 0)]
    assert (pos, neg) == (int((arr > 0).sum()), int((arr < 0).sum()))
    assert p == pytest.approx(scipy.stats.binomtest(pos, pos + neg, 0.5).pvalue, abs=1e-12)


def _write(tmp_path, text):
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


GOOD = """
[protocol]
dataset = "digits"
attacks = ["clean", "pgd:eps=0.1,steps=3"]

[[model]]
name = "a"
checkpoint = "ckpt/a.pt"

[[model]]
name = "b"
checkpoint = "ckpt/b.pt"
pair = "a"
meta = { note = "anything" }
"""


def test_manifest_paths_are_relative_to_it(tmp_path):
    m = load_manifest(_write(tmp_path, GOOD))
    assert m.model("a").checkpoint == str(tmp_path / "ckpt" / "a.pt")
    assert m.folder == tmp_path / "s.study"
    assert m.model("b").meta == {"note": "anything"}
    # metadata does not decide the stores; settings do
    assert m.model("a").signature(m.protocol) != m.model("b").signature(m.protocol)


@pytest.mark.parametrize(("change", "message"), [
    (("name = \"b\"", "name = \"a\""), "model name 'a' appears twice"),
    (("pair = \"a\"", "pair = \"z\""), "pair = 'z' names no model of the study"),
    (("checkpoint = \"ckpt/b.pt\"", "chekpoint = \"x\""), "unknown key 'chekpoint'"),
    (("dataset = \"digits\"", "dataset = 3"), "dataset is required"),
    (("[protocol]", "[protocol]\nrobust_accuracy = \"guessed\""),
     "robust_accuracy = 'guessed'; expected 'measured'"),
    (("[protocol]", "[protocol]\nrobust_accuracy = \"reported\""),
     "robust_accuracy = 'reported' but model 'a' has no reported_robust"),
    (("name = \"a\"", "name = \"a b\""), "name = 'a b'; expected letters"),
    (("pair = \"a\"", "reported_robust = 57"), "reported_robust = 57.0 is an accuracy in [0, 1]"),
    (("checkpoint = \"ckpt/a.pt\"\n", ""), "model 'a': no checkpoint"),
    (("[protocol]", "[protcol]"), "unknown key 'protcol'"),
    (("attacks = [", "attacks = [1, "), "attacks must be a list of strings"),
])
def test_bad_manifests_are_one_line(tmp_path, change, message):
    text = GOOD.replace(*change, 1)
    with pytest.raises(ManifestError) as e:
        load_manifest(_write(tmp_path, text))
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_not_toml_and_missing(tmp_path):
    with pytest.raises(ManifestError, match="is not valid TOML"):
        load_manifest(_write(tmp_path, "[protocol\n"))
    with pytest.raises(ManifestError, match="does not exist; expected a TOML file"):
        load_manifest(tmp_path / "none.toml")


def test_a_checkpoint_replaced_in_place_changes_the_signature(tmp_path):
    (tmp_path / "ckpt").mkdir()
    weights = tmp_path / "ckpt" / "a.pt"
    weights.write_bytes(b"first")
    m = load_manifest(_write(tmp_path, GOOD))
    before = m.model("a").signature(m.protocol)
    assert m.model("a").signature(m.protocol) == before
    weights.write_bytes(b"second weights")
    assert m.model("a").signature(m.protocol) != before


def test_status_names_the_process_that_holds_a_model(tmp_path):
    import os

    from ncprobe.study import state, status

    m = load_manifest(_write(tmp_path, GOOD))
    state.model_folder(m, "a").mkdir(parents=True)
    lock = state.model_lock(m, "a")
    lock.acquire()
    try:
        rows = {r.name: r for r in status(m)}
    finally:
        lock.release()
    assert rows["a"].status == "running"
    assert rows["a"].detail.startswith(f"pid {os.getpid()} on ") and ")" not in rows["a"].detail
    assert rows["b"].status == "not started"
