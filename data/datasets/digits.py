"""scikit-learn's bundled 8x8 digits: the embedded default, no download."""

from __future__ import annotations

import numpy as np

from ._base import Dataset, make_dataset

SPLIT_SEED = 0
TEST_FRACTION = 0.3


def load_digits(root=None, seed: int = SPLIT_SEED) -> Dataset:
    """1,797 digit images (1, 8, 8) scaled to [0, 1], split 70/30 stratified with a fixed seed.

    Examples
    --------
    >>> ds = load_digits()
    >>> ds.images["train"].shape, ds.images["test"].shape
    ((1257, 1, 8, 8), (540, 1, 8, 8))
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=TEST_FRACTION, stratify=y, random_state=seed
    )
    return make_dataset(
        "digits",
        {"train": (xtr, ytr), "test": (xte, yte)},
        [str(i) for i in range(10)],
        "sklearn.datasets.load_digits",
        {"seed": seed, "test_fraction": TEST_FRACTION},
    )
