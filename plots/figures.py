"""Figures from metrics stores: functions that draw, with no side effects at import.

Each function takes ``models``, one metrics DataTree or a dict of display name -> DataTree
(one facet, line or bar per model), and either draws on the ``ax`` it is given (one model)
and returns that Axes, or creates and returns a Figure (a grid, or one facet per model).
Nothing here sets a backend, a theme or saves a file: :mod:`ncprobe.plots.report` and the
``nc-plot`` CLI do, inside :func:`theme`, so a notebook's own plots keep their settings.
"""

from __future__ import annotations

import contextlib

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from ncprobe.analyze.metrics_reader import (
    feature_layer,
    separation,
    tidy_summary,
    top_leaps,
    training_mode,
    transition_pairs,
)
from ncprobe.analyze.registry import METRICS
from ncprobe.data import schema
from ncprobe.data.errors import NcprobeError

PALETTE = "colorblind"


@contextlib.contextmanager
def theme():
    """The look of ncprobe's report (seaborn whitegrid, paper context, colour-blind palette),
    set for the ``with`` block only: matplotlib's global rcParams are restored after it."""
    rc = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper"),
          "axes.prop_cycle": mpl.cycler(color=sns.color_palette(PALETTE))}
    with mpl.rc_context(rc):
        yield


def as_models(models) -> dict:
    """``{name: tree}`` from one metrics DataTree (named by its training mode) or a dict."""
    if isinstance(models, xr.DataTree):
        return {training_mode(models) or "model": models}
    if isinstance(models, dict) and models and all(isinstance(t, xr.DataTree)
                                                   for t in models.values()):
        return models
    raise TypeError(f"models must be a metrics DataTree or a non-empty dict of name -> "
                    f"DataTree; got {type(models).__name__}")


def _panels(models, ax, draw, *, ylabel, title, legend_title=None):
    """Draw ``draw(ax, name, tree)`` on ``ax`` (one model) or one facet per model."""
    models = as_models(models)
    if ax is not None:
        if len(models) != 1:
            raise NcprobeError(f"`ax` takes one model, got {len(models)}: pass one metrics tree, "
                             "or no ax for one panel per model")
        draw(ax, *next(iter(models.items())))
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7, title=legend_title, title_fontsize=7)
        return ax
    n = len(models)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    for a, (name, tree) in zip(axes[0], models.items(), strict=True):
        draw(a, name, tree)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, -1].legend(fontsize=7, loc="best", title=legend_title, title_fontsize=7)
    fig.suptitle(title)
    return fig


def long_table(models) -> pd.DataFrame:
    """Tidy ``/summary`` of every model at its last checkpoint, with a ``model`` column."""
    frames = []
    for name, tree in as_models(models).items():
        s = tree[schema.SUMMARY_GROUP].to_dataset()
        last = s[schema.CHECKPOINT].values[-1]
        df = tidy_summary(s.sel({schema.CHECKPOINT: [last]}))
        df["model"] = name
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _layer_axis(ax, layers):
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=30, ha="right")
    ax.set_xlabel("layer (input → output)")


def _model_rows(df, name, split):
    """One model's rows of a :func:`long_table` for ``split``, and its layers in depth order."""
    d = df[(df.model == name) & (df.split == split)]
    return d, list(dict.fromkeys(d.sort_values("depth").layer))


def collapse_per_layer(models, split="train", ax=None):
    """NC1 per layer (log scale), one line per condition, with the shuffled-label baseline."""
    models = as_models(models)
    df = long_table(models)

    def draw(ax, name, tree):
        d, layers = _model_rows(df, name, split)
        nc1 = d[(d.metric == "nc1") & (d.grouping == "label")]
        for cond, g in nc1.groupby("condition", sort=False):
            g = g.set_index("layer").reindex(layers)
            ax.plot(range(len(layers)), g.value.values, marker="o", label=cond)
        base = d[(d.metric == "nc1_shuffled") & (d.condition == schema.CLEAN)].set_index(
            "layer").reindex(layers)
        ax.plot(range(len(layers)), base.value.values, ls="--", color="grey",
                label="shuffled labels (no structure)")
        ax.set_yscale("log")
        ax.set_title(f"{name} ({split})")
        _layer_axis(ax, layers)

    return _panels(models, ax, draw, ylabel=f"{METRICS['nc1'].axis_label}  (log)",
                   title="Within-class collapse per layer")


def ncc_per_layer(models, split="test", ax=None):
    """Nearest-clean-centre accuracy per layer per condition; network accuracy dashed."""
    models = as_models(models)
    df = long_table(models)
    conds = df.condition.unique()
    colors = dict(zip(conds, sns.color_palette(PALETTE, len(conds)), strict=True))

    def draw(ax, name, tree):
        d, layers = _model_rows(df, name, split)
        for cond, g in d[d.metric == "ncc_acc"].groupby("condition", sort=False):
            g = g.set_index("layer").reindex(layers)
            ax.plot(range(len(layers)), g.value.values, marker="o", color=colors[cond],
                    label=cond)
            net = d[(d.metric == "net_acc") & (d.condition == cond)].value
            if len(net) and np.isfinite(net.iloc[0]):  # no outputs stored: no network line
                ax.axhline(net.iloc[0], ls="--", lw=0.8, color=colors[cond])
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name} ({split})")
        _layer_axis(ax, layers)

    return _panels(models, ax, draw,
                   ylabel=f"{METRICS['ncc_acc'].axis_label} (clean train centres)",
                   title="Nearest-class-centre accuracy per layer",
                   legend_title="dashed: network")


#: up to this many classes a transition matrix is drawn as a heatmap; beyond, its most
#: frequent off-diagonal leaps as bars (a 1,000 x 1,000 heatmap has no readable cell)
HEATMAP_MAX_CLASSES = 40


def _row_normalised(tree, split, layer, condition, n_classes):
    pairs = transition_pairs(tree, split=split, layer=layer, condition=condition)
    m = np.zeros((n_classes, n_classes))
    np.add.at(m, (pairs.label.to_numpy(), pairs.vertex.to_numpy()), pairs["count"].to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        return m / m.sum(axis=1, keepdims=True)


def _n_classes(tree) -> int:
    return int(tree[schema.PER_CLASS_GROUP].sizes[schema.CLASS])


def _heatmap(ax, matrix, cbar, ticks):
    """A (C, C) matrix in [0, 1] as cells, row 0 at the top, every k-th class named (k such
    that at most 10 are), NaN cells blank. Drawn with pcolormesh directly: seaborn's heatmap
    draws the whole figure once per call to check its labels (half of the report's time)."""
    c = matrix.shape[0]
    mesh = ax.pcolormesh(np.ma.masked_invalid(matrix), vmin=0, vmax=1, cmap="viridis",
                         rasterized=True)  # C^2 cells: an image in the PDF, not C^2 patches
    ax.set(xlim=(0, c), ylim=(c, 0), aspect="equal")
    for side in ax.spines.values():
        side.set_visible(False)
    if cbar:
        ax.figure.colorbar(mesh, ax=ax).outline.set_linewidth(0)
    where = np.arange(0, c, max(1, -(-c // 10))) if ticks else []
    ax.set_xticks(np.add(where, 0.5), [str(i) for i in where])
    ax.set_yticks(np.add(where, 0.5), [str(i) for i in where])
    ax.tick_params(length=0)


def transition_matrix(tree, condition, split="test", layer=None, ax=None, cbar=True,
                      ticks=True, top=10):
    """Row-normalised [true label, nearest clean centre] of one condition and layer (default:
    the layer feeding the classifier) at the last checkpoint; beyond
    :data:`HEATMAP_MAX_CLASSES` classes, the ``top`` most frequent leaps (label -> vertex)
    as bars of the share of that label's samples. Returns the Axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(3.2, 2.9))
    layer = layer or feature_layer(tree)
    c = _n_classes(tree)
    if c > HEATMAP_MAX_CLASSES:
        leaps = top_leaps(transition_pairs(tree, split=split, layer=layer,
                                           condition=condition), top)
        names = [f"{a} → {b}" for a, b in zip(leaps.label, leaps.vertex, strict=True)]
        ax.barh(range(len(leaps)), leaps.share.to_numpy(), color="0.35")
        if leaps.empty:
            ax.text(0.5, 0.5, "no sample leaps to another vertex", ha="center",
                    va="center", transform=ax.transAxes, fontsize=7)
        ax.set_yticks(range(len(leaps)))
        ax.set_yticklabels(names if ticks else [""] * len(names), fontsize=6)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the label's samples", fontsize=7)
        ax.set_title(f"{condition} ({layer}): top {len(leaps)} of {c} classes' leaps",
                     fontsize=8)
        return ax
    _heatmap(ax, _row_normalised(tree, split, layer, condition, c), cbar, ticks)
    ax.set_title(f"{condition} ({layer})", fontsize=8)
    return ax


def transition_heatmaps(models, split="test"):
    """Transition matrices per condition at the classifier's input layer, one row of panels
    per model; returns the Figure."""
    models = as_models(models)
    first = next(iter(models.values()))
    conds = [str(c) for c in first[schema.SUMMARY_GROUP][schema.CONDITION].values]
    fig, axes = plt.subplots(len(models), len(conds), figsize=(2.9 * len(conds),
                                                               2.7 * len(models)),
                             squeeze=False)
    for r, (name, tree) in enumerate(models.items()):
        for c, cond in enumerate(conds):
            ax = transition_matrix(tree, cond, split, ax=axes[r, c], cbar=c == len(conds) - 1)
            ax.set_title(f"{name}: {cond}", fontsize=8)
            if _n_classes(tree) <= HEATMAP_MAX_CLASSES:
                ax.set_xlabel("nearest clean centre")
                ax.set_ylabel("true label" if c == 0 else "")
    fig.suptitle(f"Vertex transitions ({split}, layer feeding the classifier)")
    fig.tight_layout()
    return fig


def transitions_across_layers(tree, condition, split="test", name="model"):
    """Small multiples of the transition matrix for every layer; returns the Figure."""
    layers = [str(v) for v in tree[schema.SUMMARY_GROUP][schema.LAYER].values]
    fig, axes = plt.subplots(1, len(layers), figsize=(2.4 * len(layers), 2.6), squeeze=False)
    bars = _n_classes(tree) > HEATMAP_MAX_CLASSES  # bars keep their leap names
    for ax, layer in zip(axes[0], layers, strict=True):
        transition_matrix(tree, condition, split, layer, ax=ax, cbar=False, ticks=bars)
        ax.set_title(layer, fontsize=8)
    if not bars:
        axes[0, 0].set_ylabel("true label")
    fig.suptitle(f"{name}: transitions under {condition} by layer ({split})")
    return fig


def alignment_angles(models, split="test", ax=None):
    """Per-class angle between each condition's simplex and the clean one (classifier input),
    one bar per model and condition; returns the Axes."""
    frames = []
    for name, tree in as_models(models).items():
        pc = tree[schema.PER_CLASS_GROUP]["align_angle"].sel(
            {schema.SPLIT: split, schema.LAYER: feature_layer(tree)}).isel({schema.CHECKPOINT: -1})
        df = pc.to_dataframe().reset_index()
        df["model"] = name
        frames.append(df[df.condition != schema.CLEAN])
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.4))
    sns.barplot(pd.concat(frames, ignore_index=True), x="model", y="align_angle",
                hue="condition", ax=ax, errorbar=("pi", 100))
    ax.set_ylabel(METRICS["class_align_angle"].axis_label + " to clean")
    ax.set_title(f"Simplex alignment, mean over classes with range ({split})")
    return ax


def nc2_per_layer(models, split="train"):
    """Equinorm, equiangularity and ETF distance of the clean class means per layer; returns
    the Figure of seaborn's grid."""
    df = long_table(models)
    d = df[(df.split == split) & (df.grouping == "label") & (df.condition == schema.CLEAN)
           & df.metric.isin(["equinorm", "equiangular", "etf_distance"])]
    d = d.assign(metric=d.metric.map(lambda k: METRICS[k].axis_label))
    g = sns.relplot(d.sort_values("depth"), x="layer", y="value", hue="model", col="metric",
                    kind="line", marker="o", facet_kws={"sharey": False}, height=3, aspect=1.1)
    g.set_titles("{col_name}")
    g.set_xticklabels(rotation=30, ha="right")
    g.figure.suptitle(f"NC2: simplex-ETF geometry of the clean class means ({split})", y=1.04)
    return g.figure


def metrics_vs_epoch(models, split="test"):
    """NC1 (train) and NCC accuracy against training epoch at the classifier's input layer:
    one column per model, one colour per condition (the same in every panel); returns the
    Figure."""
    models = as_models(models)
    conds = list(dict.fromkeys(str(c) for t in models.values()
                               for c in t[schema.SUMMARY_GROUP][schema.CONDITION].values))
    colors = dict(zip(conds, sns.color_palette(PALETTE, len(conds)), strict=True))
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 5.6), squeeze=False,
                             sharex=True, sharey="row")
    for c, (name, tree) in enumerate(models.items()):
        s = tree[schema.SUMMARY_GROUP].to_dataset()
        layer = feature_layer(tree)
        epochs = s[schema.CHECKPOINT].values
        nc1_split = "train" if "train" in s[schema.SPLIT].values else split
        for cond in [str(v) for v in s[schema.CONDITION].values]:
            at = {schema.LAYER: layer, schema.CONDITION: cond}
            nc1 = s["nc1"].sel({**at, schema.SPLIT: nc1_split, schema.GROUPING: "label"})
            axes[0, c].plot(epochs, nc1, marker="o", color=colors[cond], label=cond)
            axes[1, c].plot(epochs, s["ncc_acc"].sel({**at, schema.SPLIT: split}), marker="o",
                            color=colors[cond], label=cond)
        axes[0, c].set_title(f"{name} ({layer})")
        axes[1, c].set_xlabel("epoch")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylabel(f"NC1 ({nc1_split}, log)")
    axes[1, 0].set_ylabel(f"NCC accuracy ({split})")
    axes[1, -1].legend(fontsize=7)
    fig.suptitle("Collapse and NCC accuracy during training (classifier input layer)")
    fig.tight_layout()
    return fig


def separation_per_layer(models, split="train"):
    """The law of data separation: log D_l against depth with its fitted line, one row per
    model and one panel per condition, clean and attacked side by side; returns the Figure.

    D_l = Tr(SS_W SS_B^+) of each layer (``fuzziness``) at the last checkpoint; the dashed
    line is exp(a + l log rho) from ``/separation`` (He and Su 2023, docs/metrics.md).
    """
    models = as_models(models)
    conds = list(dict.fromkeys(str(c) for t in models.values()
                               for c in t[schema.SUMMARY_GROUP][schema.CONDITION].values))
    fig, axes = plt.subplots(len(models), len(conds), figsize=(3.1 * len(conds),
                                                               2.8 * len(models)),
                             squeeze=False, sharey=True)
    for r, (name, tree) in enumerate(models.items()):
        s = tree[schema.SUMMARY_GROUP].to_dataset()
        law = separation(tree)
        d = s["fuzziness"].sel({schema.SPLIT: split}).isel({schema.CHECKPOINT: -1})
        depth = d[schema.DEPTH].values
        layers = [str(v) for v in d[schema.LAYER].values]
        for c, cond in enumerate(conds):
            ax = axes[r, c]
            if cond in d[schema.CONDITION].values:
                ax.plot(depth, d.sel({schema.CONDITION: cond}).values, "o", label="D_l")
            fit = None if law is None else law.sel({schema.SPLIT: split}).isel(
                {schema.CHECKPOINT: -1})
            if fit is not None and cond in fit[schema.CONDITION].values:
                f = fit.sel({schema.CONDITION: cond})
                rho, a, r2 = float(f["rho"]), float(f["a"]), float(f["r2"])
                if np.isfinite(rho):
                    ax.plot(depth, np.exp(a + depth * np.log(rho)), "--", color="0.3",
                            label=f"ρ = {rho:.3g}, R² = {r2:.3f}")
            ax.set_yscale("log")
            ax.set_xticks(depth)
            ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=7)
            ax.set_title(f"{name}: {cond}", fontsize=8)
            ax.legend(fontsize=7)
        axes[r, 0].set_ylabel(f"{METRICS['fuzziness'].axis_label} (log)", fontsize=8)
    fig.suptitle(f"Law of data separation: log D_l = a + l log ρ ({split})")
    fig.tight_layout()
    return fig


def simplex_view(tree, acts, *, split="test", layer=None, condition=None, classes=(0, 1, 2),
                 n_points=80, n_arrows=15, name="model", seed=0, ax=None):
    """One face of the simplex: three clean class means, their clean and attacked samples.

    The plane is the one through the three clean class means of ``split`` (a triangle for an
    ETF), so a sample that collapses sits on its vertex and an attack's leap shows as a move
    toward another vertex; arrows join a few clean samples to their attacked versions.
    ``acts`` is the activation store the metrics were computed from. Returns the Axes.
    """
    from matplotlib.lines import Line2D

    layer = layer or feature_layer(tree)
    f = acts[schema.features_path(split, layer)][schema.FEATURES].isel(
        {schema.CHECKPOINT: -1})
    conds = [str(c) for c in f[schema.CONDITION].values]
    condition = condition or next((c for c in conds if c != schema.CLEAN), conds[0])
    y = f[schema.LABEL].values
    means = tree[f"{schema.METRIC_LAYERS_GROUP}/{layer}"]["means"].sel(
        {schema.SPLIT: split, schema.CONDITION: schema.CLEAN, schema.GROUPING: "label"}).isel(
        {schema.CHECKPOINT: -1}).values
    classes = [c for c in classes if c < means.shape[0] and np.isfinite(means[c]).all()]
    tri = means[classes]
    origin = tri.mean(0)
    basis, _ = np.linalg.qr((tri[1:] - tri[0]).T)  # orthonormal basis of the plane

    def proj(a):
        return (a - origin) @ basis[:, :2]

    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_points] for c in classes])
    clean = f.sel({schema.CONDITION: schema.CLEAN}).values[pick].astype(np.float64)
    attacked = f.sel({schema.CONDITION: condition}).values[pick].astype(np.float64)
    pal = sns.color_palette(PALETTE, n_colors=len(classes))
    col = [pal[classes.index(c)] for c in y[pick]]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 5))
    pc, pa, pm = proj(clean), proj(attacked), proj(tri)
    ax.scatter(pc[:, 0], pc[:, 1], c=col, s=10, alpha=0.5)
    ax.scatter(pa[:, 0], pa[:, 1], c=col, s=14, marker="x", alpha=0.7)
    for i in rng.choice(len(pick), min(n_arrows, len(pick)), replace=False):
        ax.annotate("", xy=pa[i], xytext=pc[i],
                    arrowprops={"arrowstyle": "->", "lw": 0.6, "color": "0.2"})
    closed = np.vstack([pm, pm[:1]])
    ax.plot(closed[:, 0], closed[:, 1], color="0.4", lw=0.8, ls=":")
    ax.scatter(pm[:, 0], pm[:, 1], c=pal, s=220, marker="*", edgecolor="black", zorder=5)
    for c, p in zip(classes, pm, strict=True):
        ax.annotate(f"class {c}", p, textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax.legend(handles=[Line2D([], [], ls="", marker="o", color="0.5", label="clean"),
                       Line2D([], [], ls="", marker="x", color="0.5", label=condition),
                       Line2D([], [], ls="", marker="*", color="0.5", markersize=12,
                              markeredgecolor="black", label="clean class mean")], fontsize=7)
    ax.set_xlabel("plane of the three clean class means, axis 1")
    ax.set_ylabel("axis 2")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"{name}: {layer}, {split}: clean (o) vs {condition} (x)", fontsize=9)
    return ax
