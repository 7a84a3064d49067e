"""Store locations as local paths or fsspec URLs (``s3://``, ``gs://``, ``memory://`` ...).

zarr and xarray open URLs themselves; this module covers what ncprobe does around them:
existence checks, deletion, renaming and sibling paths, on any fsspec filesystem.
"""

from __future__ import annotations

import fsspec


def filesystem(location):
    """``(fs, path)`` for a local path or an fsspec URL."""
    return fsspec.core.url_to_fs(str(location))


def is_local(location) -> bool:
    fs, _ = filesystem(location)
    return "file" in fs.protocol or "local" in fs.protocol


def exists(location) -> bool:
    fs, path = filesystem(location)
    return fs.exists(path)


def is_empty_dir(location) -> bool:
    fs, path = filesystem(location)
    return fs.isdir(path) and not fs.ls(path, detail=False)


def remove(location) -> None:
    fs, path = filesystem(location)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def sibling(location, name: str) -> str:
    """The location ``name`` in the same folder as ``location`` (URL scheme kept)."""
    text = str(location).rstrip("/")
    head, _, _ = text.rpartition("/")
    return f"{head}/{name}" if head else name


def basename(location) -> str:
    return str(location).rstrip("/").rpartition("/")[2]


def list_keys(location, prefix: str = "") -> set[str]:
    """Paths of every file under ``prefix`` of the store at ``location``, relative to it
    (zarr's storage keys, such as ``train/layers/l0/features/c/0/0/0/0``)."""
    fs, root = filesystem(location)
    base = root.rstrip("/")
    start = f"{base}/{prefix}".rstrip("/") if prefix else base
    if not fs.exists(start):
        return set()
    return {p[len(base) + 1:] for p in fs.find(start)}


def remove_keys(location, keys) -> None:
    """Delete the files of the given storage keys of the store at ``location``."""
    fs, root = filesystem(location)
    for key in keys:
        fs.rm(f"{root.rstrip('/')}/{key}")
