"""The law of data separation: the fit against numpy's, and a known decay recovered."""

import numpy as np
import pytest
import xarray as xr

from ncprobe.analyze import separation_law
from ncprobe.analyze.run import analyze_store
from ncprobe.data.store.from_arrays import write_activation_store
from tests import reference


def test_fit_matches_polyfit_and_skips_unusable_layers():
    rng = np.random.default_rng(0)
    depth = np.array([0, 1, 2, 4, 5, 7])
    d = 3.0 * 0.6 ** depth * np.exp(0.2 * rng.standard_normal((2, 3, depth.size)))
    d[1, 2, 3] = np.nan  # a layer without a value is left out, not the whole fit
    d[0, 1, 0] = 0.0     # nor one whose D is 0 (log undefined)
    fuzz = xr.DataArray(d, dims=("split", "condition", "layer"), coords={
        "depth": ("layer", depth)})
    law = separation_law(fuzz)
    for i in range(2):
        for j in range(3):
            use = np.isfinite(d[i, j]) & (d[i, j] > 0)
            rho, a, r2 = reference.separation_fit(depth[use], d[i, j][use])
            got = law.isel(split=i, condition=j)
            np.testing.assert_allclose([float(got.rho), float(got.a), float(got.r2)],
                                       [rho, a, r2], rtol=1e-10)
            assert int(got.n_layers) == use.sum()


def test_fewer_than_three_layers_give_no_fit():
    law = separation_law(xr.DataArray([1.0, 0.5, np.nan], dims="layer"))
    assert np.isnan(float(law.rho)) and np.isnan(float(law.r2))
    assert int(law.n_layers) == 2


def decaying_store(path, rho=0.25, n_layers=5):
    """Features mu_y + sqrt(rho)^l e_i with class-centred noise e: the class means are the same
    in every layer and the within-class scatter shrinks by rho per layer, so D_l = rho^l D_0
    exactly. Integers times powers of two: every value is exact in float32."""
    c, d, n = 4, 8, 6
    rng = np.random.default_rng(1)
    mu = rng.integers(-4, 5, (c, d)).astype(np.float64)
    half = rng.integers(-3, 4, (c, n // 2, d)).astype(np.float64)
    e = np.concatenate([half, -half], axis=1).reshape(c * n, d)  # each class sums to 0
    y = np.repeat(np.arange(c), n)
    scale = np.sqrt(rho)
    layers = {f"layer{k}": (mu[y] + scale**k * e)[None, None] for k in range(n_layers)}
    write_activation_store(path, {"train": layers}, {"train": y}, n_classes=c)
    return path


@pytest.mark.parametrize("rho", [0.25, 0.5])
def test_a_known_geometric_decay_is_recovered_from_a_store(tmp_path, rho):
    path = decaying_store(tmp_path / f"acts{rho}.zarr", rho=rho)
    m = analyze_store(path, progress=False)
    law = m["separation"].to_dataset().sel(split="train", condition="clean").isel(checkpoint=0)
    assert float(law.rho) == pytest.approx(rho, abs=1e-6)
    assert float(law.r2) == pytest.approx(1.0, abs=1e-6)
    assert int(law.n_layers) == 5
    d = m["summary"]["fuzziness"].sel(split="train", condition="clean").isel(checkpoint=0)
    assert float(np.exp(law.a)) == pytest.approx(float(d[0]), rel=1e-6)
