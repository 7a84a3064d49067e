"""The analysis stage: collapse metrics of stored features with dask and xarray, never torch.

Two layers: numpy kernels by axis in :mod:`ncprobe.analyze.kernels`, and the functions here,
which take DataArrays by dim name and broadcast over the dims they do not reduce
(checkpoint, condition, split, ...); lazy in, lazy out, accumulated in float64. Every metric
is declared once in :mod:`ncprobe.analyze.registry`. :func:`layer_metrics` gives every metric
of one layer in one call, and :func:`analyze_store` runs the same functions over a whole
activation store.
"""

from .blocks import AnalysisError
from .metrics import (
    cdnv,
    collapse_metrics,
    fuzziness,
    grouping_labels,
    layer_metrics,
    nc1,
    nc2,
    nc3,
    ncc_predict,
    separation_law,
)
from .run import AnalysisOptions, analyze_store
from .stats import class_stats, clean_reference, reference_stats, within_stats

__all__ = ["AnalysisError", "AnalysisOptions", "analyze_store", "cdnv", "class_stats",
           "clean_reference", "collapse_metrics", "fuzziness", "grouping_labels",
           "layer_metrics", "nc1", "nc2", "nc3", "ncc_predict", "reference_stats",
           "separation_law", "within_stats"]
