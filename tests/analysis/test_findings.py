"""The four findings: controls, n/a instead of FAIL for numbers that cannot be computed."""

import copy

import numpy as np
import pytest

from ncprobe.analyze.findings import evaluate_findings
from ncprobe.analyze.run import analyze_store
from tests.helpers import synthetic_store


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("findings")
    out = {}
    for name, scale in (("standard", 3.0), ("pgd", 0.3)):
        path = synthetic_store(d / f"{name}.zarr", attack_scale=scale)[0]
        out[name] = analyze_store(path, progress=False)
    return out


def _with(tree, **summary):
    """A copy of a metrics tree with some /summary values replaced."""
    t = copy.deepcopy(tree)
    s = t["summary"].to_dataset()
    for name, (where, value) in summary.items():
        s[name].loc[where] = value
    t["summary"] = s
    return t


def test_every_verdict_is_computed_on_a_pair(pair):
    found = {f.key: f for f in evaluate_findings(pair)}
    assert all(f.verdict in ("PASS", "FAIL") for f in (found["F2"], found["F3"], found["F4"]))
    # synthetic stores have no noise condition: the F1 control cannot be computed
    assert found["F1"].verdict == "n/a" and "n/a: nc1_noise, noise_ratio not computable" \
        in found["F1"].detail
    assert "align_angle" in found["F3"].detail and "grouped by prediction" in found["F2"].detail


def test_nan_numbers_make_a_finding_not_applicable_not_failed(pair):
    st = _with(pair["standard"], leap_rate=({"split": "test"}, np.nan))
    found = {f.key: f for f in evaluate_findings({**pair, "standard": st})}
    assert found["F2"].verdict == "n/a" and "leap_rate" in found["F2"].detail


def test_without_the_classifiers_input_layer_every_finding_says_why(pair):
    st = copy.deepcopy(pair["standard"])
    st.attrs["classifier_layer"] = "fc_not_extracted"
    found = evaluate_findings({**pair, "standard": st})
    assert [f.key for f in found] == ["F1", "F2", "F3", "F4"]
    assert all(f.verdict == "n/a" and "layer feeding the classifier was not extracted"
               in f.detail for f in found)


def test_thresholds_are_arguments(pair):
    strict = {f.key: f.verdict for f in evaluate_findings(pair, f4_margin=10.0)}
    assert strict["F4"] == "FAIL"
