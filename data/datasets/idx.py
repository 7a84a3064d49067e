"""MNIST and Fashion-MNIST from IDX files (raw or gzip)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ._base import DatasetError, make_dataset

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CLASSES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file of unsigned bytes (magic 0x0000080N, N dims, big-endian sizes)."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"malformed IDX file {str(path)!r}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"malformed IDX file {str(path)!r}: bad magic number")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DatasetError(
            f"malformed IDX file {str(path)!r}: header says {shape} but holds {data.size} bytes")
    return data.reshape(shape)


def _locate(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx(name: str, root) -> Dataset:  # noqa: F821
    """Load ``mnist`` or ``fashion-mnist`` from a folder of the four standard IDX files."""
    if root is None:
        raise DatasetError(f"{name}: `root` is required (a folder with the IDX files)")
    folder = Path(root)
    expected = [s for pair in _FILES.values() for s in pair]
    paths = {s: _locate(folder, s) for s in expected}
    missing = [s for s, p in paths.items() if p is None]
    if missing:
        raise DatasetError(
            f"{name}: folder {str(folder)!r} lacks {', '.join(missing)} (raw or .gz); "
            f"expected files: {', '.join(expected)}")
    splits = {}
    for split, (img, lab) in _FILES.items():
        x, y = read_idx(paths[img]), read_idx(paths[lab])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"{name}: {img} has shape {x.shape} but {lab} has {y.shape}; "
                               "expected (N, H, W) images and N labels")
        splits[split] = (x[:, None].astype(np.float32) / 255.0, y.astype(np.int64))
    return make_dataset(name, splits, _CLASSES[name], folder)
