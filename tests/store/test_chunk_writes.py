"""The two ways chunks reach disk (ncprobe's chunk files, zarr's public API) write the same
store, and the faster one is used only under a zarr that the byte comparison ran against."""

import json

import numpy as np
import pytest
import zarr

from ncprobe.data.store import chunk_file
from ncprobe.data.store.chunk_file import WRITES_ENV, chunk_file_writer, direct_writes
from ncprobe.data.store.reader import StoreError
from tests.helpers import synthetic_store


def _files(root):
    """Every file of a store by relative path: chunk bytes and metadata documents."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _metadata(doc: bytes, drop=("created", "chunk_writes")) -> dict:
    meta = json.loads(doc)
    for key in drop:
        meta.get("attributes", {}).pop(key, None)
    meta.pop("consolidated_metadata", None)  # holds the root attributes again
    return meta


@pytest.fixture(scope="module")
def both_paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("writes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(WRITES_ENV, "auto")
        synthetic_store(d / "direct.zarr")
        mp.setenv(WRITES_ENV, "zarr")
        synthetic_store(d / "api.zarr")
    return d / "direct.zarr", d / "api.zarr"


@pytest.mark.skipif(not direct_writes(), reason="this zarr is written through its API anyway")
def test_public_api_path_writes_the_same_store(both_paths):
    direct, api = both_paths
    a, b = _files(direct), _files(api)
    assert a.keys() == b.keys()
    chunks = [k for k in a if not k.endswith("zarr.json")]
    assert chunks and all(a[k] == b[k] for k in chunks)  # every chunk file, byte for byte
    for k in set(a) - set(chunks):
        assert _metadata(a[k]) == _metadata(b[k]), k
    attrs = [dict(zarr.open_group(str(p), mode="r").attrs) for p in both_paths]
    assert attrs[0]["fingerprint"] == attrs[1]["fingerprint"]
    assert attrs[0]["chunk_writes"] == [chunk_file.writes_record(True)]
    assert attrs[1]["chunk_writes"] == [chunk_file.writes_record(False)]
    assert attrs[1]["chunk_writes"][0] == f"zarr {zarr.__version__} API"


def test_untested_zarr_writes_through_its_api(tmp_path, monkeypatch):
    array = zarr.create_array(str(tmp_path / "a"), shape=(4,), chunks=(4,), dtype="f4")
    monkeypatch.setattr(zarr, "__version__", "3.4.2")
    assert not direct_writes()
    assert chunk_file_writer(array, tmp_path / "a") is None
    assert chunk_file.writes_record(False) == "zarr 3.4.2 API"
    monkeypatch.setattr(zarr, "__version__", "3.1.6")
    assert direct_writes()


def test_a_resumed_store_records_every_path(tmp_path, monkeypatch):
    """A store begun through zarr's API and finished by ncprobe's chunk files says both."""
    from ncprobe.data.store.layout import LayerSpec
    from ncprobe.data.store.writer import ActivationStoreWriter

    y = np.repeat(np.arange(3), 4)
    x = np.random.default_rng(0).standard_normal((12, 4))

    def writer():
        return ActivationStoreWriter(
            tmp_path / "s.zarr", layers=[LayerSpec("a", 0, "a", (4,), "flatten", 4)],
            checkpoints=[0], conditions=[{"name": "clean"}],
            samples={"train": (np.arange(12), y)}, n_classes=3, config={"run": 1},
            chunk_samples=6).open()

    def block(w, b):
        lo, hi = w.layout.blocks("train")[b]
        w.write_block("train", 0, 0, b, {"a": x[lo:hi]}, np.zeros((hi - lo, 3)), y[lo:hi],
                      np.full(hi - lo, -1), np.zeros(hi - lo))

    monkeypatch.setenv(WRITES_ENV, "zarr")
    first = writer()
    block(first, 0)
    first.close()  # interrupted after one of two blocks
    monkeypatch.setenv(WRITES_ENV, "auto")
    second = writer()
    assert second.done_blocks() == {("train", 0, 0, 0)}
    block(second, 1)
    second.finalize()
    records = zarr.open_group(str(tmp_path / "s.zarr"), mode="r").attrs["chunk_writes"]
    assert set(records) == {chunk_file.writes_record(False),
                            chunk_file.writes_record(direct_writes())}
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s.zarr/train/layers/a/"
                                                      "features"))[0, 0], x.astype(np.float32))


def test_bad_choice_is_one_line(monkeypatch):
    monkeypatch.setenv(WRITES_ENV, "fast")
    with pytest.raises(StoreError, match=r"NCPROBE_CHUNK_WRITES='fast' is not a chunk write "
                                         r"path; expected 'auto' or 'zarr'"):
        direct_writes()
