"""The nearest of many centres to each row: a float32 product, checked against its rounding
error bound, and float64 for the rows it cannot decide.

Where only the nearest centre is wanted (pass 2's distances when D < C, the counts against
fixed centres), argmin_c ||m_c||^2 - 2 x . m_c is found from the product in float32, at
twice the speed of float64 on the same BLAS, and certified: every row whose float32 minimum is
not ahead of every other centre by more than twice the error bound is computed again in
float64, as before. So the centre found is the float64 computation's, ties to the lowest
index as scikit-learn's NearestCentroid (docs/metrics.md, "Nearest centres in float32").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: float32's unit roundoff
U32 = 2.0**-24

#: the bound is widened by this factor: it covers the rounding of the bound itself and the
#: float64 computation's own error, 2^-29 of the bound, so that a centre the float32 screen
#: leaves alone is also the one float64 finds
SAFETY = 1 + 2.0**-20

#: (D + 3) U32 above this (D above about 167,000), the bound is too loose to decide rows:
#: float64 only
MAX_RELATIVE_BOUND = 0.01


@dataclass
class CentreColumns:
    """k centres as the columns of a product with rows x, where only the nearest is taken.

    The distance that is compared is d_c = ||m_c||^2 - 2 x . m_c. Its float32 value g_c (x
    and m_c rounded to float32, m_c scaled by -2, exactly, their product, then ||m_c||^2
    added in float32) is within E = (2 gamma + 3u) ||x|| max ||m|| + 3u max ||m||^2 of it,
    gamma = (D + 3)u / (1 - (D + 3)u), u = 2^-24 (Higham, Accuracy and Stability of
    Numerical Algorithms, 3.1, for any order of summation), plus a term for float32's
    subnormal range. Any centre within 2E of the float32 minimum may be the nearest; a row
    with one such centre has it, and the others are computed in float64.
    """

    t64: np.ndarray  # (D, k) the centres m_c as columns
    sq: np.ndarray  # (k,) ||m_c||^2
    t32: np.ndarray | None  # (D, k) -2 m_c in float32, None: float64 only
    sq32: np.ndarray | None
    norm_max: float  # max_c ||m_c||
    sq_max: float

    @classmethod
    def of(cls, t64: np.ndarray, sq: np.ndarray | None = None) -> CentreColumns:
        """From the centres as columns (D, k), finite, and their squared norms."""
        t64 = np.asarray(t64, np.float64)
        sq = (t64 * t64).sum(axis=0) if sq is None else sq
        d = t64.shape[0]
        screened = (d + 3) * U32 < MAX_RELATIVE_BOUND and sq.size > 1
        t32 = None
        with _beyond_float32():
            if screened:  # rounded, then scaled: no float64 temporary of the columns' size
                t32 = t64.astype(np.float32)
                t32 *= -2.0
            return cls(t64=t64, sq=sq, t32=t32,
                       sq32=sq.astype(np.float32) if screened else None,
                       norm_max=float(np.sqrt(sq.max(initial=0.0))),
                       sq_max=float(sq.max(initial=0.0)))

    def product(self, x: np.ndarray) -> np.ndarray:
        """-2 x . m_c (n, k) of rows x (n, D): in float32 when screened, else float64."""
        if self.t32 is not None:
            with _beyond_float32():
                return x.astype(np.float32) @ self.t32
        prod = x @ self.t64
        prod *= -2.0
        return prod

    def slack(self, x: np.ndarray) -> np.ndarray:
        """(n,) the bound E of each row of x (n, D) (the class docstring)."""
        d = x.shape[1]
        norms = np.sqrt(np.einsum("nd,nd->n", x, x))
        gamma = (d + 3) * U32 / (1 - (d + 3) * U32)
        # subnormal products and conversions: at most 2^-150 each, absolute
        tiny = 2.0**-148 * (d + np.sqrt(d) * (norms + self.norm_max))
        return SAFETY * ((2 * gamma + 3 * U32) * norms * self.norm_max + 3 * U32 * self.sq_max
                         + tiny)

    def distances(self, x: np.ndarray, prod: np.ndarray | None = None, cols=slice(None),
                  keep: bool = False) -> np.ndarray:
        """(n, k) ||m_c||^2 - 2 x . m_c of the centres in ``cols``, as the screen compares
        them: float32 when screened, else float64.

        Parameters
        ----------
        x : (n, D) float64 rows, on the same origin as the centres.
        prod : :meth:`product` of x (every column), or None to compute it here.
        cols : slice of the columns to choose among.
        keep : leave ``prod`` as it is (another choice reads the same columns); otherwise
            it is overwritten.
        """
        prod = self.product(x) if prod is None else prod
        d = prod[:, cols].copy() if keep else prod[:, cols]
        with _beyond_float32():
            d += self.sq[cols] if self.t32 is None else self.sq32[cols]
        return d

    def screen(self, d: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nearest (n,), the rows it does not decide) from :meth:`distances` ``d`` of x:
        rows where more than one centre lies within 2E of the smallest float32 distance
        (ties, near-ties), or none does (values that are not finite)."""
        near = d.argmin(axis=1)
        if self.t32 is None:
            return near, np.zeros(0, np.intp)
        low = np.take_along_axis(d, near[:, None], axis=1)[:, 0].astype(np.float64)
        # rounded up to float32: every centre within 2E of the minimum stays in
        with _beyond_float32():
            bound = np.nextafter((low + 2 * self.slack(x)).astype(np.float32),
                                 np.float32(np.inf))
        return near, np.flatnonzero(np.count_nonzero(d <= bound[:, None], axis=1) != 1)

    def nearest(self, x: np.ndarray, prod: np.ndarray | None = None, cols=slice(None),
                keep: bool = False) -> np.ndarray:
        """(n,) the index among ``cols`` of each row's nearest centre (arguments as
        :meth:`distances`): screened in float32, and in float64 for the rows the screen
        leaves open, as the centres always were."""
        near, open_ = self.screen(self.distances(x, prod, cols, keep), x)
        if open_.size:
            near[open_] = nearest_of_dots(x[open_] @ self.t64[:, cols], self.sq[cols])
        return near


def nearest_of_dots(dots: np.ndarray, sq: np.ndarray, keep: bool = False) -> np.ndarray:
    """(n,) argmin_c ||m_c||^2 - 2 dots[:, c] from the float64 dots x . m_c (n, k) and
    ``sq`` (k,) = ||m_c||^2, ties to the lowest index; in place unless ``keep``."""
    d = dots * -2.0 if keep else dots
    if not keep:
        d *= -2.0
    d += sq
    return d.argmin(axis=1)


def _beyond_float32():
    """Values beyond float32's range become inf or NaN, silently: the screen leaves their
    rows to float64, which is where they are computed."""
    return np.errstate(over="ignore", invalid="ignore")
