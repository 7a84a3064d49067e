"""Direct chunk files: byte-for-byte what zarr writes, and readable by zarr; read back by
ncprobe with the values zarr reads; unsupported arrays fall back to zarr."""

import pickle

import numpy as np
import pytest
import zarr

from ncprobe.data.store import StoreError
from ncprobe.data.store.chunk_file import (
    READS_ENV,
    CorruptChunkError,
    chunk_file_array,
    chunk_file_reader,
    chunk_file_writer,
    read_array,
)
from ncprobe.data.store.layout import CHUNK_KEY_ENCODING, compressors
from ncprobe.data.store.writer import writable_array


def _pair(tmp_path, dtype, compression, chunks=(1, 1, 16, 5), shape=(2, 3, 40, 5)):
    kw = dict(shape=shape, chunks=chunks, dtype=dtype, compressors=compressors(compression),
              fill_value=np.nan if np.dtype(dtype).kind == "f" else None,
              chunk_key_encoding=CHUNK_KEY_ENCODING)
    ours = zarr.create_array(str(tmp_path / "ours"), **kw)
    zarr.create_array(str(tmp_path / "theirs"), **kw)
    theirs = writable_array(zarr.open_group(str(tmp_path), mode="a"), "theirs")
    return ours, theirs


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32"])
@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_chunk_files_equal_zarr_bytes_and_read_back(tmp_path, dtype, compression):
    ours, theirs = _pair(tmp_path, dtype, compression)
    direct = chunk_file_writer(ours, tmp_path / "ours")
    assert direct is not None
    rng = np.random.default_rng(0)
    full = np.maximum(rng.standard_normal((2, 3, 40, 5)), 0).astype(dtype)  # ReLU-like zeros
    if full.dtype.kind == "f":
        full[0, 1, 3, 2] = np.nan
    for k, q, b in np.ndindex(2, 3, 3):
        lo, hi = b * 16, min(40, (b + 1) * 16)  # the last chunk is an edge chunk (8 rows)
        direct.write((k, q, b, 0), full[k, q, lo:hi][None, None])
        theirs[k, q, lo:hi] = full[k, q, lo:hi]
    for k, q, b in np.ndindex(2, 3, 3):
        key = f"c/{k}/{q}/{b}/0"
        assert (tmp_path / "ours" / key).read_bytes() == (tmp_path / "theirs" / key).read_bytes()
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "ours"))[...], full)
    assert not list((tmp_path / "ours").rglob("*.partial"))


def test_rewrite_replaces_a_chunk(tmp_path):
    ours, _ = _pair(tmp_path, "float32", "lz4")
    direct = chunk_file_writer(ours, tmp_path / "ours")
    direct.write((0, 0, 0, 0), np.zeros((1, 1, 16, 5)))
    direct.write((0, 0, 0, 0), np.ones((1, 1, 16, 5)))
    assert (zarr.open_array(str(tmp_path / "ours"))[0, 0, :16] == 1).all()


def test_unsupported_arrays_fall_back_to_zarr(tmp_path):
    """Neither written nor read as chunk files: a store that is not local, another codec,
    strings, zarr format 2."""
    unsupported = {
        "memory://x": zarr.create_array("memory://x", shape=(4,), chunks=(4,), dtype="f4",
                                        compressors=compressors("lz4")),
        tmp_path / "gz": zarr.create_array(str(tmp_path / "gz"), shape=(4,), chunks=(4,),
                                           dtype="f4", compressors=[zarr.codecs.GzipCodec()]),
        tmp_path / "s": zarr.create_array(str(tmp_path / "s"), shape=(2,), chunks=(2,),
                                          dtype=str),
        tmp_path / "v2": zarr.create_array(str(tmp_path / "v2"), shape=(4,), chunks=(4,),
                                           dtype="f4", zarr_format=2)}
    for root, array in unsupported.items():
        assert chunk_file_writer(array, root) is None, root
        assert chunk_file_reader(array, root) is None, root
    assert chunk_file_array(tmp_path, "gz") is None and read_array(tmp_path, "gz") is None


def test_only_public_zarr_api_is_used():
    """No ncprobe module imports zarr's private modules (zarr.core.*): the layout, listing and
    chunk files use public API only. setup.cfg bounds zarr to the versions tested."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = [str(p.relative_to(root)) for folder in ("data", "extract", "analyze", "plots")
                 for p in (root / folder).rglob("*.py")
                 if re.search(r"(from|import) zarr\.core|store_path", p.read_text())]
    assert not offenders, offenders


def _written(tmp_path, dtype, compression):
    """An array of ours written chunk file by chunk file, one chunk left unwritten (the fill
    value where it would be), and the values zarr reads back."""
    ours, _ = _pair(tmp_path, dtype, compression)
    direct = chunk_file_writer(ours, tmp_path / "ours")
    rng = np.random.default_rng(1)
    full = np.maximum(rng.standard_normal((2, 3, 40, 5)), 0).astype(dtype)
    if full.dtype.kind == "f":
        full[1, 2, 39, 4] = np.nan
    for k, q, b in np.ndindex(2, 3, 3):
        if (k, q, b) != (1, 0, 1):
            direct.write((k, q, b, 0), full[k, q, b * 16:(b + 1) * 16][None, None])
    return ours, zarr.open_array(str(tmp_path / "ours"), mode="r")[...]


@pytest.mark.parametrize("dtype", ["float32", "float16", "int32"])
@pytest.mark.parametrize("compression", ["lz4", "zstd", "none"])
def test_chunk_file_reads_equal_zarr_reads(tmp_path, dtype, compression):
    ours, want = _written(tmp_path, dtype, compression)
    assert np.isnan(want[1, 0, 16:32]).all() if want.dtype.kind == "f" else True  # unwritten
    reader = chunk_file_reader(ours, tmp_path / "ours")
    assert reader is not None and reader.dtype == want.dtype
    for k, q, b in np.ndindex(2, 3, 3):  # every chunk, the edge chunk (8 rows) included
        at = (slice(k, k + 1), slice(q, q + 1), slice(b * 16, min(40, (b + 1) * 16)),
              slice(0, 5))
        got = reader[at]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want[at])
    # a selection that is not one whole chunk goes through zarr, with the same values
    np.testing.assert_array_equal(reader[0, :, 10:30], want[0, :, 10:30])
    lazy = chunk_file_array(tmp_path, "ours")
    assert lazy.chunks == ((1, 1), (1, 1, 1), (16, 16, 8), (5,))
    np.testing.assert_array_equal(lazy.compute(), want)
    np.testing.assert_array_equal(read_array(tmp_path, "ours"), want)
    again = pickle.loads(pickle.dumps(lazy))  # as a dask cluster's workers receive it
    np.testing.assert_array_equal(again[1, 2].compute(), want[1, 2])


def test_a_corrupt_or_truncated_chunk_file_is_named(tmp_path):
    ours, _ = _written(tmp_path, "float32", "lz4")
    reader = chunk_file_reader(ours, tmp_path / "ours")
    chunk = tmp_path / "ours" / "c/0/1/2/0"
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[:10] + bytes([raw[10] ^ 1]) + raw[11:])
    at = (slice(0, 1), slice(1, 2), slice(32, 40), slice(0, 5))
    with pytest.raises(CorruptChunkError, match=r"ours': chunk c/0/1/2/0 is corrupt .*CRC-32C.*"
                                                r"`repair`"):
        reader[at]
    for cut in (raw[:-7], raw[:3], b""):
        chunk.write_bytes(cut)
        with pytest.raises(ValueError, match="is corrupt"):
            reader[at]


def test_chunk_reads_through_zarr_when_the_environment_asks(tmp_path, monkeypatch):
    ours, _ = _written(tmp_path, "float32", "lz4")
    assert chunk_file_reader(ours, tmp_path / "ours") is not None
    monkeypatch.setenv(READS_ENV, "zarr")
    assert chunk_file_reader(ours, tmp_path / "ours") is None
    monkeypatch.setenv(READS_ENV, "fast")
    with pytest.raises(StoreError, match=r"NCPROBE_CHUNK_READS='fast' is not a chunk read path; "
                                         r"expected 'auto' or 'zarr'"):
        chunk_file_reader(ours, tmp_path / "ours")
