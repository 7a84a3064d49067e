"""The figures and the report: seaborn figures of metrics stores (:mod:`.figures`), the
self-contained report.html with the findings (:mod:`.report`) and ``nc-plot`` (:mod:`.cli`).
Never imports torch."""

from .figures import (
    alignment_angles,
    collapse_per_layer,
    long_table,
    metrics_vs_epoch,
    nc2_per_layer,
    ncc_per_layer,
    separation_per_layer,
    simplex_view,
    theme,
    transition_heatmaps,
    transition_matrix,
    transitions_across_layers,
)
from .report import key_numbers, make_figures, save_figure, write_report

__all__ = ["alignment_angles", "collapse_per_layer", "key_numbers", "long_table",
           "make_figures", "metrics_vs_epoch", "nc2_per_layer", "ncc_per_layer", "save_figure",
           "separation_per_layer", "simplex_view", "theme", "transition_heatmaps",
           "transition_matrix", "transitions_across_layers", "write_report"]
