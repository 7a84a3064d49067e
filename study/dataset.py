"""``study.zarr``: every finished model's metrics stacked along ``model``, and the comparison.

Groups (docs/studies.md, "The study dataset"), readable with plain
``xr.open_datatree(path, engine="zarr")``:

``/summary``
    The summary metrics of each model at the layer that feeds its classifier and its last
    checkpoint, dims (model, split, condition[, grouping]), with ``ncc_gap`` = ``ncc_acc`` -
    ``net_acc``. Coordinates on ``model``: the manifest's metadata (family, training, pair,
    reported_clean, reported_robust), what ncprobe measured (source, checkpoint, feature_layer,
    feature_dim, parameters, n_layers, clean_acc, robust_acc, and ``accuracy`` by condition).
``/curves``
    Every per-layer summary metric (grouping ``label``) by ``position`` in depth order, with
    ``rel_depth`` = position / (layers - 1) and ``layer_name`` per model: models of different
    depth and width side by side (NaN beyond a model's last layer).
``/comparison``
    Per metric, split and condition: Spearman's rho with robust accuracy across models, its
    95 % bootstrap interval and the number of models.
``/pairs`` and ``/pair_tests``
    For the manifest's robust/standard pairs: each pair's difference (robust - standard) and,
    per metric, split and condition, the sign test over pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from ncprobe.data import schema
from ncprobe.data.store import open_metrics
from ncprobe.data.store.writer import replace_tree

from . import state, statistics
from .manifest import Manifest, StudyError

STUDY_SCHEMA = "ncprobe-study/1"
MODEL = "model"
POSITION = "position"


def _accuracy_split(manifest: Manifest, splits: list[str]) -> str:
    want = manifest.protocol.accuracy_split
    if want is not None:
        if want not in splits:
            raise StudyError(f"protocol accuracy_split {want!r} is not a split of the "
                                     f"study; splits: {', '.join(splits)}")
        return want
    return "test" if "test" in splits else splits[0]


def _model_summary(tree: xr.DataTree) -> tuple[xr.Dataset, str]:
    """The summary at the feature layer and last checkpoint, with ``ncc_gap``."""
    s = tree[schema.SUMMARY_GROUP].to_dataset()
    layers = [str(v) for v in s[schema.LAYER].values]
    layer = tree.attrs.get("classifier_layer")
    if layer not in layers:  # not captured (layers chosen without it): the deepest one is read,
        layer = layers[-1]   # and the coordinate feature_layer says so
    out = s.sel({schema.LAYER: layer}).isel({schema.CHECKPOINT: -1}, drop=True)
    out = out.drop_vars([schema.LAYER, schema.DEPTH], errors="ignore").load()
    return out.assign(ncc_gap=out["ncc_acc"] - out["net_acc"]), layer


def _model_curves(tree: xr.DataTree) -> xr.Dataset:
    s = tree[schema.SUMMARY_GROUP].to_dataset().isel({schema.CHECKPOINT: -1}, drop=True)
    if schema.GROUPING in s.dims:
        s = s.sel({schema.GROUPING: "label"}, drop=True)
    s = s.sortby(schema.DEPTH) if schema.DEPTH in s.coords else s
    names = [str(v) for v in s[schema.LAYER].values]
    n = len(names)
    s = s.drop_vars([schema.DEPTH, schema.LAYER], errors="ignore")
    s = s.rename_dims({schema.LAYER: POSITION}).assign_coords({POSITION: np.arange(n)})
    return s.assign_attrs(layer_names=names).load()


def _curve_coordinates(curves: dict, names: list[str]) -> dict:
    """``layer_name`` and ``rel_depth`` (model, position), padded past a model's last layer."""
    width = max(c.sizes[POSITION] for c in curves.values())
    layer = np.full((len(names), width), "", dtype=object)
    depth = np.full((len(names), width), np.nan)
    for i, name in enumerate(names):
        own = curves[name].attrs["layer_names"]
        layer[i, :len(own)] = own
        depth[i, :len(own)] = np.arange(len(own)) / max(len(own) - 1, 1)
    return {"layer_name": ((MODEL, POSITION), layer), "rel_depth": ((MODEL, POSITION), depth)}


def _object_strings(ds: xr.Dataset) -> xr.Dataset:
    """Every string coordinate as an object array: zarr writes numpy's fixed-width and
    StringDType strings with an unstable-dtype warning (docs/store.md, "Warnings")."""
    fixed = {k: v.astype(object) for k, v in ds.coords.items() if v.dtype.kind in "UT"}
    return ds.assign_coords(fixed) if fixed else ds


def _str(value) -> str:
    return "" if value is None else str(value)


def _float(value) -> float:
    return math.nan if value is None else float(value)


def model_coordinates(manifest: Manifest, names: list[str], summaries: dict, layers: dict,
                      curves: dict) -> tuple[dict, dict]:
    """The ``model`` coordinates, and the root attributes saying where robust accuracy comes
    from: ``robust_accuracy`` (a sentence), ``robust_condition`` and ``accuracy_split``."""
    first = summaries[names[0]]
    splits = [str(v) for v in first[schema.SPLIT].values]
    conditions = [str(v) for v in first[schema.CONDITION].values]
    acc_split = _accuracy_split(manifest, splits)
    robust = manifest.robust_condition(conditions)
    coords = {k: [] for k in ("family", "training", "pair", "source", "checkpoint",
                              "feature_layer", "feature_dim", "parameters", "n_layers",
                              "reported_clean", "reported_robust", "clean_acc",
                              "robust_acc_measured", "robust_acc")}
    accuracy = []
    for name in names:
        entry = manifest.model(name)
        acts = dict(zarr.open_group(str(state.acts_path(manifest, name)), mode="r").attrs)
        model = acts.get("model", {})
        spec = {s["name"]: s for s in acts.get("layer_specs", [])}.get(layers[name], {})
        acc = summaries[name]["net_acc"].sel({schema.SPLIT: acc_split})
        measured = float(acc.sel({schema.CONDITION: robust}))
        coords["family"].append(_str(entry.family))
        coords["training"].append(_str(entry.training
                                       or (model.get("training") or {}).get("mode")))
        coords["pair"].append(_str(entry.pair))
        coords["source"].append(_str(entry.arch or model.get("arch")))
        coords["checkpoint"].append(_str((model.get("checkpoints") or [{}])[-1].get("path")))
        coords["feature_layer"].append(layers[name])
        coords["feature_dim"].append(int(spec.get("dim", -1)))
        coords["parameters"].append(int(model.get("parameters", -1)))
        coords["n_layers"].append(int(curves[name].sizes[POSITION]))
        coords["reported_clean"].append(_float(entry.reported_clean))
        coords["reported_robust"].append(_float(entry.reported_robust))
        coords["clean_acc"].append(float(acc.sel({schema.CONDITION: schema.CLEAN}))
                                   if schema.CLEAN in conditions else math.nan)
        coords["robust_acc_measured"].append(measured)
        coords["robust_acc"].append(_float(entry.reported_robust)
                                    if manifest.protocol.robust_accuracy == "reported"
                                    else measured)
        accuracy.append([float(acc.sel({schema.CONDITION: c})) for c in conditions])
    out = {k: (MODEL, np.array(v, dtype=object) if isinstance(v[0], str) else np.array(v))
           for k, v in coords.items()}
    out["accuracy"] = ((MODEL, schema.CONDITION), np.array(accuracy))
    source = ("the reported robust accuracy of the manifest (reported_robust)"
              if manifest.protocol.robust_accuracy == "reported" else
              f"ncprobe's net_acc under condition {robust!r} on split {acc_split!r}")
    return out, {"robust_accuracy": source, "robust_condition": robust,
                 "accuracy_split": acc_split}


def comparison(summary: xr.Dataset, robust_acc: np.ndarray) -> xr.Dataset:
    """Spearman's rho of every scalar metric (grouping ``label``) with ``robust_acc`` across
    models, per split and condition."""
    s = summary.sel({schema.GROUPING: "label"}, drop=True) if schema.GROUPING in summary.dims \
        else summary
    metrics = [k for k, v in s.data_vars.items()
               if set(v.dims) == {MODEL, schema.SPLIT, schema.CONDITION}]
    splits, conds = s[schema.SPLIT].values, s[schema.CONDITION].values
    shape = (len(metrics), len(splits), len(conds))
    rho, low, high, n = (np.full(shape, np.nan) for _ in range(4))
    for i, m in enumerate(metrics):
        values = s[m].transpose(MODEL, schema.SPLIT, schema.CONDITION).values
        for j, k in np.ndindex(len(splits), len(conds)):
            rho[i, j, k], low[i, j, k], high[i, j, k], n[i, j, k] = \
                statistics.spearman_interval(values[:, j, k], robust_acc)
    dims = ("metric", schema.SPLIT, schema.CONDITION)
    return xr.Dataset({"rho": (dims, rho), "rho_low": (dims, low), "rho_high": (dims, high),
                       "n_models": (dims, n.astype(np.int64))},
                      coords={"metric": np.array(metrics, dtype=object),
                              schema.SPLIT: splits, schema.CONDITION: conds})


def pairs(summary: xr.Dataset, manifest: Manifest, names: list[str]) -> tuple[xr.Dataset,
                                                                              xr.Dataset]:
    """Paired differences (robust - standard) of the manifest's pairs, and their sign tests."""
    s = summary.sel({schema.GROUPING: "label"}, drop=True) if schema.GROUPING in summary.dims \
        else summary
    metrics = [k for k, v in s.data_vars.items()
               if set(v.dims) == {MODEL, schema.SPLIT, schema.CONDITION}]
    found = [(e.name, e.pair) for e in manifest.models
             if e.pair is not None and e.name in names and e.pair in names]
    dims = ("pair", "metric", schema.SPLIT, schema.CONDITION)
    diff = np.stack([np.stack([(s[m].sel({MODEL: r}) - s[m].sel({MODEL: st}))
                              .transpose(schema.SPLIT, schema.CONDITION).values
                               for m in metrics]) for r, st in found]) if found else \
        np.zeros((0, len(metrics), s.sizes[schema.SPLIT], s.sizes[schema.CONDITION]))
    coords = {"pair": np.array([f"{r} - {st}" for r, st in found], dtype=object),
              "robust": ("pair", np.array([r for r, _ in found], dtype=object)),
              "standard": ("pair", np.array([st for _, st in found], dtype=object)),
              "metric": np.array(metrics, dtype=object),
              schema.SPLIT: s[schema.SPLIT].values, schema.CONDITION: s[schema.CONDITION].values}
    paired = xr.Dataset({"difference": (dims, diff)}, coords=coords)
    shape = diff.shape[1:]
    pos, neg, p, med = (np.full(shape, np.nan) for _ in range(4))
    for idx in np.ndindex(*shape):
        d = diff[(slice(None), *idx)]
        pos[idx], neg[idx], p[idx] = statistics.sign_test(d)
        finite = d[np.isfinite(d)]
        med[idx] = np.median(finite) if finite.size else np.nan
    tests = xr.Dataset({"positive": (dims[1:], pos.astype(np.int64)),
                        "negative": (dims[1:], neg.astype(np.int64)),
                        "sign_p": (dims[1:], p), "median_difference": (dims[1:], med)},
                       coords={k: coords[k] for k in ("metric", schema.SPLIT,
                                                      schema.CONDITION)})
    tests.attrs["n_pairs"] = len(found)
    return paired, tests


def inputs_digest(manifest: Manifest) -> str:
    """A hash of what the study dataset is made of: the manifest's text (its metadata are
    coordinates) and every model's record (status, settings, fingerprint)."""
    digest = hashlib.sha256(manifest.path.read_bytes())
    for entry in manifest.models:
        digest.update(json.dumps(state.read_record(manifest, entry.name), sort_keys=True,
                                 default=str).encode())
    return digest.hexdigest()[:16]


def up_to_date(manifest: Manifest) -> bool:
    """Whether ``study.zarr`` and ``report.html`` were built from the current inputs."""
    try:
        attrs = dict(zarr.open_group(str(manifest.folder / "study.zarr"), mode="r").attrs)
    except Exception:  # noqa: BLE001 - absent or unreadable: not up to date
        return False
    return (attrs.get("inputs") == inputs_digest(manifest)
            and (manifest.folder / "report.html").is_file())


def build_study(manifest: Manifest) -> xr.DataTree:
    """The study dataset of every model whose stores are finished (in manifest order)."""
    names = [e.name for e in manifest.models if state.is_done(manifest, e)]
    if not names:
        raise StudyError("no model of the study is finished yet; run nc-study run first "
                         "(nc-study status says where each model stands)")
    summaries, layers, curves = {}, {}, {}
    for name in names:
        tree = open_metrics(state.metrics_path(manifest, name))
        summaries[name], layers[name] = _model_summary(tree)
        curves[name] = _model_curves(tree)
    index = pd.Index(names, name=MODEL)
    summary = xr.concat([summaries[n] for n in names], dim=index, join="outer",
                        coords="minimal", compat="override")
    curve = xr.concat([curves[n] for n in names], dim=index, join="outer",
                      coords="minimal", compat="override", combine_attrs="drop")
    curve = _object_strings(curve.assign_coords(_curve_coordinates(curves, names)))
    coords, robust_attrs = model_coordinates(manifest, names, summaries, layers, curves)
    summary = _object_strings(summary.assign_coords(coords))
    robust = np.asarray(coords["robust_acc"][1], np.float64)
    paired, tests = pairs(summary, manifest, names)
    failures = {s.name: s.detail for s in state.status(manifest) if s.status == state.FAILED}
    tree = xr.DataTree.from_dict({
        "/summary": summary, "/curves": curve,
        "/comparison": _object_strings(comparison(summary, robust)),
        "/pairs": _object_strings(paired), "/pair_tests": _object_strings(tests)})
    tree.attrs.update(schema=STUDY_SCHEMA, manifest=str(manifest.path),
                      inputs=inputs_digest(manifest),
                      **robust_attrs, models=names, failed=failures,
                      not_included=[e.name for e in manifest.models if e.name not in names])
    return tree


def write_study(tree: xr.DataTree, out) -> Path:
    """Write ``tree`` to ``out`` (a local folder) through a temporary copy renamed into
    place, so a reader never sees half a study dataset."""
    replace_tree(tree, Path(out))
    return Path(out)
