"""The study report: ``report.html`` beside ``study.zarr``, one self-contained file.

The model table (sorted by robust accuracy), each key metric against robust accuracy with
Spearman's rho and its interval in the title, the pairs' slopes, every model's per-layer NCC
accuracy on relative depth, the correlations of every metric, and the models that failed.
Readable from 5 to 60+ models: point labels up to :data:`LABELLED` models, colour by training
method and a legend beyond.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from ncprobe.data import schema
from ncprobe.plots.figures import theme
from ncprobe.plots.report import STYLE, embed_png, save_figure

log = logging.getLogger("ncprobe.study")

#: up to this many models the points carry their names
LABELLED = 15
#: below this many models the report says the intervals are wide
FEW = 10
#: (metric, split role, title): the key scatter plots; "nc" is the train split (the paper's
#: NC numbers), "acc" the accuracy split
KEY_METRICS = [("nc1", "nc", "NC1 under attack"), ("ncc_gap", "acc", "NCC gap (NCC - network)"),
               ("leap_rate", "acc", "leap rate"), ("align_angle", "nc", "alignment angle (deg)"),
               ("ncc_acc", "acc", "NCC accuracy, feature layer")]


def _roles(tree: xr.DataTree) -> tuple[str, str, str]:
    """(NC split, accuracy split, robust condition): NC numbers on the train split (the
    paper's setting) when there is one; the others as the study dataset records them."""
    splits = [str(s) for s in tree["summary"][schema.SPLIT].values]
    nc = "train" if "train" in splits else splits[0]
    return nc, str(tree.attrs["accuracy_split"]), str(tree.attrs["robust_condition"])


def _value(summary: xr.Dataset, metric: str, split: str, condition: str) -> np.ndarray:
    v = summary[metric].sel({schema.SPLIT: split, schema.CONDITION: condition})
    if schema.GROUPING in v.dims:
        v = v.sel({schema.GROUPING: "label"})
    return v.values.astype(np.float64)


def model_table(tree: xr.DataTree) -> pd.DataFrame:
    nc, acc, robust = _roles(tree)
    s = tree["summary"].to_dataset()
    table = pd.DataFrame({
        "model": [str(m) for m in s["model"].values],
        "family": s["family"].values, "training": s["training"].values,
        "source": s["source"].values, "feature dim": s["feature_dim"].values,
        "parameters": s["parameters"].values, "clean acc": s["clean_acc"].values,
        "robust acc": s["robust_acc"].values,
        f"nc1 ({nc}, {robust})": _value(s, "nc1", nc, robust),
        f"ncc_gap ({acc}, {robust})": _value(s, "ncc_gap", acc, robust),
        f"leap_rate ({acc}, {robust})": _value(s, "leap_rate", acc, robust)})
    return table.sort_values("robust acc", ascending=False, kind="stable")


def _rho_text(tree, metric, split, condition) -> str:
    c = tree["comparison"].to_dataset().sel(metric=metric, split=split, condition=condition)
    rho, lo, hi, n = (float(c[k]) for k in ("rho", "rho_low", "rho_high", "n_models"))
    if np.isnan(rho):
        return f"rho undefined, n = {n:.0f}"
    return f"rho = {rho:+.2f} [{lo:+.2f}, {hi:+.2f}], n = {n:.0f}"


def _hue(s: xr.Dataset) -> list[str]:
    return [t or "unknown" for t in s["training"].values]


#: where a point's label may go, in points from the point: tried in this order
_OFFSETS = [(4, 3, "left"), (4, -9, "left"), (-4, 3, "right"), (-4, -9, "right"),
            (0, 7, "center"), (0, -13, "center")]


def label_points(ax, xs, ys, labels) -> int:
    """Name each finite point with the first offset whose text overlaps no label placed
    before it (nor leaves the axes); a point with no free place stays unnamed. Returns how
    many were named."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed, named = [], 0
    for x, y, text in zip(xs, ys, labels, strict=True):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        for dx, dy, ha in _OFFSETS:
            t = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                            fontsize=6, ha=ha)
            box = t.get_window_extent(renderer)
            inside = (box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0
                      and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(b) for b in placed):
                placed.append(box)
                named += 1
                break
            t.remove()
    return named


def scatter_key_metrics(tree: xr.DataTree):
    """Each key metric against robust accuracy, one panel each (a 2 x 3 grid, the legend in
    the last cell); points named while their names fit without overlapping."""
    nc, acc, robust = _roles(tree)
    s = tree["summary"].to_dataset()
    x = s["robust_acc"].values.astype(np.float64)
    names = [str(m) for m in s["model"].values]
    hue = _hue(s)
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.2))
    cells = axes.ravel()
    for ax, (metric, role, title) in zip(cells, KEY_METRICS, strict=False):
        split = nc if role == "nc" else acc
        y = _value(s, metric, split, robust)
        sns.scatterplot(x=x, y=y, hue=hue, hue_order=sorted(set(hue)), ax=ax, s=30,
                        legend=False)
        ax.set_title(f"{title}\n{_rho_text(tree, metric, split, robust)}", fontsize=9)
        ax.set_xlabel("robust accuracy")
        ax.set_ylabel(f"{metric} ({split}, {robust})", fontsize=8)
        ax.margins(0.12)
    fig.tight_layout()
    if len(names) <= LABELLED:
        for ax, (metric, role, _) in zip(cells, KEY_METRICS, strict=False):
            y = _value(s, metric, nc if role == "nc" else acc, robust)
            label_points(ax, x, y, names)
    legend = cells[-1]
    legend.axis("off")
    palette = sns.color_palette(n_colors=len(set(hue)))
    for colour, name in zip(palette, sorted(set(hue)), strict=True):
        legend.scatter([], [], color=colour, label=name)
    legend.legend(title="training", loc="center", frameon=False)
    return fig


def paired_slopes(tree: xr.DataTree):
    """For each key metric, a line from each standard model to its robust counterpart."""
    nc, acc, robust = _roles(tree)
    pairs = tree["pairs"].to_dataset()
    s = tree["summary"].to_dataset()
    tests = tree["pair_tests"].to_dataset()
    fig, axes = plt.subplots(1, len(KEY_METRICS), figsize=(2.6 * len(KEY_METRICS), 3.2),
                             squeeze=False)
    for ax, (metric, role, title) in zip(axes[0], KEY_METRICS, strict=True):
        split = nc if role == "nc" else acc
        values = _value(s, metric, split, robust)
        index = {str(m): i for i, m in enumerate(s["model"].values)}
        for r, st in zip(pairs["robust"].values, pairs["standard"].values, strict=True):
            ax.plot([0, 1], [values[index[str(st)]], values[index[str(r)]]], marker="o",
                    color="0.3", alpha=0.6, lw=1)
        t = tests.sel(metric=metric, split=split, condition=robust)
        ax.set_xticks([0, 1], ["standard", "robust"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(f"{title}\n+{int(t['positive'])} / -{int(t['negative'])}, "
                     f"sign test p = {float(t['sign_p']):.2g}", fontsize=8)
        ax.set_ylabel(f"{metric} ({split}, {robust})", fontsize=7)
    fig.tight_layout()
    return fig


def ncc_curves(tree: xr.DataTree):
    """NCC accuracy per layer on relative depth, every model, clean and the robust attack."""
    _, acc, robust = _roles(tree)
    c = tree["curves"].to_dataset()
    conditions = [x for x in (schema.CLEAN, robust) if x in c[schema.CONDITION].values]
    hue = _hue(tree["summary"].to_dataset())
    palette = dict(zip(sorted(set(hue)), sns.color_palette("colorblind", len(set(hue))),
                       strict=False))
    many = c.sizes["model"] > LABELLED
    families = [f or "" for f in tree["summary"]["family"].values]
    styles = dict(zip(sorted(set(families)), ["-", "--", ":", "-."] * len(families),
                      strict=False))
    fig, axes = plt.subplots(1, len(conditions), figsize=(4.6 * len(conditions), 3.4),
                             squeeze=False, sharey=True)
    for ax, cond in zip(axes[0], conditions, strict=True):
        v = c["ncc_acc"].sel({schema.SPLIT: acc, schema.CONDITION: cond})
        for i, name in enumerate(c["model"].values):
            depth = c["rel_depth"].isel(model=i).values.astype(np.float64)
            ax.plot(depth, v.isel(model=i).values, color=palette[hue[i]],
                    linestyle=styles[families[i]],
                    alpha=0.35 if many else 0.9, lw=1 if many else 1.4, marker=None if many
                    else "o", ms=3, label=hue[i] if many else f"{name} ({hue[i]})")
        if many:  # the median of each training method, on a common depth grid
            grid = np.linspace(0, 1, 11)
            for group in sorted(set(hue)):
                rows = [np.interp(grid, c["rel_depth"].isel(model=i).values[ok],
                                  v.isel(model=i).values[ok])
                        for i in range(c.sizes["model"]) if hue[i] == group
                        for ok in [np.isfinite(v.isel(model=i).values)
                                   & np.isfinite(c["rel_depth"].isel(model=i).values)]
                        if ok.sum() >= 1]
                if rows:
                    ax.plot(grid, np.median(rows, axis=0), color=palette[group], lw=3,
                            label=f"{group} (median)")
        ax.set_title(f"NCC accuracy per layer, {acc}, {cond}", fontsize=9)
        ax.set_xlabel("relative depth (layer index / (layers - 1))")
        ax.set_ylabel("NCC accuracy")
    handles, labels = axes[0, -1].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes[0, -1].legend(unique.values(), unique.keys(), fontsize=6, loc="upper left",
                       bbox_to_anchor=(1.02, 1), title="training" if many else "model")
    fig.tight_layout()
    return fig


def figure_plan(tree: xr.DataTree) -> list[tuple]:
    """(stem, draw or None, reason) of every figure of the study report."""
    n_pairs = int(tree["pair_tests"].attrs.get("n_pairs", 0))
    return [("key_metrics", lambda: scatter_key_metrics(tree), None),
            ("paired_slopes", (lambda: paired_slopes(tree)) if n_pairs else None,
             None if n_pairs else "the manifest names no robust/standard pair (pair = ...)"),
            ("ncc_per_layer", lambda: ncc_curves(tree), None)]


def comparison_table(tree: xr.DataTree) -> pd.DataFrame:
    c = tree["comparison"].to_dataset().to_dataframe().reset_index()
    c = c.dropna(subset=["rho"])
    c["|rho|"] = c["rho"].abs()
    return c.sort_values("|rho|", ascending=False).drop(columns="|rho|")


def write_study_report(tree: xr.DataTree, out) -> Path:
    """Figures under ``out/figures`` and ``out/report.html``; returns the report's path."""
    out = Path(out)
    pngs, skipped = [], {}
    with theme():
        for stem, draw, reason in figure_plan(tree):
            if draw is None:
                skipped[stem] = reason
                continue
            pngs.append(save_figure(draw(), out / "figures", stem))
    table = model_table(tree)
    table.to_csv(out / "models.csv", index=False)
    comparison = comparison_table(tree)
    comparison.to_csv(out / "comparison.csv", index=False)
    n = table.shape[0]
    # Fisher's z: rho = 0 over n models has a 95 % interval of about 1.96 / sqrt(n - 3)
    half = min(1.0, 1.96 / np.sqrt(max(n - 3, 1)))
    few = (f"<p class='warn'>Only {n} models: the rank correlations' intervals are wide (about "
           f"&plusmn;{half:.1f} around rho = 0) and a sign test over fewer than six pairs "
           "cannot reach p &lt; 0.05.</p>" if n < FEW else "")
    failed = tree.attrs.get("failed") or {}
    missing = [m for m in tree.attrs.get("not_included", []) if m not in failed]
    failed_html = ("<ul>" + "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                                    for k, v in failed.items()) + "</ul>") if failed else \
        "<p>None.</p>"
    if missing:
        failed_html += (f"<p>Not finished yet (not in this report): "
                        f"{html.escape(', '.join(missing))}.</p>")
    skipped_html = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                           for k, v in skipped.items())
    fmt = lambda v: f"{v:.4g}"  # noqa: E731
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ncprobe study</title>
<style>
{STYLE}
.warn {{ color: #a50 }}
</style></head><body>
<h1>ncprobe study: {html.escape(Path(str(tree.attrs.get("manifest", ""))).name)}</h1>
<p>{n} models. Robust accuracy is {html.escape(str(tree.attrs.get("robust_accuracy")))}.
Metrics are read at the layer that feeds each model's classifier, at its last checkpoint;
rho is Spearman's rank correlation with robust accuracy across models, with a 95 % bootstrap
interval (docs/studies.md).</p>
{few}
<h2 id="models">Models (by robust accuracy)</h2>
{table.to_html(index=False, float_format=fmt, na_rep="n/a")}
<h2 id="figures">Figures</h2>
{''.join(embed_png(p) for p in pngs)}
{f"<h3>Figures not drawn</h3><ul>{skipped_html}</ul>" if skipped else ""}
<h2 id="failed">Failed models</h2>
{failed_html}
<h2 id="correlations">Every metric's rank correlation with robust accuracy</h2>
{comparison.to_html(index=False, float_format=fmt, na_rep="n/a")}
</body></html>
"""
    path = out / "report.html"
    path.write_text(doc)
    log.info("wrote %s", path)
    return path
