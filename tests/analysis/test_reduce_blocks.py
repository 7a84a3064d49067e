"""How the passes are reduced over chunks: class sums of many classes, chains of partial sums
at many classes, and pass 2's plan worked out once per block."""

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from ncprobe.analyze import blocks, class_stats, within_stats
from ncprobe.analyze.kernels import passes, plain


def _features(seed=0, n=400, d=6, c=150, conditions=2, chunk=64):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    h = rng.standard_normal((conditions, n, d)) + 4 * rng.standard_normal((c, d))[y]
    feats = xr.DataArray(da.from_array(h.astype(np.float32), chunks=(1, chunk, d)),
                         dims=("condition", "sample", "feature"))
    return feats, xr.DataArray(y, dims="sample"), c


@pytest.mark.parametrize("seed", range(3))
def test_class_sums_of_many_classes_equal_their_definition(seed):
    """Many classes, some absent from a grouping and one grouping empty: sums of the rows of
    each class present."""
    rng = np.random.default_rng(seed)
    c, n = 120, 300
    groups = np.stack([rng.integers(0, c, n), rng.integers(-1, c, n), np.full(n, -1)], axis=1)
    h = (rng.standard_normal((n, 5)) * 10 + 100).astype(np.float32)
    fused, slow = passes.pass1(h, groups, c), plain.pass1(h, groups, c)
    for k in slow:
        np.testing.assert_allclose(fused[k], slow[k], rtol=1e-12, atol=1e-9, err_msg=k)


def test_chained_partial_sums_equal_the_tree(monkeypatch):
    """Partial sums larger than FOLD_BYTES are added up in chains as chunks finish: the same
    statistics as the tree reduction (counts exactly, sums to rounding) and as numpy."""
    feats, y, c = _features()
    tree = class_stats(feats, y, c).compute()
    monkeypatch.setattr(blocks, "FOLD_BYTES", 0)
    lazy = class_stats(feats, y, c)
    names = {dask.utils.key_split(k) for k in lazy["sum"].data.dask}
    assert "link" in names  # the chains are what ran
    folded = lazy.compute()
    direct = class_stats(feats.compute(), y, c)
    np.testing.assert_array_equal(folded["count"], tree["count"])
    for k in ("sum", "sumsq", "mean"):
        np.testing.assert_allclose(folded[k], tree[k], rtol=1e-12, atol=1e-12, err_msg=k)
        np.testing.assert_allclose(folded[k], direct[k], rtol=1e-12, atol=1e-12, err_msg=k)


@pytest.fixture
def plans(monkeypatch) -> list:
    """One entry per pass-2 plan worked out."""
    calls = []
    real = passes.pass2_plan

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(passes, "pass2_plan", counted)
    return calls


def test_pass2_plan_is_worked_out_once_per_block(plans):
    """Two conditions in seven chunks each: two plans, not fourteen."""
    feats, y, c = _features(c=8)
    stats = class_stats(feats, y, c).compute()
    calls = plans
    lazy = within_stats(feats, y, stats)
    assert calls == []  # lazy: nothing worked out before the computation
    lazy.compute(scheduler="sync")
    assert len(calls) == feats.sizes["condition"] == 2
    assert feats.data.numblocks[1] == 7


def test_large_plans_are_worked_out_at_once_block_after_block(monkeypatch, plans):
    """Beyond PLAN_BYTES and with statistics in memory, the plans are made when the pass is
    built, one per block, and the pass gives the same statistics, bitwise."""
    from ncprobe.analyze import stats as stats_module

    feats, y, c = _features(c=8)
    stats = class_stats(feats, y, c).compute()
    in_tasks = within_stats(feats, y, stats).compute(scheduler="sync")
    calls = plans
    calls.clear()
    monkeypatch.setattr(stats_module, "PLAN_BYTES", 0)
    lazy = within_stats(feats, y, stats)
    assert len(calls) == feats.sizes["condition"] == 2  # made now, not in the pass's tasks
    made_now = lazy.compute(scheduler="sync")
    assert len(calls) == 2
    xr.testing.assert_identical(made_now, in_tasks)
