"""Every loader on small files generated here in the real on-disk formats."""

import gzip
import pickle
import struct

import numpy as np
import pytest

from ncprobe.data.datasets import DatasetError, load_dataset, simplex_etf
from ncprobe.data.datasets.safe_pickle import UnsafePickleError, safe_load


def test_digits_default():
    ds = load_dataset("digits")
    assert ds.images["train"].shape == (1257, 1, 8, 8) and ds.images["test"].shape[0] == 540
    assert 0.0 <= ds.images["train"].min() and ds.images["train"].max() <= 1.0
    # stratified: class proportions equal to within one sample per class
    tr = np.bincount(ds.labels["train"]) / 1257
    te = np.bincount(ds.labels["test"]) / 540
    assert np.abs(tr - te).max() < 0.01
    again = load_dataset("digits")
    np.testing.assert_array_equal(ds.labels["test"], again.labels["test"])


def test_synthetic_geometry():
    v = simplex_etf(6, 20, seed=3)
    np.testing.assert_allclose(v @ v.T, (6 * np.eye(6) - 1) / 5, atol=1e-12)
    ds = load_dataset("synthetic", n_classes=4, dim=8, n_per_class=10, noise=0.0)
    x, y = ds.split("train")
    means = np.stack([x[y == c].mean(0) for c in range(4)])
    g = means @ means.T
    np.testing.assert_allclose(np.diag(g), 16.0, rtol=1e-5)  # separation 4, unit ETF
    with pytest.raises(DatasetError, match="split 'val' not in dataset"):
        ds.split("val")


def _cifar_python(folder, name, n=4):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    files = ([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if name == "cifar10"
             else ["train", "test"])
    key = b"labels" if name == "cifar10" else b"fine_labels"
    for f in files:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             key: list(rng.integers(0, 10, n).tolist()), b"batch_label": b"x"}
        (folder / f).write_bytes(pickle.dumps(d, protocol=2))
    meta = ("batches.meta", b"label_names") if name == "cifar10" else ("meta", b"fine_label_names")
    (folder / meta[0]).write_bytes(pickle.dumps({meta[1]: [f"c{i}".encode() for i in range(10)]},
                                                protocol=2))


def _cifar_binary(folder, name, n=4):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    nl = 1 if name == "cifar10" else 2
    files = ([f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
             if name == "cifar10" else ["train.bin", "test.bin"])
    for f in files:
        rec = rng.integers(0, 256, (n, nl + 3072), dtype=np.uint8)
        rec[:, :nl] = rng.integers(0, 10, (n, nl))
        rec.tofile(folder / f)
    meta = "batches.meta.txt" if name == "cifar10" else "fine_label_names.txt"
    (folder / meta).write_text("\n".join(f"c{i}" for i in range(10)) + "\n")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("fmt", ["python", "binary"])
def test_cifar_formats(tmp_path, name, fmt):
    sub = {("cifar10", "python"): "cifar-10-batches-py", ("cifar10", "binary"):
           "cifar-10-batches-bin", ("cifar100", "python"): "cifar-100-python",
           ("cifar100", "binary"): "cifar-100-binary"}[(name, fmt)]
    (_cifar_python if fmt == "python" else _cifar_binary)(tmp_path / sub, name)
    ds = load_dataset(name, root=tmp_path)
    n_train = 20 if name == "cifar10" else 4
    assert ds.images["train"].shape == (n_train, 3, 32, 32)
    assert ds.images["test"].shape == (4, 3, 32, 32)
    assert ds.class_names[:2] == ["c0", "c1"] and len(ds.mean) == 3
    assert ds.images["train"].max() <= 1.0


def test_cifar_missing_file_names_folder_and_files(tmp_path):
    _cifar_python(tmp_path / "cifar-10-batches-py", "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"lacks data_batch_3; expected files: data_batch_1"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(DatasetError, match="no batches found"):
        load_dataset("cifar100", root=tmp_path / "nowhere")


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/ncprobe-pwned",))


def test_malicious_pickle_is_refused(tmp_path):
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        safe_load(pickle.dumps({b"data": _Evil()}))
    folder = tmp_path / "cifar-10-batches-py"
    _cifar_python(folder, "cifar10")
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset("cifar10", root=tmp_path)


def test_safe_pickle_round_trips_numpy():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for proto in (2, 4, 5):
        out = safe_load(pickle.dumps({b"data": a, b"labels": [1, 2]}, protocol=proto))
        np.testing.assert_array_equal(out[b"data"], a)


def _idx(path, arr, gz):
    head = struct.pack(">I", 0x0800 + arr.ndim) + b"".join(struct.pack(">I", s)
                                                           for s in arr.shape)
    raw = head + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx(tmp_path, gz, name):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", 6), ("t10k", 3)):
        _idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)),
             gz)
        _idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n), gz)
    ds = load_dataset(name, root=tmp_path)
    assert ds.images["train"].shape == (6, 1, 28, 28) and ds.labels["test"].shape == (3,)
    (tmp_path / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(b"\x00\x00\x08\x01garbage")
    with pytest.raises(DatasetError, match="malformed IDX"):
        load_dataset(name, root=tmp_path)


def test_idx_missing_lists_expected(tmp_path):
    with pytest.raises(DatasetError, match="lacks train-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path)


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(
                    d / f"{i}.png")
    ds = load_dataset("imagefolder", root=tmp_path, size=12, crop=10)
    assert ds.class_names == ["cat", "dog"] and set(ds.splits) == {"train", "test"}
    assert ds.images["train"].shape == (4, 3, 10, 10)
    (tmp_path / "train" / "cat" / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="cannot read image"):
        load_dataset("imagefolder", root=tmp_path, size=12)


def test_unknown_dataset():
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'; available: digits"):
        load_dataset("svhn")


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_write_cifar_binary_round_trips_through_the_loader(tmp_path, name):
    from ncprobe.data.datasets import write_cifar_binary

    per_batch = 30 if name == "cifar10" else 110  # more than one image of class 0
    write_cifar_binary(tmp_path, name, n_train=per_batch, n_test=12, seed=3)
    ds = load_dataset(name, root=tmp_path)
    n_train = per_batch * (5 if name == "cifar10" else 1)
    assert ds.images["train"].shape == (n_train, 3, 32, 32)
    assert ds.images["test"].shape == (12, 3, 32, 32)
    assert ds.n_classes == (10 if name == "cifar10" else 100)
    np.testing.assert_array_equal(ds.labels["test"], np.arange(12) % ds.n_classes)
    # class templates: two images of one class are closer than images of two classes
    x = ds.images["train"].reshape(n_train, -1)
    assert np.linalg.norm(x[0] - x[ds.n_classes]) < np.linalg.norm(x[0] - x[1])
