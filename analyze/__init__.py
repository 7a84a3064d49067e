"""The analysis stage: collapse metrics of stored features with dask and xarray, never torch.

Every function takes DataArrays with named dims and broadcasts over the dims it does not
reduce (checkpoint, condition, split, ...); lazy in, lazy out, accumulated in float64.
:func:`layer_metrics` gives every metric of one layer in one call, and
:func:`analyze_store` runs the same functions over a whole activation store.
"""

from .metrics import clean_reference, collapse_metrics, grouping_labels, layer_metrics
from .run import AnalysisOptions, analyze_store
from .stats import AnalysisError, class_stats, nc1, ncc_predict, within_stats

__all__ = ["AnalysisError", "AnalysisOptions", "analyze_store", "class_stats",
           "clean_reference", "collapse_metrics", "grouping_labels", "layer_metrics", "nc1",
           "ncc_predict", "within_stats"]
