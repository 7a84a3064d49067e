"""Figures from metrics stores (seaborn on matplotlib, colour-blind palette, PNG and PDF).

Every function takes ``models``: a dict of display name -> metrics DataTree (one facet or line
per model), returns its matplotlib Figure, and writes ``<out>/<name>.png`` and ``.pdf`` when
``out`` is given.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ncprobe.analyze.findings import feature_layer  # noqa: E402
from ncprobe.analyze.output import tidy_summary  # noqa: E402
from ncprobe.data import schema as S  # noqa: E402

PALETTE = "colorblind"
sns.set_theme(style="whitegrid", palette=PALETTE, context="paper")


def save(fig, out, name):
    """Write ``name``.png (150 dpi) and ``name``.pdf under ``out``; return the PNG path."""
    if out is None:
        return None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=150, bbox_inches="tight")
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    return out / f"{name}.png"


def long_table(models: dict) -> pd.DataFrame:
    """Tidy ``/summary`` of every model at its last checkpoint, with a ``model`` column."""
    frames = []
    for name, tree in models.items():
        s = tree[S.SUMMARY_GROUP].to_dataset()
        last = s[S.CHECKPOINT].values[-1]
        df = tidy_summary(s.sel({S.CHECKPOINT: [last]}))
        df["model"] = name
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _facets(n):
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False, sharey=True)
    return fig, axes[0]


def _layer_axis(ax, layers):
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=30, ha="right")
    ax.set_xlabel("layer (input → output)")


def collapse_per_layer(models, split="train", out=None):
    """NC1 per layer (log scale), one line per condition, with the shuffled-label baseline."""
    df = long_table(models)
    fig, axes = _facets(len(models))
    for ax, name in zip(axes, models, strict=True):
        d = df[(df.model == name) & (df.split == split)]
        layers = list(dict.fromkeys(d.sort_values("depth").layer))
        nc1 = d[(d.metric == "nc1") & (d.grouping == "label")]
        for cond, g in nc1.groupby("condition", sort=False):
            g = g.set_index("layer").reindex(layers)
            ax.plot(range(len(layers)), g.value.values, marker="o", label=cond)
        base = d[(d.metric == "nc1_shuffled") & (d.condition == S.CLEAN)].set_index(
            "layer").reindex(layers)
        ax.plot(range(len(layers)), base.value.values, ls="--", color="grey",
                label="shuffled labels (no structure)")
        ax.set_yscale("log")
        ax.set_title(f"{name} ({split})")
        _layer_axis(ax, layers)
    axes[0].set_ylabel("NC1 = Tr(Σ_W Σ_B⁺)/C  (log)")
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle("Within-class collapse per layer")
    save(fig, out, "collapse_per_layer")
    return fig


def ncc_per_layer(models, split="test", out=None):
    """Nearest-clean-centre accuracy per layer per condition; network accuracy dashed."""
    df = long_table(models)
    fig, axes = _facets(len(models))
    colors = dict(zip(df.condition.unique(), sns.color_palette(PALETTE), strict=False))
    for ax, name in zip(axes, models, strict=True):
        d = df[(df.model == name) & (df.split == split)]
        layers = list(dict.fromkeys(d.sort_values("depth").layer))
        for cond, g in d[d.metric == "ncc_acc"].groupby("condition", sort=False):
            g = g.set_index("layer").reindex(layers)
            ax.plot(range(len(layers)), g.value.values, marker="o", color=colors[cond],
                    label=cond)
            net = d[(d.metric == "net_acc") & (d.condition == cond)].value.iloc[0]
            ax.axhline(net, ls="--", lw=0.8, color=colors[cond])
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name} ({split})")
        _layer_axis(ax, layers)
    axes[0].set_ylabel("NCC accuracy (clean train centres)")
    axes[-1].legend(fontsize=7, title="dashed: network", title_fontsize=7)
    fig.suptitle("Nearest-class-centre accuracy per layer")
    save(fig, out, "ncc_per_layer")
    return fig


def _row_normalised(tree, split, layer, condition):
    t = tree[S.TRANSITIONS_GROUP]["count"].sel(
        {S.SPLIT: split, S.LAYER: layer, S.CONDITION: condition}).isel({S.CHECKPOINT: -1})
    m = t.values.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return m / m.sum(axis=1, keepdims=True)


def transition_heatmaps(models, split="test", out=None):
    """Row-normalised [true label, nearest clean centre] per condition at the classifier's
    input layer, one row of panels per model."""
    conds = [str(c) for c in next(iter(models.values()))[S.SUMMARY_GROUP][S.CONDITION].values]
    fig, axes = plt.subplots(len(models), len(conds), figsize=(2.9 * len(conds),
                                                               2.7 * len(models)),
                             squeeze=False)
    for r, (name, tree) in enumerate(models.items()):
        layer = feature_layer(tree)
        for c, cond in enumerate(conds):
            ax = axes[r, c]
            sns.heatmap(_row_normalised(tree, split, layer, cond), vmin=0, vmax=1,
                        cmap="viridis", ax=ax, cbar=c == len(conds) - 1, square=True)
            ax.set_title(f"{name}: {cond}", fontsize=8)
            ax.set_xlabel("nearest clean centre")
            ax.set_ylabel("true label" if c == 0 else "")
    fig.suptitle(f"Vertex transitions ({split}, layer feeding the classifier)")
    fig.tight_layout()
    save(fig, out, "transitions")
    return fig


def transitions_across_layers(tree, condition, split="test", out=None, name="model"):
    """Small multiples of the row-normalised transition matrix for every layer."""
    layers = [str(v) for v in tree[S.SUMMARY_GROUP][S.LAYER].values]
    fig, axes = plt.subplots(1, len(layers), figsize=(2.4 * len(layers), 2.6), squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        sns.heatmap(_row_normalised(tree, split, layer, condition), vmin=0, vmax=1,
                    cmap="viridis", ax=ax, cbar=False, square=True, xticklabels=False,
                    yticklabels=False)
        ax.set_title(layer, fontsize=8)
    axes[0, 0].set_ylabel("true label")
    fig.suptitle(f"{name}: transitions under {condition} by layer ({split})")
    save(fig, out, f"transitions_layers_{name}")
    return fig


def alignment_angles(models, split="test", out=None):
    """Per-class angle between each condition's simplex and the clean one (classifier input)."""
    frames = []
    for name, tree in models.items():
        pc = tree[S.PER_CLASS_GROUP]["align_angle"].sel(
            {S.SPLIT: split, S.LAYER: feature_layer(tree)}).isel({S.CHECKPOINT: -1})
        df = pc.to_dataframe().reset_index()
        df["model"] = name
        frames.append(df[df.condition != S.CLEAN])
    df = pd.concat(frames)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    sns.barplot(df, x="model", y="align_angle", hue="condition", ax=ax, errorbar=("pi", 100))
    ax.set_ylabel("angle to clean class mean (degrees)")
    ax.set_title(f"Simplex alignment, mean over classes with range ({split})")
    save(fig, out, "alignment")
    return fig


def nc2_per_layer(models, split="train", out=None):
    """Equinorm, equiangularity and ETF distance of the clean class means per layer."""
    df = long_table(models)
    d = df[(df.split == split) & (df.grouping == "label") & (df.condition == S.CLEAN)
           & df.metric.isin(["equinorm", "equiangular", "etf_distance"])]
    g = sns.relplot(d.sort_values("depth"), x="layer", y="value", hue="model", col="metric",
                    kind="line", marker="o", facet_kws={"sharey": False}, height=3, aspect=1.1)
    g.set_xticklabels(rotation=30, ha="right")
    g.figure.suptitle(f"NC2: simplex-ETF geometry of the clean class means ({split})", y=1.04)
    save(g.figure, out, "nc2_per_layer")
    return g.figure


def metrics_vs_epoch(models, split="test", out=None):
    """NC1 (train) and NCC accuracy against training epoch at the classifier's input layer:
    one column per model, one colour per condition (the same in every panel)."""
    conds = list(dict.fromkeys(str(c) for t in models.values()
                               for c in t[S.SUMMARY_GROUP][S.CONDITION].values))
    colors = dict(zip(conds, sns.color_palette(PALETTE, len(conds)), strict=True))
    fig, axes = plt.subplots(2, len(models), figsize=(3.6 * len(models), 5.6), squeeze=False,
                             sharex=True, sharey="row")
    for c, (name, tree) in enumerate(models.items()):
        s = tree[S.SUMMARY_GROUP].to_dataset()
        layer = feature_layer(tree)
        epochs = s[S.CHECKPOINT].values
        nc1_split = "train" if "train" in s[S.SPLIT].values else split
        for cond in [str(v) for v in s[S.CONDITION].values]:
            at = {S.LAYER: layer, S.CONDITION: cond}
            nc1 = s["nc1"].sel({**at, S.SPLIT: nc1_split, S.GROUPING: "label"})
            axes[0, c].plot(epochs, nc1, marker="o", color=colors[cond], label=cond)
            axes[1, c].plot(epochs, s["ncc_acc"].sel({**at, S.SPLIT: split}), marker="o",
                            color=colors[cond], label=cond)
        axes[0, c].set_title(f"{name} ({layer})")
        axes[1, c].set_xlabel("epoch")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylabel(f"NC1 ({nc1_split}, log)")
    axes[1, 0].set_ylabel(f"NCC accuracy ({split})")
    axes[1, -1].legend(fontsize=7)
    fig.suptitle("Collapse and NCC accuracy during training (classifier input layer)")
    fig.tight_layout()
    save(fig, out, "metrics_vs_epoch")
    return fig


def simplex_view(tree, acts, *, split="test", layer=None, condition=None, classes=(0, 1, 2),
                 n_points=80, n_arrows=15, out=None, name="model", seed=0):
    """One face of the simplex: three clean class means, their clean and attacked samples.

    The plane is the one through the three clean class means of ``split`` (a triangle for an
    ETF), so a sample that collapses sits on its vertex and an attack's leap shows as a move
    toward another vertex; arrows join a few clean samples to their attacked versions.
    """
    from matplotlib.lines import Line2D

    layer = layer or feature_layer(tree)
    f = acts[f"{split}/{S.LAYERS_GROUP}/{layer}"][S.FEATURES].isel({S.CHECKPOINT: -1})
    conds = [str(c) for c in f[S.CONDITION].values]
    condition = condition or next((c for c in conds if c != S.CLEAN), conds[0])
    y = f[S.LABEL].values
    means = tree[f"{S.METRIC_LAYERS_GROUP}/{layer}"]["means"].sel(
        {S.SPLIT: split, S.CONDITION: S.CLEAN, S.GROUPING: "label"}).isel(
        {S.CHECKPOINT: -1}).values
    classes = [c for c in classes if c < means.shape[0] and np.isfinite(means[c]).all()]
    tri = means[classes]
    origin = tri.mean(0)
    basis, _ = np.linalg.qr((tri[1:] - tri[0]).T)  # orthonormal basis of the plane

    def proj(a):
        return (a - origin) @ basis[:, :2]

    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n_points] for c in classes])
    clean = f.sel({S.CONDITION: S.CLEAN}).values[pick].astype(np.float64)
    attacked = f.sel({S.CONDITION: condition}).values[pick].astype(np.float64)
    pal = sns.color_palette(PALETTE, n_colors=len(classes))
    col = [pal[classes.index(c)] for c in y[pick]]
    fig, ax = plt.subplots(figsize=(5.2, 5))
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
    save(fig, out, f"simplex_{name}")
    return fig
