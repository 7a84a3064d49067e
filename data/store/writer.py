"""Write an activation store (``ncprobe-activations/1``) chunk by chunk, resumably.

The writer is numpy-only so that the analysis stage can build test and benchmark stores without
torch; ``extract/`` drives it from a background thread. The unit of work is one *block*: one
split, checkpoint, condition and sample chunk. A block is written as whole chunks, each file
replaced atomically, so after an interruption a block is either fully present or redone, and
a rerun writes exactly what is missing. What the store holds is :mod:`ncprobe.data.store.layout`'s.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import zarr

from . import fs, schema
from .chunk_file import chunk_file_writer, direct_writes, writes_record
from .layout import CHUNK_BYTES, StoreLayout
from .lock import StoreLock
from .reader import StoreError, bad_chunks, delete_chunks, missing_chunks


def config_fingerprint(config: dict) -> str:
    """A short stable hash of the resolved configuration that determines a store's content."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [k for k in keys if json.dumps(old.get(k), sort_keys=True, default=str)
            != json.dumps(new.get(k), sort_keys=True, default=str)]


def writable_array(group: zarr.Group, path: str) -> zarr.Array:
    """The array at ``path`` of ``group``, opened to write every chunk, also one holding only
    the fill value: a block is done when all its chunk files exist (:meth:`done_blocks`).

    ``Array.with_config`` exists from zarr 3.1.6 on; before it, an array reads the flag from
    zarr's configuration when it is opened, so it is opened inside ``zarr.config.set``.
    """
    if hasattr(zarr.Array, "with_config"):
        return group[path].with_config({"write_empty_chunks": True})
    with zarr.config.set({"array.write_empty_chunks": True}):
        return group[path]


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
        widest = max(spec.dim for spec in self.layers)
        auto = max(1, CHUNK_BYTES // (widest * self.dtype.itemsize))
        self.layout = StoreLayout(
            layers=self.layers, checkpoints=self.checkpoints, conditions=self.conditions,
            samples=self.samples, n_classes=self.n_classes, dtype=self.dtype,
            chunk_samples=int(chunk_samples or auto), classifier=classifier,
            compression=compression)
        self.config = dict(config, chunk_samples=self.layout.chunk_samples, dtype=dtype,
                           compression=compression)
        self.fingerprint = config_fingerprint(self.config)
        self.attrs = dict(attrs or {})
        self.repaired: list[str] = []
        self.lock = StoreLock(self.path)
        self._arrays = {}
        # which path this process writes chunks by, recorded when the store is opened
        self._writes = writes_record(fs.is_local(self.path) and direct_writes())
        self._root = None  # the root group, opened on the first write
        self._layout_pending = False

    # ---------------------------------------------------------------- create / resume
    def open(self, overwrite: bool = False, repair: bool = False,
             defer_layout: bool = False) -> ActivationStoreWriter:
        """Create the store, or resume one written by the same configuration.

        An existing store written with another configuration is refused unless ``overwrite``;
        a directory that is not an ncprobe store is never deleted. ``repair`` reads every
        chunk of a resumed store and deletes those that fail their checksum, so that the
        resumed run rewrites them. With ``defer_layout`` a new store gets only its root group
        here (enough to be recognised and locked); :meth:`create_layout` must then run before
        the first write, which lets a caller overlap it with computing the first block.
        """
        fresh = not fs.exists(self.path) or fs.is_empty_dir(self.path)
        if not fresh:
            try:
                old = dict(zarr.open_group(self.path, mode="r").attrs)
            except Exception:  # noqa: BLE001 - any unreadable content means "not our store"
                old = None
            if old is None or old.get("schema") != schema.ACTIVATIONS_SCHEMA:
                raise StoreError(f"{self.path!r} exists and is not an ncprobe activation "
                                 "store; choose another `out` (it is never overwritten)")
        self.lock.acquire()
        try:
            if not fresh:
                if old.get("fingerprint") != self.fingerprint and not overwrite:
                    diff = _differences(old.get("config", {}), self.config)
                    raise StoreError(
                        f"store {self.path!r} holds a different run (differs in: "
                        f"{', '.join(diff) or 'configuration'}); pass `overwrite` to replace "
                        "it or choose another `out`")
                if old.get("fingerprint") == self.fingerprint and old.get("layout_written"):
                    self._resume(repair)
                    return self
                # another run (with --overwrite), or ours interrupted while creating its layout
                fs.remove(self.path)
            self._create_root()
            if not defer_layout:
                self.create_layout()
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
        group = zarr.open_group(self.path, mode="r+", use_consolidated=False)
        # a resumed store holds chunks of every run that wrote it, each by its own path
        writes = sorted(set(group.attrs.get("chunk_writes", [])) | {self._writes})
        group.attrs.update(complete=False, chunk_writes=writes)
        # a process killed inside an atomic chunk write leaves its temporary file behind
        if fs.is_local(self.path):
            for tmp in Path(fs.filesystem(self.path)[1]).rglob("*.partial"):
                tmp.unlink(missing_ok=True)
        if repair:
            data = (schema.FEATURES, schema.LOGITS, schema.PRED, schema.TARGET,
                    schema.PERTURBATION_NORM)
            broken = [b for b in bad_chunks(self.path)
                      if b[3] != "missing" and b[0].rsplit("/", 1)[-1] in data]
            delete_chunks(self.path, [key for _, _, key, _ in broken])
            self.repaired = [f"{n} chunk {c}" for n, c, _, _ in broken]

    def _create_root(self) -> None:
        root = dict(self.attrs)
        root.update(schema=schema.ACTIVATIONS_SCHEMA, n_classes=self.n_classes,
                    layers=[s.name for s in self.layers], conditions=self.conditions,
                    config=self.config, fingerprint=self.fingerprint, complete=False,
                    chunk_writes=[self._writes],
                    layout_written=False,
                    layer_specs=[dict(asdict(s), original_shape=list(s.original_shape))
                                 for s in self.layers])
        root.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat())
        root.setdefault("class_names", [str(i) for i in range(self.n_classes)])
        # the schema is in the group's first document, so a creation interrupted at any point
        # is recognised as ours and redone (a group created empty, then given attributes,
        # left a store that no rerun would touch when killed in between)
        zarr.create_group(self.path, zarr_format=3, overwrite=True, attributes=root)
        self._layout_pending = True

    def create_layout(self) -> None:
        """Create every array of a new store and write its coordinates; a no-op when done."""
        if not self._layout_pending:
            return
        self.layout.create(self.path)
        zarr.open_group(self.path, mode="r+", use_consolidated=False).attrs.update(
            layout_written=True)
        self._layout_pending = False

    def close(self) -> None:
        """Release the writer lock (also after an error: the store stays resumable)."""
        self.lock.release()

    # ---------------------------------------------------------------- blocks
    def _array(self, path):
        """The array at ``path`` and its direct chunk-file writer (None: write through zarr)."""
        if path not in self._arrays:
            if self._root is None:
                self._root = zarr.open_group(self.path, mode="r+", use_consolidated=False)
            array = writable_array(self._root, path)
            self._arrays[path] = array, chunk_file_writer(array, self.path)
        return self._arrays[path]

    def _stored_keys(self) -> set[str]:
        return fs.list_keys(self.path)

    def done_blocks(self) -> set[tuple[str, int, int, int]]:
        """``(split, checkpoint, condition, block)`` of every block whose chunks (all layers
        and outputs) are on disk, from one listing of the store."""
        if self._layout_pending:
            return set()
        stored = self._stored_keys()
        lay = self.layout
        return {(split, k, q, b) for split in self.samples
                for k, q, b in np.ndindex(len(self.checkpoints), len(self.conditions),
                                          len(lay.blocks(split)))
                if stored.issuperset(lay.block_keys(split, k, q, b))}

    def write_block(self, split, checkpoint, condition, block, features, logits, pred, target,
                    perturbation_norm):
        """Write one block: ``features`` maps layer name to (n, D); outputs are per sample."""
        start, stop = self.layout.blocks(split)[block]
        n = stop - start
        for spec in self.layers:
            f = np.asarray(features[spec.name])
            if f.shape != (n, spec.dim):
                raise StoreError(f"layer {spec.name!r}: block has shape {f.shape}, expected "
                                 f"({n}, {spec.dim})")
        out = schema.outputs_path(split)
        parts = [(f"{out}/{schema.LOGITS}", logits, np.float32),
                 (f"{out}/{schema.PRED}", pred, np.int32),
                 (f"{out}/{schema.TARGET}", target, np.int32),
                 (f"{out}/{schema.PERTURBATION_NORM}", perturbation_norm, np.float32)]
        parts += [(f"{schema.features_path(split, spec.name)}/{schema.FEATURES}",
                   features[spec.name],
                   self.dtype) for spec in self.layers]
        for path, value, dtype in parts:
            array, direct = self._array(path)
            value = np.asarray(value, dtype)
            if direct is not None:  # a block is exactly one chunk
                direct.write((checkpoint, condition, block) + (0,) * (array.ndim - 3),
                             value[None, None])
            else:
                array[checkpoint, condition, start:stop] = value

    def write_classifier(self, checkpoint: int, weight, bias) -> None:
        """Weights (class, feature) and bias (class,) of the final linear map at a checkpoint."""
        self._array(f"{schema.CLASSIFIER_GROUP}/{schema.WEIGHT}")[0][checkpoint] = np.asarray(
            weight,
                                                                                    np.float32)
        self._array(f"{schema.CLASSIFIER_GROUP}/{schema.BIAS}")[0][checkpoint] = np.asarray(bias,
                                                                                  np.float32)

    def finalize(self, **extra_attrs) -> None:
        """Verify every chunk is on disk, then mark the store complete and consolidate."""
        stored = self._stored_keys()
        if not stored.issuperset(self.layout.chunk_keys()):
            missing = missing_chunks(self.path)  # slower, but names arrays and counts
            raise StoreError(f"store {self.path!r} cannot be marked complete; missing: "
                             f"{'; '.join(missing[:5])}")
        group = zarr.open_group(self.path, mode="r+", use_consolidated=False)
        group.update_attributes(dict(extra_attrs, complete=True))
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


def replace_tree(tree, out: Path) -> None:
    """Write the DataTree ``tree`` to the local folder ``out`` through a temporary copy renamed
    into place, consolidated, so that a reader (or a killed writer) never leaves half a store
    at ``out``; a store already there is replaced."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tree.to_zarr(tmp, mode="w", consolidated=False, zarr_format=3)
    consolidate(tmp)
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
