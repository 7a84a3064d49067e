"""The layout of an activation store: its groups, arrays, shapes, chunks and chunk keys.

:class:`StoreLayout` describes what a store of ``ncprobe-activations/1`` holds (docs/store.md) and
creates it; writing data into it is :mod:`ncprobe.data.store.writer`'s job. Knowing every array's
chunk grid and chunk keys here lets the writer check which blocks exist, and that a store is
complete, from one listing of the store instead of opening every array.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from . import fs, schema
from .reader import StoreError

#: target size of one feature chunk of the widest layer: large enough to compress and read
#: efficiently, small enough that a block of every layer stays a few tens of MB in host memory
CHUNK_BYTES = 16 * 2**20
COMPRESSIONS = ("lz4", "zstd", "none")
#: chunk keys "<array>/c/i/j/k"; set explicitly because chunk_key() relies on it
CHUNK_KEY_ENCODING = {"name": "default", "separator": "/"}


@dataclass(frozen=True)
class LayerSpec:
    """One captured layer: its name, depth order, module path, shapes and reduction."""

    name: str
    depth: int
    module: str
    original_shape: tuple
    reduction: str
    dim: int


def compressors(name: str) -> list:
    """zarr codecs after the array-to-bytes step: ``name`` (lz4, zstd, none) + a CRC-32C."""
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


def chunk_key(array_path: str, coords) -> str:
    """Storage key of the chunk with grid coordinates ``coords`` of the array at a path."""
    return f"{array_path}/c/" + "/".join(map(str, coords))


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store: dims, shape, dtype, chunk shape, attributes and, for a
    coordinate, its values."""

    dims: tuple
    shape: tuple
    dtype: np.dtype
    chunks: tuple
    values: np.ndarray | None = None
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Group:
    """One group of the store: its path, attributes and arrays (data and coordinates)."""

    path: str
    attrs: dict
    arrays: dict


def _coord(dim: str, values: np.ndarray) -> ArraySpec:
    """A one-chunk coordinate along ``dim``."""
    return ArraySpec((dim,), values.shape, values.dtype, values.shape, values)


class StoreLayout:
    """Groups and arrays of one activation store.

    Parameters
    ----------
    layers : list of LayerSpec
    checkpoints : list of int
    conditions : list of dict (each with ``name``)
    samples : dict of str to (ndarray, ndarray)
        Per split, dataset indices and true labels of the stored samples.
    n_classes : int
    dtype : numpy dtype of the features
    chunk_samples : int
        Samples per chunk (a split smaller than that is one chunk of its own size).
    classifier : tuple of (str, int) or None
        Layer feeding the final linear map and its input dim.
    compression : str
        Compression of features and logits (other arrays are small and use lz4).
    """

    def __init__(self, *, layers, checkpoints, conditions, samples, n_classes, dtype,
                 chunk_samples, classifier, compression):
        self.layers = list(layers)
        self.checkpoints = list(checkpoints)
        self.conditions = list(conditions)
        self.samples = samples
        self.n_classes = n_classes
        self.dtype = np.dtype(dtype)
        self.chunk_samples = chunk_samples
        self.classifier = classifier
        self.compressors = compressors(compression)

    # ------------------------------------------------------------------ blocks
    def blocks(self, split: str) -> list[tuple[int, int]]:
        """(start, stop) sample positions of each chunk of ``split``."""
        n = len(self.samples[split][0])
        cs = self.chunk_samples
        return [(b * cs, min(n, (b + 1) * cs)) for b in range(math.ceil(n / cs))]

    def split_chunk(self, split: str) -> int:
        """Samples per chunk of ``split``: ``chunk_samples``, or the whole split when smaller.

        zarr pads an edge chunk to the full chunk shape, so a split smaller than one chunk
        would otherwise be stored (and compressed, and read back) at ``chunk_samples`` rows.
        """
        return max(1, min(self.chunk_samples, len(self.samples[split][0])))

    def block_arrays(self, split: str) -> list[str]:
        """Paths of the arrays of which a block of ``split`` writes one chunk each."""
        out = schema.outputs_path(split)
        return ([f"{schema.features_path(split, s.name)}/{schema.FEATURES}" for s in self.layers]
                + [f"{out}/{v}" for v in (schema.LOGITS, schema.PRED, schema.TARGET,
                                           schema.PERTURBATION_NORM)])

    def block_keys(self, split: str, checkpoint: int, condition: int, block: int) -> list[str]:
        """Storage keys of the chunks a block writes (trailing chunk indices are 0)."""
        return [chunk_key(path, (checkpoint, condition, block) + (0,) * (self._ndim[path] - 3))
                for path in self.block_arrays(split)]

    @functools.cached_property
    def _ndim(self) -> dict[str, int]:
        return {f"{g.path}/{name}": len(a.shape) for g in self.groups
                for name, a in g.arrays.items()}

    # ------------------------------------------------------------------ groups
    def _coords(self, split) -> dict[str, ArraySpec]:
        idx, y = self.samples[split]
        conds = np.array([c["name"] for c in self.conditions], dtype=object)
        return {schema.CHECKPOINT: _coord(schema.CHECKPOINT, np.array(self.checkpoints, np.int64)),
                schema.CONDITION: _coord(schema.CONDITION, conds),
                schema.SAMPLE: _coord(schema.SAMPLE, np.asarray(idx, np.int64)),
                # a non-dimension coordinate: data arrays name it in their "coordinates"
                schema.LABEL: _coord(schema.SAMPLE, np.asarray(y, np.int32))}

    def _split_group(self, path, split, data: dict, attrs=None) -> Group:
        """A group of ``split``: the data arrays (dims, width, dtype) plus the coordinates."""
        k, q, n = len(self.checkpoints), len(self.conditions), len(self.samples[split][0])
        cs = self.split_chunk(split)
        arrays = {name: ArraySpec((schema.CHECKPOINT, schema.CONDITION, schema.SAMPLE) + extra,
                                  (k, q, n) + tuple(width), dtype, (1, 1, cs) + tuple(width),
                                  attrs={"coordinates": schema.LABEL})
                  for name, (extra, width, dtype) in data.items()}
        return Group(path, attrs or {}, {**arrays, **self._coords(split)})

    @functools.cached_property
    def groups(self) -> list[Group]:
        """Every group below the root: per split one per layer and the outputs, and the
        classifier."""
        out = []
        for split in self.samples:
            out += [self._split_group(
                schema.features_path(split, spec.name), split,
                {schema.FEATURES: ((schema.FEATURE,), (spec.dim,), self.dtype)},
                {"layer": spec.name, "depth": spec.depth, "module": spec.module,
                 "original_shape": list(spec.original_shape), "reduction": spec.reduction})
                for spec in self.layers]
            out.append(self._split_group(schema.outputs_path(split), split, {
                schema.LOGITS: ((schema.CLASS,), (self.n_classes,), np.dtype(np.float32)),
                schema.PRED: ((), (), np.dtype(np.int32)),
                schema.TARGET: ((), (), np.dtype(np.int32)),
                schema.PERTURBATION_NORM: ((), (), np.dtype(np.float32))}))
        if self.classifier is not None:
            layer, dim = self.classifier
            k, c = len(self.checkpoints), self.n_classes
            f32 = np.dtype(np.float32)
            out.append(Group(schema.CLASSIFIER_GROUP, {"layer": layer}, {
                schema.WEIGHT: ArraySpec((schema.CHECKPOINT, schema.CLASS, schema.FEATURE),
                                         (k, c, dim), f32,
                                    (1, c, dim)),
                schema.BIAS: ArraySpec((schema.CHECKPOINT, schema.CLASS), (k, c), f32, (1, c)),
                schema.CHECKPOINT: _coord(schema.CHECKPOINT,
                                          np.array(self.checkpoints, np.int64))}))
        return out

    def chunk_keys(self) -> list[str]:
        """Storage key of every chunk of every array (coordinates included)."""
        keys = []
        for group in self.groups:
            for name, a in group.arrays.items():
                grid = [math.ceil(n / c) for n, c in zip(a.shape, a.chunks, strict=True)]
                keys += [chunk_key(f"{group.path}/{name}", ix) for ix in np.ndindex(*grid)]
        return keys

    # ------------------------------------------------------------------ creation
    def files(self) -> dict[str, bytes]:
        """Every file of the hierarchy below the root: metadata documents and coordinate
        chunks, by path relative to the store.

        zarr builds them in a memory store whose dict is ours (public API only); each distinct
        array (the coordinates repeat in every group of a split) is built once and its files
        copied to every path that has it: a metadata document holds no path.
        """
        built: dict = {}
        mem = zarr.storage.MemoryStore(built)
        root = zarr.create_group(mem, zarr_format=3)
        files, made = {}, {}

        def copy(src: str, dst: str) -> None:
            for key, buf in built.items():
                if key == f"{src}/zarr.json" or key.startswith(f"{src}/c/"):
                    files[f"{dst}{key[len(src):]}"] = buf.to_bytes()

        nodes = set()
        for j, group in enumerate(self.groups):
            root.create_group(f"g{j}", attributes=group.attrs)
            copy(f"g{j}", group.path)
            nodes |= {group.path, *(f"{group.path}/{name}" for name in group.arrays)}
            for name, a in group.arrays.items():
                key = (name, a.dims, a.shape, a.dtype, a.chunks, tuple(a.attrs.items()),
                       None if a.values is None else
                       tuple(a.values) if a.values.dtype == object else a.values.tobytes())
                if key not in made:
                    made[key] = f"a{len(made)}"
                    array = root.create_array(
                        made[key], shape=a.shape, chunks=a.chunks,
                        dtype=str if a.dtype == object else a.dtype,
                        fill_value=np.nan if a.dtype.kind == "f" else None,
                        dimension_names=a.dims, attributes=a.attrs,
                        compressors=(self.compressors if name in (schema.FEATURES, schema.LOGITS)
                                     else compressors("lz4")),
                        chunk_key_encoding=CHUNK_KEY_ENCODING,
                        # every chunk must exist on disk, also one equal to the fill value
                        # (checkpoint 0): chunk presence is how completeness is verified
                        config={"write_empty_chunks": True})
                    if a.values is not None:
                        array[...] = a.values
                copy(made[key], f"{group.path}/{name}")
        root.create_group("plain")  # parents that are not groups of their own ("train/layers")
        for path in nodes:
            parts = path.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) not in nodes:
                    copy("plain", "/".join(parts[:i]))
        return files

    def create(self, path: str) -> None:
        """Create every group and array below the existing root group at ``path`` and write
        the coordinates: a few dozen small files, written directly (local disk) or in one
        concurrent batch (fsspec), not one zarr round trip per array."""
        filesystem, root = fs.filesystem(path)
        files = {f"{root.rstrip('/')}/{k}": v for k, v in self.files().items()}
        if fs.is_local(path):
            for name, blob in files.items():
                Path(name).parent.mkdir(parents=True, exist_ok=True)
                Path(name).write_bytes(blob)
        else:
            filesystem.pipe(files)
