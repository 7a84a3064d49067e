"""Write an activation store (``ncprobe-activations/1``) chunk by chunk, resumably.

The writer is numpy-only so that the analysis stage can build test and benchmark stores without
torch; ``extract/`` drives it from a background thread. The unit of work is one *block*: one
split, checkpoint, condition and sample chunk. A block is written as whole zarr chunks (zarr's
local store replaces files atomically), so after an interruption a block is either fully
present or redone, and a rerun writes exactly what is missing.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xarray as xr
import zarr
from zarr.core.sync import sync

from . import fs
from . import schema as S
from .locking import StoreLock
from .store import StoreError, bad_chunks, delete_chunks, missing_chunks

#: target size of one feature chunk of the widest layer: large enough to compress and read
#: efficiently, small enough that a block of every layer stays a few tens of MB in host memory
CHUNK_BYTES = 16 * 2**20
COMPRESSIONS = ("lz4", "zstd", "none")


@dataclass(frozen=True)
class LayerSpec:
    """One captured layer: its name, depth order, module path, shapes and reduction."""

    name: str
    depth: int
    module: str
    original_shape: tuple
    reduction: str
    dim: int


def _compressors(name: str):
    if name not in COMPRESSIONS:
        raise StoreError(f"unknown compression {name!r}; expected one of {', '.join(COMPRESSIONS)}")
    # a CRC-32C of every chunk: a corrupted chunk fails loudly on read instead of returning
    # silently wrong numbers
    checksum = zarr.codecs.Crc32cCodec()
    if name == "none":
        return [checksum]
    # lz4 with byte shuffle: fast enough that compression never limits extraction
    clevel = 1 if name == "lz4" else 3
    return [zarr.codecs.BloscCodec(cname=name, clevel=clevel, shuffle="shuffle"), checksum]


def config_fingerprint(config: dict) -> str:
    """A short stable hash of the resolved configuration that determines a store's content."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(new.get(k), sort_keys=True, default=str)]


def _var(dims, shape, dtype, chunks):
    """A zero-memory placeholder variable that carries its chunk shape in its encoding."""
    return (dims, np.broadcast_to(np.zeros((), dtype), shape), {}, {"chunks": chunks})


class ActivationStoreWriter:
    """Create or resume an activation store and write it block by block.

    Parameters
    ----------
    path : str or Path
        The store directory (``NAME.zarr``).
    layers : list of LayerSpec
        Captured layers in depth order.
    checkpoints : list of int
        Checkpoint epochs (coordinate ``checkpoint``).
    conditions : list of dict
        One dict per condition with at least ``name``; stored in the root attrs.
    samples : dict of str to (ndarray, ndarray)
        Per split, the dataset indices (int64) and true labels of the samples to store.
    n_classes : int
    config : dict
        Everything that determines the store's content; a rerun with a different ``config``
        is refused unless ``overwrite``.
    attrs : dict
        Further root attributes (``class_names``, ``dataset``, ``model``, ``command`` ...).
    dtype : {"float32", "float16"}
    compression : {"lz4", "zstd", "none"}
    classifier : tuple of (str, int) or None
        Name of the layer feeding the final linear map and its input dim.
    chunk_samples : int or None
        Samples per chunk; by default sized so the widest layer's chunk is about 16 MiB.
    """

    def __init__(self, path, *, layers, checkpoints, conditions, samples, n_classes, config,
                 attrs=None, dtype="float32", compression="lz4", classifier=None,
                 chunk_samples=None):
        if dtype not in ("float32", "float16"):
            raise StoreError(f"unknown feature dtype {dtype!r}; expected float32 or float16")
        self.path = str(path)
        self.layers = list(layers)
        self.checkpoints = [int(c) for c in checkpoints]
        self.conditions = [dict(c) for c in conditions]
        self.samples = {s: (np.asarray(i, np.int64), np.asarray(y)) for s, (i, y) in
                        samples.items()}
        self.n_classes = int(n_classes)
        self.dtype = np.dtype(dtype)
        self.compressors = _compressors(compression)
        self.classifier = classifier
        widest = max(spec.dim for spec in self.layers)
        auto = max(1, CHUNK_BYTES // (widest * self.dtype.itemsize))
        self.chunk_samples = int(chunk_samples or auto)
        self.config = dict(config, chunk_samples=self.chunk_samples, dtype=dtype,
                           compression=compression)
        self.fingerprint = config_fingerprint(self.config)
        self.attrs = dict(attrs or {})
        self.repaired: list[str] = []
        self.lock = StoreLock(self.path)
        self._arrays = {}

    # ---------------------------------------------------------------- layout
    def blocks(self, split: str) -> list[tuple[int, int]]:
        """(start, stop) sample positions of each chunk of ``split``."""
        n = len(self.samples[split][0])
        cs = self.chunk_samples
        return [(b * cs, min(n, (b + 1) * cs)) for b in range(math.ceil(n / cs))]

    def _coords(self, split):
        idx, y = self.samples[split]
        conds = np.array([c["name"] for c in self.conditions], dtype=object)
        return {S.CHECKPOINT: np.array(self.checkpoints, np.int64), S.CONDITION: conds,
                S.SAMPLE: idx, S.LABEL: (S.SAMPLE, y.astype(np.int32))}

    def _template(self, split, spec: LayerSpec):
        k, q, n = len(self.checkpoints), len(self.conditions), len(self.samples[split][0])
        ds = xr.Dataset({S.FEATURES: _var((S.CHECKPOINT, S.CONDITION, S.SAMPLE, S.FEATURE),
                                          (k, q, n, spec.dim), self.dtype,
                                          (1, 1, self.chunk_samples, spec.dim))},
                        coords=self._coords(split))
        ds.attrs = {"layer": spec.name, "depth": spec.depth, "module": spec.module,
                    "original_shape": list(spec.original_shape), "reduction": spec.reduction}
        return ds

    def _outputs_template(self, split):
        k, q, n, c = (len(self.checkpoints), len(self.conditions), len(self.samples[split][0]),
                      self.n_classes)
        ch = (1, 1, self.chunk_samples)
        dims = (S.CHECKPOINT, S.CONDITION, S.SAMPLE)
        return xr.Dataset(
            {S.LOGITS: _var(dims + (S.CLASS,), (k, q, n, c), np.float32, ch + (c,)),
             S.PRED: _var(dims, (k, q, n), np.int32, ch),
             S.TARGET: _var(dims, (k, q, n), np.int32, ch),
             S.PERTURBATION_NORM: _var(dims, (k, q, n), np.float32, ch)},
            coords=self._coords(split))

    def _classifier_template(self):
        layer, dim = self.classifier
        k, c = len(self.checkpoints), self.n_classes
        ds = xr.Dataset(
            {S.WEIGHT: _var((S.CHECKPOINT, S.CLASS, S.FEATURE), (k, c, dim), np.float32,
                            (1, c, dim)),
             S.BIAS: _var((S.CHECKPOINT, S.CLASS), (k, c), np.float32, (1, c))},
            coords={S.CHECKPOINT: np.array(self.checkpoints, np.int64)})
        ds.attrs["layer"] = layer
        return ds

    def _create_layout(self, templates) -> None:
        """Create every group and array that the ``(group path, Dataset)`` templates describe
        (dims, dtypes, dask chunks, attributes) and write their coordinates.

        The array metadata is built in memory, then the whole hierarchy is created
        concurrently and the coordinates written concurrently: one round trip to the store
        instead of one per array, which made store creation the largest fixed cost.
        """
        from zarr.core.group import GroupMetadata

        mem = zarr.storage.MemoryStore()
        nodes, coords = {}, []
        for group, ds in templates:
            nodes[group] = GroupMetadata(attributes=dict(ds.attrs), zarr_format=3)
            aux = [n for n in ds.coords if n not in ds.dims]
            for name, var in ds.variables.items():
                linked = [c for c in aux if set(ds[c].dims) <= set(var.dims) and c != name]
                attrs = {"coordinates": " ".join(linked)} if name in ds.data_vars and linked \
                    else {}
                compressors = (self.compressors if name in (S.FEATURES, S.LOGITS)
                               else _compressors("lz4"))
                spec = zarr.create_array(
                    mem, name=f"{group}/{name}", shape=var.shape,
                    chunks=var.encoding.get("chunks", var.shape),
                    dtype=str if var.dtype == object else var.dtype,
                    fill_value=np.nan if var.dtype.kind == "f" else None,
                    dimension_names=var.dims, attributes=attrs, compressors=compressors)
                nodes[f"{group}/{name}"] = spec.metadata
                if name in ds.coords:
                    coords.append((f"{group}/{name}", var.values))
        store = zarr.open_group(self.path, mode="r+", use_consolidated=False).store
        created = dict(zarr.create_hierarchy(store=store, nodes=nodes, overwrite=True))

        async def write_coords():
            # every chunk must exist on disk, also one equal to the fill value (checkpoint 0):
            # chunk presence is how completeness is verified
            await asyncio.gather(*(
                created[path].with_config({"write_empty_chunks": True}).async_array.setitem(
                    Ellipsis, values) for path, values in coords))

        sync(write_coords())

    # ---------------------------------------------------------------- create / resume
    def open(self, overwrite: bool = False, repair: bool = False) -> ActivationStoreWriter:
        """Create the store, or resume one written by the same configuration.

        An existing store written with another configuration is refused unless ``overwrite``;
        a directory that is not an ncprobe store is never deleted. ``repair`` reads every
        chunk of a resumed store and deletes those that fail their checksum, so that the
        resumed run rewrites them.
        """
        fresh = not fs.exists(self.path) or fs.is_empty_dir(self.path)
        if not fresh:
            try:
                old = dict(zarr.open_group(self.path, mode="r").attrs)
            except Exception:  # noqa: BLE001 - any unreadable content means "not our store"
                old = None
            if old is None or old.get("schema") != S.ACTIVATIONS_SCHEMA:
                raise StoreError(f"{self.path!r} exists and is not an ncprobe activation "
                                 "store; choose another --out (it is never overwritten)")
        self.lock.acquire()
        try:
            if not fresh:
                if old.get("fingerprint") != self.fingerprint and not overwrite:
                    diff = _differences(old.get("config", {}), self.config)
                    raise StoreError(
                        f"store {self.path!r} holds a different run (differs in: "
                        f"{', '.join(diff) or 'configuration'}); pass --overwrite to replace "
                        "it or choose another --out")
                if old.get("fingerprint") == self.fingerprint and old.get("layout_written"):
                    self._resume(repair)
                    return self
                # another run (with --overwrite), or ours interrupted while creating its layout
                fs.remove(self.path)
            self._create()
        except BaseException:
            self.lock.release()
            raise
        return self

    def attach(self) -> ActivationStoreWriter:
        """Use a store that another process of the same run has just created (the other
        ranks of a distributed extraction); that process holds the lock."""
        attrs = dict(zarr.open_group(self.path, mode="r", use_consolidated=False).attrs)
        if attrs.get("fingerprint") != self.fingerprint or not attrs.get("layout_written"):
            raise StoreError(f"store {self.path!r} was not created for this run "
                             "(fingerprint differs); every rank must run the same command")
        return self

    def _resume(self, repair: bool) -> None:
        # Rewriting the root metadata drops the consolidated copy, so no reader trusts stale
        # metadata while blocks are being added.
        zarr.open_group(self.path, mode="r+", use_consolidated=False).attrs.update(
            complete=False)
        # a process killed inside zarr's atomic (local) write leaves its temporary file behind
        if fs.is_local(self.path):
            for tmp in Path(fs.filesystem(self.path)[1]).rglob("*.partial"):
                tmp.unlink(missing_ok=True)
        if repair:
            data = (S.FEATURES, S.LOGITS, S.PRED, S.TARGET, S.PERTURBATION_NORM)
            broken = [b for b in bad_chunks(self.path)
                      if b[3] != "missing" and b[0].rsplit("/", 1)[-1] in data]
            delete_chunks(self.path, [key for _, _, key, _ in broken])
            self.repaired = [f"{n} chunk {c}" for n, c, _, _ in broken]

    def _create(self) -> None:
        root = dict(self.attrs)
        root.update(schema=S.ACTIVATIONS_SCHEMA, n_classes=self.n_classes,
                    layers=[s.name for s in self.layers], conditions=self.conditions,
                    config=self.config, fingerprint=self.fingerprint, complete=False,
                    layout_written=False,
                    layer_specs=[dict(asdict(s), original_shape=list(s.original_shape))
                                 for s in self.layers])
        root.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat())
        root.setdefault("class_names", [str(i) for i in range(self.n_classes)])
        # the schema goes first so an interrupted creation is recognised as ours and redone
        zarr.create_group(self.path, zarr_format=3, overwrite=True).attrs.update(root)
        templates = []
        for split in self.samples:
            templates += [(S.features_path(split, spec.name), self._template(split, spec))
                          for spec in self.layers]
            templates.append((S.outputs_path(split), self._outputs_template(split)))
        if self.classifier is not None:
            templates.append((S.CLASSIFIER_GROUP, self._classifier_template()))
        self._create_layout(templates)
        zarr.open_group(self.path, mode="r+", use_consolidated=False).attrs.update(
            layout_written=True)

    def close(self) -> None:
        """Release the writer lock (also after an error: the store stays resumable)."""
        self.lock.release()

    # ---------------------------------------------------------------- blocks
    def _array(self, path):
        if path not in self._arrays:
            g = zarr.open_group(self.path, mode="r+", use_consolidated=False)
            self._arrays[path] = g[path].with_config({"write_empty_chunks": True})
        return self._arrays[path]

    def _block_arrays(self, split):
        return ([f"{S.features_path(split, s.name)}/{S.FEATURES}" for s in self.layers]
                + [f"{S.outputs_path(split)}/{v}" for v in
                   (S.LOGITS, S.PRED, S.TARGET, S.PERTURBATION_NORM)])

    def _chunk_exists(self, array, coords) -> bool:
        key = f"{array.store_path.path}/{array.metadata.encode_chunk_key(coords)}"
        return sync(array.store_path.store.exists(key))

    def block_done(self, split: str, checkpoint: int, condition: int, block: int) -> bool:
        """True when every chunk of the block (all layers and outputs) is on disk."""
        for path in self._block_arrays(split):
            a = self._array(path)
            coords = (checkpoint, condition, block) + (0,) * (a.ndim - 3)
            if not self._chunk_exists(a, coords):
                return False
        return True

    def write_block(self, split, checkpoint, condition, block, features, logits, pred, target,
                    perturbation_norm):
        """Write one block: ``features`` maps layer name to (n, D); outputs are per sample."""
        start, stop = self.blocks(split)[block]
        n = stop - start
        for spec in self.layers:
            f = np.asarray(features[spec.name])
            if f.shape != (n, spec.dim):
                raise StoreError(f"layer {spec.name!r}: block has shape {f.shape}, expected "
                                 f"({n}, {spec.dim})")
        out = S.outputs_path(split)
        parts = [(f"{out}/{S.LOGITS}", logits, np.float32), (f"{out}/{S.PRED}", pred, np.int32),
                 (f"{out}/{S.TARGET}", target, np.int32),
                 (f"{out}/{S.PERTURBATION_NORM}", perturbation_norm, np.float32)]
        parts += [(f"{S.features_path(split, spec.name)}/{S.FEATURES}", features[spec.name],
                   self.dtype) for spec in self.layers]
        where = (checkpoint, condition, slice(start, stop))
        for path, value, dtype in parts:
            self._array(path)[where] = np.asarray(value, dtype)

    def write_classifier(self, checkpoint: int, weight, bias) -> None:
        """Weights (class, feature) and bias (class,) of the final linear map at a checkpoint."""
        self._array(f"{S.CLASSIFIER_GROUP}/{S.WEIGHT}")[checkpoint] = np.asarray(weight,
                                                                                 np.float32)
        self._array(f"{S.CLASSIFIER_GROUP}/{S.BIAS}")[checkpoint] = np.asarray(bias, np.float32)

    def finalize(self, **extra_attrs) -> None:
        """Verify every chunk is on disk, then mark the store complete and consolidate."""
        missing = missing_chunks(self.path)
        if missing:
            raise StoreError(f"store {self.path!r} cannot be marked complete; missing: "
                             f"{'; '.join(missing[:5])}")
        group = zarr.open_group(self.path, mode="r+", use_consolidated=False)
        group.attrs.update(dict(extra_attrs, complete=True))
        consolidate(self.path)
        self.close()


def consolidate(path) -> None:
    """Consolidate metadata so plain xarray opens the store fast and without a warning.

    zarr warns that consolidated metadata is not yet part of the format-3 specification; we use
    it deliberately (xarray reads it) and so silence that one warning here, where we write.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(path)
