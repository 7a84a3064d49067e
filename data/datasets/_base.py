"""The in-memory dataset every loader returns: numpy arrays, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import NcprobeError


class DatasetError(NcprobeError):
    """A dataset could not be loaded; the message names the folder and the files expected."""


@dataclass(frozen=True)
class Dataset:
    """Images and labels of every split of one dataset.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"digits"``.
    images : dict of str to ndarray
        Per split, float32 array (sample, channel, height, width) scaled to [0, 1], or
        (sample, feature) for vector data such as ``synthetic``.
    labels : dict of str to ndarray
        Per split, int64 array (sample,) with values in ``0 .. n_classes - 1``.
    class_names : list of str
    mean, std : tuple of float
        Per-channel normalisation statistics of the train split (models normalise inside).
    source : str
        Where the data came from (folder or package), for provenance.
    box : (low, high) or None
        The valid input range, which attacks and noise stay inside: (0, 1) for images,
        None for unbounded data such as ``synthetic``.
    """

    name: str
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    class_names: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    options: dict = field(default_factory=dict)
    box: tuple[float, float] | None = (0.0, 1.0)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> list[str]:
        return list(self.images)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(next(iter(self.images.values())).shape[1:])

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split; a one-line error lists the splits that exist."""
        if name not in self.images:
            raise DatasetError(
                f"split {name!r} not in dataset {self.name!r}; available: {', '.join(self.splits)}"
            )
        return self.images[name], self.labels[name]

    def provenance(self) -> dict:
        """JSON-able description for store and checkpoint metadata."""
        return {
            "name": self.name,
            "splits": {s: int(len(y)) for s, y in self.labels.items()},
            "normalization": {"mean": list(self.mean), "std": list(self.std)},
            "source": self.source,
            "options": dict(self.options),
            "box": None if self.box is None else list(self.box),
        }


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of (sample, channel, ...) images, or one pair for vectors.

    Accumulated in float64 so that large uint8-derived sets do not lose precision.
    """
    if images.ndim == 2:
        x = images.astype(np.float64)
        return (float(x.mean()),), (float(x.std()) or 1.0,)
    axes = (0,) + tuple(range(2, images.ndim))
    x = images.astype(np.float64)
    std = x.std(axis=axes)
    std[std == 0] = 1.0
    return tuple(float(v) for v in x.mean(axis=axes)), tuple(float(v) for v in std)


def require_files(folder: Path, names: list[str], what: str) -> list[Path]:
    """Paths of ``names`` in ``folder``, or one error naming the folder and every expected file."""
    folder = Path(folder)
    missing = [n for n in names if not (folder / n).is_file()]
    if not folder.is_dir() or missing:
        raise DatasetError(
            f"{what}: folder {str(folder)!r} lacks {', '.join(missing or names)}; "
            f"expected files: {', '.join(names)}"
        )
    return [folder / n for n in names]


def make_dataset(name, splits, class_names, source, options=None,
                 box: tuple[float, float] | None = (0.0, 1.0)) -> Dataset:
    """Build a :class:`Dataset` from ``{split: (images, labels)}``, computing train statistics."""
    images = {s: np.ascontiguousarray(x, dtype=np.float32) for s, (x, _) in splits.items()}
    labels = {s: np.asarray(y, dtype=np.int64) for s, (_, y) in splits.items()}
    for s, y in labels.items():
        if len(y) == 0:
            raise DatasetError(f"dataset {name!r}: split {s!r} is empty; expected samples")
        if len(y) != len(images[s]):
            raise DatasetError(
                f"dataset {name!r}: split {s!r} has {len(images[s])} images but {len(y)} labels"
            )
        if y.min() < 0 or y.max() >= len(class_names):
            raise DatasetError(
                f"dataset {name!r}: split {s!r} has labels outside 0..{len(class_names) - 1}"
            )
    ref = images.get("train", next(iter(images.values())))
    mean, std = channel_stats(ref)
    return Dataset(name, images, labels, list(class_names), mean, std, str(source), options or {},
                   box)
