"""Direct chunk files: byte-for-byte what zarr writes, and readable by zarr; unsupported
arrays fall back to zarr."""

import numpy as np
import pytest
import zarr

from ncprobe.data.store.chunk_file import chunk_file_writer
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
    remote = zarr.create_array("memory://x", shape=(4,), chunks=(4,), dtype="f4",
                               compressors=compressors("lz4"))
    assert chunk_file_writer(remote, "memory://x") is None
    other_codec = zarr.create_array(str(tmp_path / "gz"), shape=(4,), chunks=(4,), dtype="f4",
                                    compressors=[zarr.codecs.GzipCodec()])
    assert chunk_file_writer(other_codec, tmp_path / "gz") is None
    text = zarr.create_array(str(tmp_path / "s"), shape=(2,), chunks=(2,), dtype=str)
    assert chunk_file_writer(text, tmp_path / "s") is None


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
