"""Write whole chunks of arrays in a local zarr store as files, without zarr's write path.

zarr's ``array[...] = x`` goes through its event loop and thread pools: ~1.5 ms of Python
per chunk whatever its size, holding the GIL. Extraction writes from a background thread
while the model loop runs in the main one, and for small models that Python time slowed the
loop measurably. A chunk file is fully defined by the zarr v3 specification (the ``bytes``
codec's little-endian C-order array, then the ``blosc`` and ``crc32c`` codecs, at the key of
the chunk key encoding), so for exactly those codecs on a local store we encode and write it
here; tests check the files are byte-for-byte those zarr writes. Anything else (object
stores, other codecs) returns ``None`` from :func:`chunk_file_writer` and the caller uses
zarr.

The byte comparison can only vouch for the zarr releases it ran against (:data:`TESTED_ZARR`).
Under any other zarr, or with ``NCPROBE_CHUNK_WRITES=zarr`` in the environment, every chunk
goes through zarr's public API instead: slower, never wrong. The store says which path wrote
it (root attribute ``chunk_writes``, docs/store.md).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc

from . import fs
from .reader import StoreError

#: zarr releases (major.minor) whose chunk files tests/store/test_chunk_file.py compared byte
#: for byte with ours; under any other zarr, chunks are written through zarr's API
TESTED_ZARR = ("3.1",)
#: environment variable: ``zarr`` writes every chunk through zarr's API, ``auto`` (the default)
#: writes chunk files directly where the installed zarr is one of :data:`TESTED_ZARR`
WRITES_ENV = "NCPROBE_CHUNK_WRITES"


def direct_writes() -> bool:
    """Whether ncprobe may write chunk files itself: the installed zarr is one the byte
    comparison ran against and ``NCPROBE_CHUNK_WRITES`` does not ask for zarr's API."""
    choice = os.environ.get(WRITES_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "zarr"):
        raise StoreError(f"{WRITES_ENV}={os.environ[WRITES_ENV]!r} is not a chunk write path; "
                         "expected 'auto' or 'zarr'")
    return choice == "auto" and ".".join(zarr.__version__.split(".")[:2]) in TESTED_ZARR


def writes_record(direct: bool) -> str:
    """What the store's ``chunk_writes`` attribute says of the path that wrote its chunks."""
    if direct:
        tested = ", ".join(TESTED_ZARR)
        return f"ncprobe chunk files (zarr {zarr.__version__}, byte-compared with zarr {tested})"
    return f"zarr {zarr.__version__} API"

_SHUFFLE = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE,
            "bitshuffle": Blosc.BITSHUFFLE}


class ChunkFileWriter:
    """Encode and atomically write whole chunks of one array of a local store."""

    def __init__(self, array: zarr.Array, root: Path, blosc: Blosc | None):
        self._array = array
        self._dir = Path(root) / array.path
        self._blosc = blosc
        self._dtype = array.dtype.newbyteorder("<")
        self._chunks = array.chunks

    def encode(self, values: np.ndarray) -> bytes:
        """The stored bytes of a chunk holding ``values`` (an edge chunk's values are padded
        with the array's fill value to the full chunk shape, as zarr does)."""
        values = np.asarray(values, self._dtype)
        if values.shape != self._chunks:
            full = np.full(self._chunks, self._array.fill_value, self._dtype)
            full[tuple(slice(0, n) for n in values.shape)] = values
            values = full
        raw = np.ascontiguousarray(values)
        data = raw.tobytes() if self._blosc is None else bytes(self._blosc.encode(raw))
        return data + google_crc32c.value(data).to_bytes(4, "little")

    def write(self, coords: tuple, values: np.ndarray) -> None:
        """Replace the chunk at grid ``coords`` with ``values``; readers see the old file or
        the new one, never a partial one (the temporary file is named like zarr's own)."""
        path = self._dir / self._array.metadata.encode_chunk_key(coords)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
        try:
            with open(tmp, "wb") as f:
                f.write(self.encode(values))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def chunk_file_writer(array: zarr.Array, root) -> ChunkFileWriter | None:
    """A :class:`ChunkFileWriter` for ``array`` of the store at ``root``, or None when that
    store is not a local folder, the codecs are not exactly ``bytes`` (little-endian),
    optional ``blosc``, ``crc32c``, or :func:`direct_writes` is false.

    Only public zarr API: ``Array.path``, ``Array.metadata.to_dict()`` and
    ``Array.metadata.encode_chunk_key``; tests/store/test_chunk_file.py compares the files byte for
    byte with zarr's own, so a zarr that changes its encoding fails there, not silently.
    """
    if not fs.is_local(root) or not direct_writes():
        return None
    root = Path(fs.filesystem(root)[1])
    if array.dtype.kind not in "fiub" or array.dtype.itemsize > 8:
        return None
    codecs = array.metadata.to_dict()["codecs"]
    names = [c["name"] for c in codecs]
    if names not in (["bytes", "crc32c"], ["bytes", "blosc", "crc32c"]):
        return None
    if array.dtype.itemsize > 1 and codecs[0]["configuration"].get("endian") != "little":
        return None
    blosc = None
    if names[1] == "blosc":
        cfg = codecs[1]["configuration"]
        blosc = Blosc(cname=cfg["cname"], clevel=cfg["clevel"], shuffle=_SHUFFLE[cfg["shuffle"]],
                      blocksize=cfg["blocksize"], typesize=cfg["typesize"])
    return ChunkFileWriter(array, root, blosc)
