"""Read and write whole chunks of arrays in a local zarr store as files, without zarr's
asynchronous path.

zarr's ``array[...] = x`` goes through its event loop and thread pools: ~1.5 ms of Python
per chunk whatever its size, holding the GIL. Extraction writes from a background thread
while the model loop runs in the main one, and for small models that Python time slowed the
loop measurably. Reading is the mirror image: zarr 3.1 checks each chunk's checksum and copies
it into the result on its one event-loop thread, so dask threads that read at once wait for
each other there (docs/store.md, "Reading chunks"). A chunk file is fully defined by the zarr
v3 specification (the ``bytes`` codec's little-endian C-order array, then the ``blosc`` and
``crc32c`` codecs, at the key of the chunk key encoding), so for exactly those codecs on a
local store we encode and write it, and read, check and decode it in the calling thread,
here; tests check the files are byte-for-byte those zarr writes and the values those zarr
reads. Anything else (object stores, other codecs) returns ``None`` from
:func:`chunk_file_writer` and :func:`chunk_file_reader`, and the caller uses zarr.

The byte comparison can only vouch for the zarr releases it ran against (:data:`TESTED_ZARR`).
Under any other zarr, or with ``NCPROBE_CHUNK_WRITES=zarr`` (``NCPROBE_CHUNK_READS=zarr``) in
the environment, every chunk goes through zarr's public API instead: slower, never wrong. The
store says which path wrote it (root attribute ``chunk_writes``, docs/store.md).
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
#: the same for reading: ``zarr`` reads every chunk through zarr's API
READS_ENV = "NCPROBE_CHUNK_READS"


def _direct(env: str, what: str) -> bool:
    choice = os.environ.get(env, "auto").strip().lower() or "auto"
    if choice not in ("auto", "zarr"):
        raise StoreError(f"{env}={os.environ[env]!r} is not a chunk {what} path; expected "
                         "'auto' or 'zarr'")
    return choice == "auto" and ".".join(zarr.__version__.split(".")[:2]) in TESTED_ZARR


def direct_writes() -> bool:
    """Whether ncprobe may write chunk files itself: the installed zarr is one the byte
    comparison ran against and ``NCPROBE_CHUNK_WRITES`` does not ask for zarr's API."""
    return _direct(WRITES_ENV, "write")


def direct_reads() -> bool:
    """Whether ncprobe may read chunk files itself: as :func:`direct_writes`, with
    ``NCPROBE_CHUNK_READS``."""
    return _direct(READS_ENV, "read")


def writes_record(direct: bool) -> str:
    """What the store's ``chunk_writes`` attribute says of the path that wrote its chunks."""
    if direct:
        tested = ", ".join(TESTED_ZARR)
        return f"ncprobe chunk files (zarr {zarr.__version__}, byte-compared with zarr {tested})"
    return f"zarr {zarr.__version__} API"


class CorruptChunkError(StoreError, ValueError):
    """A chunk file whose CRC-32C does not match its contents (a ValueError, as zarr's)."""


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


def _blosc_of(array: zarr.Array, root) -> tuple[Path, Blosc | None] | None:
    """(the store's local folder, the array's Blosc codec or None) when ``array`` is one whose
    chunk files this module reads and writes: a local store in zarr format 3, a numeric dtype,
    codecs exactly ``bytes`` (little-endian), optional ``blosc``, ``crc32c``. None otherwise."""
    if not fs.is_local(root) or array.metadata.zarr_format != 3:
        return None
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
    return Path(fs.filesystem(root)[1]), blosc


def chunk_file_writer(array: zarr.Array, root) -> ChunkFileWriter | None:
    """A :class:`ChunkFileWriter` for ``array`` of the store at ``root``, or None when that
    store is not a local folder, the codecs are not exactly ``bytes`` (little-endian),
    optional ``blosc``, ``crc32c``, or :func:`direct_writes` is false.

    Only public zarr API: ``Array.path``, ``Array.metadata.to_dict()`` and
    ``Array.metadata.encode_chunk_key``; tests/store/test_chunk_file.py compares the files byte for
    byte with zarr's own, so a zarr that changes its encoding fails there, not silently.
    """
    found = _blosc_of(array, root) if direct_writes() else None
    return None if found is None else ChunkFileWriter(array, *found)


class ChunkFileReader:
    """Whole chunks of one array of a local store, read, checked and decoded in the calling
    thread, as dask reads an array: ``shape``, ``dtype``, ``ndim`` and ``reader[slices]``.

    A selection of one whole chunk (all dask asks for, with the stored chunks) reads that
    chunk's file: its CRC-32C is checked (a mismatch raises :class:`CorruptChunkError`, a
    ValueError as zarr's) and Blosc decodes it straight into the array returned. A chunk with
    no file is the fill value, as in zarr. Any other selection is read through zarr.
    """

    def __init__(self, array: zarr.Array, root: Path, blosc: Blosc | None):
        self.shape, self.chunks, self.ndim = array.shape, array.chunks, array.ndim
        self.dtype = array.dtype
        self._stored = array.dtype.newbyteorder("<")
        self._fill = array.fill_value
        self._root, self._path = Path(root), array.path
        self._metadata = array.metadata
        self._blosc = blosc

    def __dask_tokenize__(self):
        return (type(self).__name__, str(self._root), self._path, self.shape, self.chunks,
                str(self.dtype))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        coords = self._chunk_of(key)
        if coords is None:
            return zarr.open_array(str(self._root), path=self._path, mode="r")[key]
        extent = tuple(slice(0, s.stop - s.start) for s in key)
        return self.read(coords)[extent]

    def _chunk_of(self, key) -> tuple | None:
        """The grid coordinates of the chunk that ``key`` selects whole, or None."""
        if len(key) != self.ndim:
            return None
        coords = []
        for s, n, c in zip(key, self.shape, self.chunks, strict=True):
            if not isinstance(s, slice) or s.step not in (None, 1):
                return None
            start, stop, _ = s.indices(n)
            if start % c or stop != min(start + c, n):
                return None
            coords.append(start // c)
        return tuple(coords)

    def read(self, coords: tuple) -> np.ndarray:
        """The chunk at grid ``coords``, its full stored shape (an edge chunk's padding
        included)."""
        key = self._metadata.encode_chunk_key(coords)
        try:
            with open(self._root / self._path / key, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return np.full(self.chunks, self._fill, self.dtype)
        body = np.frombuffer(data, np.uint8)[:-4]  # a view: google_crc32c takes no memoryview
        if len(data) < 4 or google_crc32c.value(body).to_bytes(4, "little") != data[-4:]:
            where = "/".join(filter(None, (self._path, key)))
            raise CorruptChunkError(
                f"store {str(self._root)!r}: chunk {where} is corrupt (its stored and computed "
                "CRC-32C checksums differ); rerun the extraction with the same settings and "
                "`repair` to rewrite it")
        out = np.empty(self.chunks, self._stored)
        if self._blosc is None:
            out.reshape(-1).view(np.uint8)[:] = body
        else:
            self._blosc.decode(body, out=out)
        return out if out.dtype == self.dtype else out.astype(self.dtype)


def chunk_file_reader(array: zarr.Array, root) -> ChunkFileReader | None:
    """A :class:`ChunkFileReader` for ``array`` of the store at ``root``, or None when
    :func:`chunk_file_writer` would give none (with :func:`direct_reads` in place of
    :func:`direct_writes`); tests/store/test_chunk_file.py compares its values with zarr's."""
    found = _blosc_of(array, root) if direct_reads() else None
    return None if found is None else ChunkFileReader(array, *found)


def chunk_file_array(root, path: str):
    """The array at ``path`` of the store at ``root`` as a dask array of its stored chunks
    whose tasks read chunk files (:class:`ChunkFileReader`), or None where zarr must read it."""
    array = zarr.open_array(str(root), path=path, mode="r")
    reader = chunk_file_reader(array, root)
    if reader is None:
        return None
    import dask.array as da  # only where it is read: extraction imports this module too

    return da.from_array(reader, chunks=array.chunks, asarray=False, lock=False,
                         inline_array=True, meta=np.empty((0,) * array.ndim, array.dtype))


def read_array(root, path: str) -> np.ndarray | None:
    """The whole array at ``path`` of the store at ``root``, chunk file by chunk file
    (:class:`ChunkFileReader`), or None where zarr must read it: for the per-sample arrays
    (labels, predictions), thousands of small chunks, each a few microseconds here against
    about 0.4 ms of zarr's event loop."""
    array = zarr.open_array(str(root), path=path, mode="r")
    reader = chunk_file_reader(array, root)
    if reader is None:
        return None
    out = np.empty(array.shape, array.dtype)
    for coords in np.ndindex(*array.cdata_shape):
        at = tuple(slice(c * n, min((c + 1) * n, size))
                   for c, n, size in zip(coords, array.chunks, array.shape, strict=True))
        out[at] = reader[at]
    return out

