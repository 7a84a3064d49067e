"""Reading a metrics store (``ncprobe-metrics/2``): what the findings and the figures need.

Open a store with :func:`ncprobe.data.store.open_metrics`; these functions read numbers and
provenance from the tree it returns. :mod:`ncprobe.analyze.findings` and
:mod:`ncprobe.plots` read stores only through this module.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from ncprobe.data import schema


def training_mode(tree: xr.DataTree) -> str | None:
    """``standard``, ``pgd`` or ``trades`` from the provenance the store carries, if any."""
    model = (tree.attrs.get("source_attrs") or {}).get("model") or {}
    return (model.get("training") or {}).get("mode")


def conditions_by_kind(tree: xr.DataTree) -> dict:
    """Names of the first untargeted attack, targeted attack and noise condition."""
    out = {}
    for c in (tree.attrs.get("source_attrs") or {}).get("conditions") or []:
        kind = c.get("attack")
        if kind in ("pgd", "fgsm"):
            out.setdefault("targeted" if c.get("targeted") else "attack", c["name"])
        elif kind == "noise":
            out.setdefault("noise", c["name"])
    return out


def feature_layer(tree: xr.DataTree, fallback: bool = True) -> str | None:
    """The layer feeding the classifier; when it was not extracted, the deepest layer before
    the logits for display (``fallback``), or None where a number must be that layer's."""
    layer = tree.attrs.get("classifier_layer")
    layers = [str(v) for v in tree[schema.SUMMARY_GROUP][schema.LAYER].values]
    if layer in layers:
        return layer
    if not fallback:
        return None
    return layers[-2] if len(layers) > 1 else layers[-1]


def value(tree, metric, *, split, layer, condition, grouping="label", checkpoint=-1) -> float:
    """One scalar of ``/summary`` (the last checkpoint by default); NaN when absent (a
    metric of a newer ncprobe than the store's)."""
    s = tree[schema.SUMMARY_GROUP].to_dataset()
    if metric not in s or split not in s[schema.SPLIT].values \
            or condition not in s[schema.CONDITION].values:
        return np.nan
    v = s[metric].sel({schema.SPLIT: split, schema.LAYER: layer, schema.CONDITION: condition}).isel(
        {schema.CHECKPOINT: checkpoint})
    if schema.GROUPING in v.dims:
        v = v.sel({schema.GROUPING: grouping})
    return float(v)


def tidy_summary(summary: xr.Dataset) -> pd.DataFrame:
    """Long-form table of ``/summary``: one row per (split, layer, checkpoint, condition,
    grouping, metric); metrics that do not depend on the grouping have grouping ``""``."""
    frames = []
    for name, var in summary.data_vars.items():
        df = var.to_dataframe(name=name).reset_index()
        if schema.GROUPING not in var.dims:
            df[schema.GROUPING] = ""
        df = df.rename(columns={name: "value"})
        df["metric"] = name
        frames.append(df[[schema.SPLIT, schema.LAYER, schema.DEPTH, schema.CHECKPOINT,
                          schema.CONDITION, schema.GROUPING, "metric", "value"]])
    columns = [schema.SPLIT, schema.LAYER, schema.DEPTH, schema.CHECKPOINT, schema.CONDITION,
               schema.GROUPING, "metric", "value"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)




def separation(tree: xr.DataTree) -> xr.Dataset | None:
    """The law-of-data-separation fit (split, checkpoint, condition): ``rho``, ``a``, ``r2``,
    ``n_layers``; None for a store written before it existed."""
    if schema.SEPARATION_GROUP not in tree.children:
        return None
    return tree[schema.SEPARATION_GROUP].to_dataset()


def transition_pairs(tree: xr.DataTree, *, split, layer, condition,
                     checkpoint=-1) -> pd.DataFrame:
    """The (true label, nearest clean centre) pairs that occur and their counts, from either
    form of ``/transitions`` (dense (label, vertex) or sparse coordinates, docs/metrics.md)."""
    t = tree[schema.TRANSITIONS_GROUP].to_dataset()
    block = t.sel({schema.SPLIT: split, schema.LAYER: layer, schema.CONDITION: condition}).isel(
        {schema.CHECKPOINT: checkpoint})
    if "entry" in block.dims:
        keep = block["count"].values > 0
        return pd.DataFrame({"label": block["label"].values[keep],
                             "vertex": block["vertex"].values[keep],
                             "count": block["count"].values[keep]})
    counts = block["count"].values
    label, vertex = np.nonzero(counts)
    return pd.DataFrame({"label": label, "vertex": vertex, "count": counts[label, vertex]})


def top_leaps(pairs: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The ``k`` most frequent off-diagonal transitions (label != vertex), with ``share``: the
    fraction of that label's samples that land on that vertex."""
    per_label = pairs.groupby("label")["count"].sum()
    off = pairs[pairs.label != pairs.vertex].nlargest(k, "count").copy()
    off["share"] = off["count"].to_numpy() / per_label.loc[off.label].to_numpy()
    return off.reset_index(drop=True)
