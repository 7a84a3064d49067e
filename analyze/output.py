"""The metrics store ``ncprobe-metrics/2``: assemble per-block results, write zarr and CSV.

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
import xarray as xr
import zarr

from ncprobe.data.store import StoreError, fs, schema
from ncprobe.data.store.lock import process_alive
from ncprobe.data.store.writer import consolidate, replace_tree

from . import registry
from .metrics import separation_law
from .metrics_reader import tidy_summary


def _versions():
    out = {}
    for pkg in ("ncprobe", "numpy", "xarray", "zarr", "dask"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def assemble(per_layer: dict, *, splits, layers, depth, attrs) -> xr.DataTree:
    """The metrics DataTree from ``{(split, layer): layer Dataset}``.

    Each layer Dataset is :func:`ncprobe.analyze.metrics.layer_metrics`'s, over (checkpoint,
    condition); they are stacked along ``split`` and ``layer`` into ``/summary``,
    ``/per_class`` and ``/transitions``, and their class means (whose feature dims differ
    between layers) go to ``/layers/<layer>``.
    """
    def stacked(names):
        rows = [xr.concat([per_layer[(s, la)][names] for la in layers], dim=schema.LAYER)
                for s in splits]
        ds = xr.concat(rows, dim=schema.SPLIT)
        ds = ds.assign_coords({schema.SPLIT: np.array(splits, dtype=object),
                               schema.LAYER: np.array(layers, dtype=object),
                               schema.DEPTH: (schema.LAYER,
                                              np.array([depth[la] for la in layers]))})
        return ds.transpose(schema.SPLIT, schema.LAYER, schema.CHECKPOINT, schema.CONDITION, ...)

    def objects(ds):
        # no encoding of the source store (e.g. format-2 compressors) may reach ours
        return ds.assign_coords({d: ds[d].values.astype(object) for d in
                                 (schema.CONDITION, schema.GROUPING) if d in ds.coords}
                                ).drop_encoding()

    def group(name):
        """The registry's metrics of one store group, under their stored names (at least one
        of them computed)."""
        metrics = [m for m in registry.in_group(name) if m.key in first]
        ds = stacked([m.key for m in metrics]).rename({m.key: m.store_name for m in metrics})
        for m in metrics:
            if m.integer:
                ds[m.store_name] = ds[m.store_name].round().astype(np.int64)
        return ds

    first = per_layer[(splits[0], layers[0])]
    sparse = "transitions" in first and first["transitions"].dtype == object
    # a group none of whose metrics were asked for (nc-analyze --metrics) is empty
    nodes = {f"/{g}": objects(group(g)) if any(m.key in first for m in registry.in_group(g))
             else xr.Dataset()
             for g in (schema.SUMMARY_GROUP, schema.PER_CLASS_GROUP, schema.TRANSITIONS_GROUP)
             if not (sparse and g == schema.TRANSITIONS_GROUP)}
    if sparse:
        nodes[f"/{schema.TRANSITIONS_GROUP}"] = objects(sparse_transitions(
            stacked(["transitions"])["transitions"], int(first.sizes[schema.CLASS])))
    if "fuzziness" in first:
        # the law of data separation: across layers, so fitted once the layers are stacked
        fuzziness = nodes[f"/{schema.SUMMARY_GROUP}"]["fuzziness"]
        nodes[f"/{schema.SEPARATION_GROUP}"] = objects(separation_law(fuzziness))
    dense = [n for n in ("sigma_w", "sigma_b") if n in first]
    for la in layers:
        ds = xr.concat([per_layer[(s, la)][["means", *dense]] for s in splits], dim=schema.SPLIT)
        ds = ds.assign_coords({schema.SPLIT: np.array(splits, dtype=object)}).transpose(
            schema.SPLIT, schema.CHECKPOINT, schema.CONDITION, ...)
        ds.attrs.update(layer=la, depth=depth[la])
        nodes[f"/{schema.METRIC_LAYERS_GROUP}/{la}"] = objects(ds)
    root = xr.Dataset(attrs=dict(attrs, versions=_versions(), complete=True,
                                 created=_dt.datetime.now(_dt.UTC).isoformat()))
    nodes["/"] = root
    return xr.DataTree.from_dict(nodes)


def sparse_transitions(stacked: xr.DataArray, n_classes: int) -> xr.Dataset:
    """The coordinate form of sparse transitions, readable with plain xarray: ``label``,
    ``vertex`` and ``count`` (..., entry), the pairs that occur in each block, padded with
    label = vertex = -1 and count = 0 to the longest block (docs/metrics.md)."""
    blocks = stacked.values
    size = max((b.codes.size for b in blocks.ravel()), default=0)
    label = np.full(blocks.shape + (size,), -1, np.int64)
    vertex = np.full(blocks.shape + (size,), -1, np.int64)
    count = np.zeros(blocks.shape + (size,), np.int64)
    for i in np.ndindex(*blocks.shape):
        b = blocks[i]
        label[i][: b.codes.size], vertex[i][: b.codes.size] = np.divmod(b.codes, n_classes)
        count[i][: b.codes.size] = b.counts
    dims = (*stacked.dims, "entry")
    return xr.Dataset({"label": (dims, label), "vertex": (dims, vertex),
                       "count": (dims, count)}, coords=stacked.coords).assign_attrs(
        form="sparse", n_classes=n_classes)


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
    # a metrics store of an older schema is ours too: analysing again is how it is renewed
    family = schema.METRICS_SCHEMA.rsplit("/", 1)[0]
    ours = [schema.METRICS_SCHEMA, *(k for k in schema.SUPERSEDED if k.rsplit("/", 1)[0] == family)]
    if old.get("schema") not in ours:
        raise StoreError(f"{str(out)!r} exists and is not an ncprobe metrics store; choose "
                         "another `out` (it is never overwritten)")
    if (old.get("source"), old.get("options")) != (str(source), options) and not overwrite:
        raise StoreError(f"{str(out)!r} holds metrics of another store or options; pass "
                         "`overwrite` to replace it")


def write_metrics(tree: xr.DataTree, out, overwrite: bool = False) -> None:
    """Write the metrics tree to ``out`` and its tidy CSV beside it.

    On a local disk the store is written to a temporary folder and renamed into place, so an
    interrupted run never leaves a store at ``out``. Object stores have no atomic rename:
    there the store is written in place with ``complete`` false, set true at the very end.
    """
    check_target(out, tree.attrs["source"], tree.attrs["options"], overwrite)
    table = tidy_summary(tree[schema.SUMMARY_GROUP].to_dataset())
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
    replace_tree(tree, out)
    csv = Path(csv_path(out))
    tmp_csv = csv.with_name(f".{csv.name}.tmp-{os.getpid()}")
    table.to_csv(tmp_csv, index=False)
    os.replace(tmp_csv, csv)
