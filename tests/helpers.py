"""Shared test fixtures: synthetic stores and a scheduler that fails on unexpected computes."""

from __future__ import annotations

import dask
import numpy as np

from ncprobe.data.datasets import make_synthetic_arrays
from ncprobe.data.store.from_arrays import write_activation_store
from ncprobe.data.store.reader import store_arrays  # noqa: F401 - re-exported for the tests


class CountingScheduler:
    """A dask scheduler that raises when more than ``max_computes`` computations happen.

    The flox/xarray pattern: wrap code that must stay lazy in
    ``dask.config.set(scheduler=CountingScheduler(0))``.
    """

    def __init__(self, max_computes=0):
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(f"too many dask computations: {self.total_computes} > "
                               f"{self.max_computes}")
        return dask.get(dsk, keys, **kwargs)


def raise_if_computed(max_computes=0):
    return dask.config.set(scheduler=CountingScheduler(max_computes))


def synthetic_store(path, *, n_classes=4, dims=(12, 6), n_per_class=40, attack_scale=1.5,
                    chunk_samples=37, seed=0, checkpoints=(0,), dtype="float32", targeted=True):
    """A store with splits train/test, layers l0.. of the given dims, conditions clean, pgd
    (untargeted: noisy features and flipped predictions) and pgd-next (targeted).

    Returns the store path and the arrays written (float64 copies, as stored).
    """
    rng = np.random.default_rng(seed)
    features, labels, outputs = {}, {}, {}
    n_cond = 3 if targeted else 2
    conds = [{"name": "clean", "attack": "clean"},
             {"name": "pgd", "attack": "pgd", "targeted": False},
             {"name": "pgd-next", "attack": "pgd", "targeted": True}][:n_cond]
    for split, n in (("train", n_per_class), ("test", max(2, n_per_class // 2))):
        x, y, _ = make_synthetic_arrays(n_classes, max(dims), n, noise=0.6, seed=seed + len(split))
        labels[split] = y
        features[split] = {}
        k = len(checkpoints)
        for li, d in enumerate(dims):
            per_ck = []
            for _ in range(k):
                clean = x[:, :d] * (li + 1)
                atk = clean + attack_scale * rng.standard_normal(clean.shape)
                tgt = clean + attack_scale * rng.standard_normal(clean.shape)
                per_ck.append(np.stack([clean, atk, tgt][:n_cond]))
            features[split][f"l{li}"] = np.stack(per_ck)
        pred = np.stack([np.stack([y, (y + rng.integers(0, 2, y.size)) % n_classes,
                                   (y + 1) % n_classes][:n_cond])] * k)
        target = np.full(pred.shape, -1)
        if targeted:
            target[:, 2] = (y + 1) % n_classes
        logits = np.eye(n_classes)[pred]
        outputs[split] = {"logits": logits, "pred": pred, "target": target}
    weight = rng.standard_normal((len(checkpoints), n_classes, dims[-1]))
    write_activation_store(path, features, labels, n_classes=n_classes, conditions=conds,
                           checkpoints=checkpoints, outputs=outputs, dtype=dtype,
                           classifier=(f"l{len(dims) - 1}", weight, np.zeros(weight.shape[:2])),
                           chunk_samples=chunk_samples)
    stored = {s: {la: a.astype(dtype).astype(np.float64) for la, a in f.items()}
              for s, f in features.items()}
    return path, stored, labels, outputs, weight
