"""CIFAR-10 and CIFAR-100 from a local folder, python-batch or binary-batch format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ._base import DatasetError, make_dataset, require_files
from .safe_pickle import safe_load

_LAYOUTS = {
    "cifar10": {
        "python": ("cifar-10-batches-py",
                   {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                   "batches.meta"),
        "binary": ("cifar-10-batches-bin",
                   {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                    "test": ["test_batch.bin"]},
                   "batches.meta.txt"),
    },
    "cifar100": {
        "python": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "meta"),
        "binary": ("cifar-100-binary", {"train": ["train.bin"], "test": ["test.bin"]},
                   "fine_label_names.txt"),
    },
}
_IMAGE_BYTES = 3 * 32 * 32


def _find_folder(root: Path, name: str) -> tuple[Path, str]:
    """The folder holding the batches: ``root`` itself or its standard sub-folder."""
    for fmt, (sub, files, meta) in _LAYOUTS[name].items():
        for folder in (root, root / sub):
            if (folder / meta).is_file() or (folder / files["test"][0]).is_file():
                return folder, fmt
    expected = "; ".join(
        f"{fmt}: {sub}/ with {', '.join(sum(files.values(), []) + [meta])}"
        for fmt, (sub, files, meta) in _LAYOUTS[name].items()
    )
    raise DatasetError(f"{name}: no batches found in {str(root)!r}; expected {expected}")


def _python_batch(path: Path, label_key: bytes):
    try:
        d = safe_load(path.read_bytes())
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[label_key], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as e:
        raise DatasetError(f"malformed CIFAR python batch {str(path)!r}: {e}") from None
    return x, y


def _binary_batch(path: Path, n_label_bytes: int):
    raw = np.fromfile(path, dtype=np.uint8)
    rec = n_label_bytes + _IMAGE_BYTES
    if raw.size == 0 or raw.size % rec:
        raise DatasetError(
            f"malformed CIFAR binary batch {str(path)!r}: {raw.size} bytes is not a multiple "
            f"of the {rec}-byte record"
        )
    raw = raw.reshape(-1, rec)
    # CIFAR-100 records are (coarse, fine, pixels): the fine label is the last label byte
    return raw[:, n_label_bytes:].reshape(-1, 3, 32, 32), raw[:, n_label_bytes - 1].astype(
        np.int64)


def load_cifar(name: str, root) -> Dataset:  # noqa: F821
    """Load ``cifar10`` or ``cifar100`` (fine labels) from ``root``; images scaled to [0, 1]."""
    if root is None:
        raise DatasetError(f"{name}: `root` is required (a folder with the CIFAR batches)")
    folder, fmt = _find_folder(Path(root), name)
    _, files, meta = _LAYOUTS[name][fmt]
    require_files(folder, sum(files.values(), []) + [meta], f"{name} ({fmt} batches)")
    splits = {}
    for split, names in files.items():
        parts = []
        for n in names:
            if fmt == "python":
                key = b"labels" if name == "cifar10" else b"fine_labels"
                parts.append(_python_batch(folder / n, key))
            else:
                parts.append(_binary_batch(folder / n, 1 if name == "cifar10" else 2))
        x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255.0
        splits[split] = (x, np.concatenate([p[1] for p in parts]))
    if fmt == "python":
        m = safe_load((folder / meta).read_bytes())
        key = b"label_names" if name == "cifar10" else b"fine_label_names"
        if not isinstance(m, dict) or key not in m:
            raise DatasetError(f"malformed CIFAR meta file {str(folder / meta)!r}: no {key!r}")
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in m[key]]
    else:
        classes = [ln.strip() for ln in (folder / meta).read_text().splitlines() if ln.strip()]
    return make_dataset(name, splits, classes, folder, {"format": fmt})


def write_cifar_binary(root, name: str = "cifar10", n_train: int = 50, n_test: int = 20,
                       seed: int = 0, noise: float = 40.0) -> Path:
    """Write CIFAR-shaped synthetic batches in the CIFAR binary format under ``root``.

    Each class is a fixed random 3x32x32 template plus pixel noise (std ``noise`` in 0..255),
    so a model can learn it; ``n_train`` images go to each of the five CIFAR-10 train batches
    (to the one CIFAR-100 train file). For smoke tests, benchmarks and the GPU check: the
    real files cannot be downloaded here. Returns the batch folder.
    """
    n_classes = 10 if name == "cifar10" else 100
    sub, files, meta = _LAYOUTS[name]["binary"]
    folder = Path(root) / sub
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 255, (n_classes, _IMAGE_BYTES))
    n_labels = 1 if name == "cifar10" else 2
    for fname in files["train"] + files["test"]:
        n = n_test if fname in files["test"] else n_train
        y = np.arange(n) % n_classes
        pixels = np.clip(templates[y] + noise * rng.standard_normal((n, _IMAGE_BYTES)), 0, 255)
        labels = np.stack([y // 5, y][-n_labels:], axis=1)  # CIFAR-100: coarse, fine
        np.concatenate([labels, pixels], axis=1).astype(np.uint8).tofile(folder / fname)
    (folder / meta).write_text("\n".join(f"class{i}" for i in range(n_classes)) + "\n")
    return folder
