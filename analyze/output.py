"""The metrics store ``ncprobe-metrics/1``: assemble per-block results, write zarr and CSV.

Written to a temporary directory beside the target and moved into place, so an interrupted
run never leaves a store that a reader takes as complete.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from ncprobe.data import fs
from ncprobe.data import schema as S
from ncprobe.data.locking import process_alive
from ncprobe.data.store import StoreError
from ncprobe.data.store_writer import consolidate

from .collapse import REPORTED_GROUPINGS


def _versions():
    out = {}
    for pkg in ("ncprobe", "numpy", "xarray", "zarr", "dask"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def assemble(results, *, splits, layers, depth, checkpoints, conditions, n_classes, attrs):
    """Build the metrics DataTree from ``{(split, layer, k, q): block_metrics(...)}``."""
    shape = (len(splits), len(layers), len(checkpoints), len(conditions))
    dims = (S.SPLIT, S.LAYER, S.CHECKPOINT, S.CONDITION)
    coords = {S.SPLIT: np.array(splits, dtype=object), S.LAYER: np.array(layers, dtype=object),
              S.DEPTH: (S.LAYER, np.array([depth[la] for la in layers], np.int64)),
              S.CHECKPOINT: np.array(checkpoints, np.int64),
              S.CONDITION: np.array(conditions, dtype=object)}
    any_r = next(iter(results.values()))
    grouped = {k: np.full(shape + (3,), np.nan) for k in any_r["grouped"]}
    scalars = {k: np.full(shape, np.nan) for k in any_r["scalars"]}
    per_class = {k: np.full(shape + (n_classes,), np.nan) for k in any_r["per_class"]}
    trans = np.zeros(shape + (n_classes, n_classes), np.int64)
    layer_means = {}
    dense = {}
    for (s, la, k, q), r in results.items():
        i = (splits.index(s), layers.index(la), k, q)
        for name, v in r["grouped"].items():
            grouped[name][i] = v
        for name, v in r["scalars"].items():
            scalars[name][i] = v
        for name, v in r["per_class"].items():
            per_class[name][i] = v
        trans[i] = np.rint(r["transitions"]).astype(np.int64)
        d = r["means"].shape[-1]
        lm = layer_means.setdefault(la, np.full((len(splits), len(checkpoints), len(conditions),
                                                 3, n_classes, d), np.nan))
        lm[i[0], k, q] = r["means"]
        if "sigma_w" in r:
            dd = dense.setdefault(la, {n: np.full((len(splits), len(checkpoints),
                                                   len(conditions), d, d), np.nan)
                                       for n in ("sigma_w", "sigma_b")})
            dd["sigma_w"][i[0], k, q] = r["sigma_w"]
            dd["sigma_b"][i[0], k, q] = r["sigma_b"]
    gcoord = {S.GROUPING: np.array(REPORTED_GROUPINGS, dtype=object)}
    summary = xr.Dataset(
        {**{k: (dims + (S.GROUPING,), v) for k, v in grouped.items()},
         **{k: (dims, v) for k, v in scalars.items()}}, coords={**coords, **gcoord})
    per_class_ds = xr.Dataset({k: (dims + (S.CLASS,), v) for k, v in per_class.items()},
                              coords={**coords, S.CLASS: np.arange(n_classes)})
    trans_ds = xr.Dataset({"count": (dims + (S.LABEL, S.VERTEX), trans)},
                          coords={**coords, S.LABEL: np.arange(n_classes),
                                  S.VERTEX: np.arange(n_classes)})
    nodes = {f"/{S.SUMMARY_GROUP}": summary, f"/{S.PER_CLASS_GROUP}": per_class_ds,
             f"/{S.TRANSITIONS_GROUP}": trans_ds}
    for la, m in layer_means.items():
        lcoords = {k: v for k, v in coords.items() if k not in (S.LAYER, S.DEPTH)}
        ds = xr.Dataset({"means": ((S.SPLIT, S.CHECKPOINT, S.CONDITION, S.GROUPING, S.CLASS,
                                    S.FEATURE), m)},
                        coords={**lcoords, **gcoord, S.CLASS: np.arange(n_classes)})
        for name, arr in dense.get(la, {}).items():
            ds[name] = ((S.SPLIT, S.CHECKPOINT, S.CONDITION, S.FEATURE, S.FEATURE2), arr)
        ds.attrs.update(layer=la, depth=depth[la])
        nodes[f"/{S.METRIC_LAYERS_GROUP}/{la}"] = ds
    root = xr.Dataset(attrs=dict(attrs, versions=_versions(), complete=True,
                                 created=_dt.datetime.now(_dt.UTC).isoformat()))
    nodes["/"] = root
    return xr.DataTree.from_dict(nodes)


def tidy_summary(summary: xr.Dataset) -> pd.DataFrame:
    """Long-form table of ``/summary``: one row per (split, layer, checkpoint, condition,
    grouping, metric); metrics that do not depend on the grouping have grouping ``""``."""
    frames = []
    for name, var in summary.data_vars.items():
        df = var.to_dataframe(name=name).reset_index()
        if S.GROUPING not in var.dims:
            df[S.GROUPING] = ""
        df = df.rename(columns={name: "value"})
        df["metric"] = name
        frames.append(df[[S.SPLIT, S.LAYER, S.DEPTH, S.CHECKPOINT, S.CONDITION, S.GROUPING,
                          "metric", "value"]])
    return pd.concat(frames, ignore_index=True)


def csv_path(out) -> str:
    """``metrics.csv`` beside the store (``NAME.csv`` for ``NAME.zarr``); URLs kept."""
    name = fs.basename(out)
    stem = name[: -len(".zarr")] if name.endswith(".zarr") else None
    return fs.sibling(out, f"{stem}.csv" if stem else "metrics.csv")


def _remove_stale(out: Path) -> None:
    """Delete temporary copies left beside ``out`` by runs that were killed."""
    for tmp in out.parent.glob(f".{out.name}.*-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink()


def check_target(out, source, options, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``out`` that is not ours or holds another analysis.

    An existing ``out`` is replaced only when it is a metrics store of the same source and
    options, or when ``overwrite``; a path holding anything else is never touched.
    """
    if not fs.exists(out):
        return
    try:
        old = dict(zarr.open_group(str(out), mode="r").attrs)
    except Exception:  # noqa: BLE001 - unreadable means "not ours"
        old = {}
    if old.get("schema") != S.METRICS_SCHEMA:
        raise StoreError(f"{str(out)!r} exists and is not an ncprobe metrics store; choose "
                         "another --out (it is never overwritten)")
    if (old.get("source"), old.get("options")) != (str(source), options) and not overwrite:
        raise StoreError(f"{str(out)!r} holds metrics of another store or options; pass "
                         "--overwrite to replace it")


def write_metrics(tree: xr.DataTree, out, overwrite: bool = False) -> None:
    """Write the metrics tree to ``out`` and its tidy CSV beside it.

    On a local disk the store is written to a temporary folder and renamed into place, so an
    interrupted run never leaves a store at ``out``. Object stores have no atomic rename:
    there the store is written in place with ``complete`` false, set true at the very end.
    """
    check_target(out, tree.attrs["source"], tree.attrs["options"], overwrite)
    table = tidy_summary(tree[S.SUMMARY_GROUP].to_dataset())
    if not fs.is_local(out):
        fs.remove(out)
        pending = tree.copy()
        pending.attrs = dict(tree.attrs, complete=False)
        pending.to_zarr(str(out), mode="w", consolidated=False, zarr_format=3)
        zarr.open_group(str(out), mode="r+", use_consolidated=False).attrs["complete"] = True
        consolidate(str(out))
        filesystem, path = fs.filesystem(csv_path(out))
        with filesystem.open(path, "w") as f:
            table.to_csv(f, index=False)
        return
    out = Path(fs.filesystem(out)[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tree.to_zarr(tmp, mode="w", consolidated=False, zarr_format=3)
    consolidate(tmp)
    old_copy = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old_copy)
    tmp.rename(out)
    shutil.rmtree(old_copy, ignore_errors=True)
    csv = Path(csv_path(out))
    tmp_csv = csv.with_name(f".{csv.name}.tmp-{os.getpid()}")
    table.to_csv(tmp_csv, index=False)
    os.replace(tmp_csv, csv)
