"""Open and validate ncprobe stores lazily, with errors a user can act on.

A store is a zarr (format 3) directory or fsspec URL holding an ``xarray.DataTree``. Complete
stores carry consolidated metadata, so plain ``xarray.open_datatree(path, engine="zarr")`` opens
them without warnings; stores still being written do not, and are opened unconsolidated here.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
import zarr

from ..errors import NcprobeError
from . import fs, schema


class StoreError(NcprobeError):
    """A store cannot be used as asked; the message says what is wrong and what was expected."""


class SchemaError(StoreError):
    """The store's ``schema`` attribute is missing or not one this version understands."""


class IncompleteStoreError(StoreError):
    """The store is still being written (or was interrupted); the message lists what is missing."""


class NotInStoreError(StoreError, KeyError):
    """A split, layer or condition does not exist; the message lists those that do."""

    def __str__(self):  # KeyError would otherwise quote the message
        return str(self.args[0])


def _open_group(path, mode="r"):
    try:
        return zarr.open_group(path, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, ValueError):
        # which of these zarr raises for a missing store differs between its releases
        what = "nothing is there" if not fs.exists(path) else "it holds no zarr group"
        raise StoreError(f"no zarr store at {str(path)!r} ({what}); expected a directory "
                         "written by ncprobe's extraction or analysis") from None


def root_attrs(path) -> dict:
    """The root attributes of the store at ``path`` (no arrays are read)."""
    return dict(_open_group(path).attrs)


def check_schema(attrs: dict, expected: str, path) -> None:
    got = attrs.get("schema")
    if got == expected:
        return
    if got in schema.SUPERSEDED:
        raise SchemaError(f"store {str(path)!r} has schema {got!r}, written by an older "
                          f"ncprobe: {schema.SUPERSEDED[got]} (expected {expected!r})")
    family = expected.rsplit("/", 1)[0]
    hint = (" (written by a newer ncprobe? upgrade)"
            if isinstance(got, str) and got.startswith(family) else "")
    raise SchemaError(f"store {str(path)!r} has schema {got!r}{hint}; expected {expected!r}")


def _arrays(path, prefix: str = ""):
    """(path, zarr.Array) of every array under ``prefix`` of the store, depth first."""
    out = []

    def walk(group, at):
        for name, member in group.members():
            full = f"{at}{name}"
            if isinstance(member, zarr.Array):
                out.append((full, member))
            else:
                walk(member, full + "/")

    root = zarr.open_group(path, mode="r", use_consolidated=False)
    walk(root[prefix] if prefix else root, f"{prefix}/" if prefix else "")
    return out


def store_arrays(path) -> dict:
    """Every array of a zarr store read into memory, by path within the store: for comparing
    two stores array by array (bitwise with ``np.array_equal``)."""
    return {name: array[...] for name, array in _arrays(str(path))}


def _chunk_keys(array):
    """(chunk coordinates, storage key) of every chunk of ``array``, in the array's own chunk
    key encoding (format 3 ``c/i/j``, format 2 ``i.j``)."""
    for coords in np.ndindex(*array.cdata_shape):
        yield coords, f"{array.path}/{array.metadata.encode_chunk_key(coords)}"


def missing_chunks(path, prefix: str = "") -> list[str]:
    """``"<array>: k of n chunks (first missing: chunk (i, j, ...))"`` for every array of the
    store that is not fully written."""
    out = []
    for name, array in _arrays(path, prefix):
        stored = fs.list_keys(path, array.path)
        missing = [c for c, key in _chunk_keys(array) if key not in stored]
        if missing:
            out.append(f"{name}: {array.nchunks - len(missing)} of {array.nchunks} chunks "
                       f"(first missing: chunk {missing[0]})")
    return out


def bad_chunks(path, prefix: str = "") -> list[tuple]:
    """Read every chunk under ``prefix``; ``(array, chunk coords, storage key, problem)`` for
    each one that is missing or fails to decode (checksum mismatch, truncated, garbled)."""
    bad = []
    for name, array in _arrays(path, prefix):
        stored = fs.list_keys(path, array.path)
        for coords, key in _chunk_keys(array):
            if key not in stored:
                bad.append((name, coords, key, "missing"))
                continue
            sel = tuple(slice(c * s, (c + 1) * s) for c, s in zip(coords, array.chunks,
                                                                  strict=True))
            try:
                array[sel]
            except Exception as e:  # noqa: BLE001 - any decode failure is corruption
                first = str(e).splitlines()[0][:80] if str(e) else "unreadable"
                bad.append((name, coords, key, f"{type(e).__name__}: {first}"))
    return bad


def verify_chunks(path, prefix: str = "") -> list[str]:
    """One line per missing or undecodable chunk, naming the array and the chunk; an empty
    list means every chunk is present and passes its checksum."""
    return [f"{name} chunk {coords}: {problem}" for name, coords, _, problem in
            bad_chunks(path, prefix)]


def delete_chunks(path, keys) -> None:
    """Remove the given storage keys (corrupt chunks) so that a resumed write redoes them."""
    fs.remove_keys(path, keys)


def _missing_groups(path, attrs) -> list[str]:
    group = zarr.open_group(path, mode="r", use_consolidated=False)
    expected = [schema.features_path(s, layer) for s in attrs.get("dataset", {}).get("splits", [])
                for layer in attrs.get("layers", [])]
    missing = []
    for p in expected:
        try:
            group[p]
        except KeyError:
            missing.append(p)
    return missing


def open_tree(path, expected_schema: str, allow_partial: bool = False) -> xr.DataTree:
    """Open a store lazily (dask arrays chunked as stored) after checking schema and completeness.

    Parameters
    ----------
    path : str or os.PathLike
        Store directory or fsspec URL.
    expected_schema : str
        :data:`schema.ACTIVATIONS_SCHEMA` or :data:`schema.METRICS_SCHEMA`.
    allow_partial : bool
        Open a store whose ``complete`` attribute is false; otherwise raise
        :class:`IncompleteStoreError` naming the groups and arrays that are missing.

    Raises
    ------
    StoreError
        For every store that cannot be used, naming its path (also when zarr or xarray cannot
        parse its metadata).
    """
    try:
        return _open_tree(path, expected_schema, allow_partial)
    except NcprobeError:
        raise
    except (ValueError, KeyError, OSError, TypeError) as e:
        raise StoreError(f"store {str(path)!r} cannot be read: {type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]}") from None


def _open_tree(path, expected_schema: str, allow_partial: bool) -> xr.DataTree:
    attrs = root_attrs(path)
    check_schema(attrs, expected_schema, path)
    complete = bool(attrs.get("complete", False))
    if not complete and not allow_partial:
        missing = _missing_groups(path, attrs) + missing_chunks(path)
        what = "; ".join(missing[:8]) + (f"; and {len(missing) - 8} more" if len(missing) > 8
                                         else "")
        raise IncompleteStoreError(
            f"store {str(path)!r} is incomplete (interrupted or still being written); missing: "
            f"{what or 'the final verification'}; rerun the command to finish it, or pass "
            "`allow_partial` to use what is there")
    if complete and expected_schema == schema.ACTIVATIONS_SCHEMA and "fingerprint" in attrs:
        # a store that ncprobe wrote has every chunk on disk, so one that claims completeness
        # but lost a chunk must not read as NaN or zeros; other writers (zarr's default) leave
        # out chunks equal to the fill value, which is no loss
        lost = missing_chunks(path)
        if lost:
            raise StoreError(f"store {str(path)!r} is marked complete but chunks are missing: "
                             f"{'; '.join(lost[:3])}; rerun the extraction with `repair` to "
                             "rewrite them")
    # a store being written must not trust a stale consolidated copy; a complete one uses
    # its consolidated metadata when it has some (ours do, other writers' may not)
    consolidated = complete and _has_consolidated(path)
    return xr.open_datatree(path, engine="zarr", chunks={}, consolidated=consolidated)


def _has_consolidated(path) -> bool:
    """Whether the store has consolidated metadata (format 3 in zarr.json, 2 in .zmetadata)."""
    try:
        zarr.open_group(path, mode="r", use_consolidated=True)
    except (ValueError, KeyError, FileNotFoundError):
        return False
    return True


def open_activations(path, allow_partial: bool = False) -> xr.DataTree:
    """Open an activation store (``ncprobe-activations/1``) lazily and validate its layout."""
    tree = open_tree(path, schema.ACTIVATIONS_SCHEMA, allow_partial)
    validate_activations(tree, allow_partial=allow_partial)
    return tree


def open_metrics(path) -> xr.DataTree:
    """Open a metrics store (``ncprobe-metrics/2``) lazily and check its groups."""
    tree = open_tree(path, schema.METRICS_SCHEMA)
    for g in (schema.SUMMARY_GROUP, schema.PER_CLASS_GROUP, schema.TRANSITIONS_GROUP):
        if g not in tree.children:
            raise StoreError(f"metrics store lacks group /{g}; expected /summary, /per_class, "
                             "/transitions")
    return tree


def splits(tree: xr.DataTree) -> list[str]:
    """Names of the dataset splits present in an activation store, in the dataset's order."""
    present = [k for k, v in tree.children.items() if schema.LAYERS_GROUP in v.children]
    order = list(tree.attrs.get("dataset", {}).get("splits", []))
    return sorted(present, key=lambda s: (order.index(s) if s in order else len(order), s))


def layers(tree: xr.DataTree) -> list[str]:
    """Layer names in depth order, as the root attribute ``layers`` lists them."""
    return list(tree.attrs.get("layers", []))


def _choose(kind, name, available, where):
    if name not in available:
        raise NotInStoreError(f"{kind} {name!r} not in {where}; available: "
                              f"{', '.join(map(str, available)) or 'none'}")


def layer_dataset(tree: xr.DataTree, split: str, layer: str) -> xr.Dataset:
    """The ``features`` Dataset of one split and layer, with one-line errors for bad names."""
    _choose("split", split, splits(tree), "store")
    present = list(tree[split][schema.LAYERS_GROUP].children)
    _choose("layer", layer, present, f"split {split!r}")
    return tree[schema.features_path(split, layer)].to_dataset()


def load_variables(location, group: str, names) -> xr.Dataset:
    """The arrays ``names`` of ``group`` of the store at ``location``, read into memory.

    Each array is read at once, not by one dask task per chunk: per-sample arrays (labels,
    predictions, targets) are chunked like the features, so a large N gives thousands of tiny
    chunks. Their chunk files are read directly where the store allows it
    (:func:`~.chunk_file.read_array`), else by one zarr call per array. Nothing else of the
    group is read.
    """
    from .chunk_file import read_array  # it imports this module's errors

    with xr.open_dataset(location, group=group, engine="zarr", chunks=None,
                         consolidated=False) as ds:
        out = ds[list(names)]
        for name in names:
            values = read_array(location, f"{group}/{name}")
            if values is not None:
                out[name] = out[name].copy(data=values)
        return out.load()


def select_conditions(ds: xr.Dataset, conditions) -> xr.Dataset:
    """``ds`` restricted to ``conditions``; an unknown name gets a one-line error."""
    available = [str(c) for c in ds[schema.CONDITION].values]
    for c in conditions:
        _choose("condition", c, available, "store")
    return ds.sel({schema.CONDITION: list(conditions)})


def validate_activations(tree: xr.DataTree, allow_partial: bool = False) -> None:
    """Check the layout of docs/store.md: groups, dims and attributes; raise :class:`StoreError`."""
    attrs = tree.attrs
    for key in ("n_classes", "layers", "dataset"):
        if key not in attrs:
            raise StoreError(f"activation store lacks root attribute {key!r}; expected "
                             f"{', '.join(schema.ROOT_ATTRS)}")
    found = splits(tree)
    if not found and not allow_partial:
        raise StoreError("activation store has no split groups (/<split>/layers/<layer>)")
    dims = (schema.CHECKPOINT, schema.CONDITION, schema.SAMPLE, schema.FEATURE)
    for split in found:
        for layer, node in tree[split][schema.LAYERS_GROUP].children.items():
            if schema.FEATURES not in node.data_vars:
                raise StoreError(f"{schema.features_path(split, layer)} lacks variable 'features'")
            got = node[schema.FEATURES].dims
            if got != dims:
                raise StoreError(f"{schema.features_path(split, layer)}/features has dims {got}; "
                                 f"expected {dims}")
            if schema.LABEL not in node.coords:
                raise StoreError(f"{schema.features_path(split, layer)} lacks coordinate 'label'")
        if schema.OUTPUTS_GROUP not in tree[split].children and not allow_partial:
            raise StoreError(f"activation store lacks group /{schema.outputs_path(split)}")
