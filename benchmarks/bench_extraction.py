"""Extraction overhead: full nc-extract against the same attacks and forward passes with no
hooks and no writes, measured side by side in one process (issue 4's goal: <= 1.15x).

The workload is the demo's: a digits mlp at three checkpoints, both splits, all five layers,
clean + PGD-20 + targeted PGD-20 + noise. Store creation, final verification and metadata
consolidation are a fixed cost (about 70 arrays, whatever the data size) and are reported
apart, with the steady-state ratio that excludes them.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch

ATTACKS = ["clean", "pgd:norm=linf,eps=0.1,steps=20", "pgd:norm=linf,eps=0.1,steps=20,target=next",
           "noise:kind=gaussian,eps=0.7"]


def attacks_and_forward_only(model, ds, specs, batch_size, chunk):
    """The floor: every block's attack and final forward pass, nothing captured or written."""
    from extract.attacks import draw_randomness, run_condition, slice_randomness

    for split in ds.splits:
        x_all = torch.from_numpy(ds.images[split])
        y_all = torch.from_numpy(ds.labels[split])
        for spec in specs:
            for lo in range(0, len(x_all), chunk):
                xb, yb = x_all[lo:lo + chunk], y_all[lo:lo + chunk]
                rand = draw_randomness(spec, xb, yb, ds.n_classes, torch.Generator())
                for i in range(0, len(xb), batch_size):
                    j = min(i + batch_size, len(xb))
                    x_adv, _, _ = run_condition(model, xb[i:j], yb[i:j], spec, ds.n_classes,
                                                slice_randomness(rand, i, j))
                    with torch.no_grad():
                        model(x_adv)


class _FixedCost:
    """Time spent in the store writer's create (open) and finalize, which do not scale."""

    def __init__(self):
        from data.store_writer import ActivationStoreWriter as W

        self.seconds = 0.0
        for name in ("open", "finalize"):
            setattr(W, name, self._timed(getattr(W, name)))

    def _timed(self, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
        return wrapper


def main(quick: bool = False) -> dict:
    from data.datasets import load_dataset
    from extract.attacks import parse_attack
    from extract.checkpoints import load_state_dict
    from extract.extraction import ExtractConfig, extract_store
    from extract.models import build_model
    from extract.training import TrainConfig, train

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="ncprobe-bench-"))
    try:
        epochs = (1, 2, 3) if quick else (4, 8, 12)
        train(TrainConfig(epochs=epochs[-1], save_epochs=list(epochs), schedule="cosine",
                          lr=0.05), tmp / "run", progress=False)
        cks = [tmp / "run" / "checkpoints" / f"epoch-{e:04d}.pt" for e in epochs]
        ds = load_dataset("digits")
        model = build_model("mlp", ds.input_shape, ds.n_classes, ds.mean, ds.std).eval()
        specs = [parse_attack(a) for a in ATTACKS]
        cfg = ExtractConfig(checkpoints=[str(c) for c in cks], attacks=ATTACKS, batch_size=512)
        fixed = _FixedCost()
        floor, full, setup = [], [], []
        for rep in range(2 if quick else 3):
            t0 = time.perf_counter()
            for ck in cks:
                model.load_state_dict(load_state_dict(ck))
                attacks_and_forward_only(model, ds, specs, 512, 16384)
            floor.append(time.perf_counter() - t0)
            fixed.seconds = 0.0
            t0 = time.perf_counter()
            extract_store(cfg, tmp / f"acts{rep}.zarr", progress=False, threads=1)
            full.append(time.perf_counter() - t0)
            setup.append(fixed.seconds)
        best = min(range(len(full)), key=full.__getitem__)
        ratio = full[best] / min(floor)
        steady = (full[best] - setup[best]) / min(floor)
        print(f"digits mlp, {len(cks)} checkpoints, train+test (1,797 samples), 5 layers, "
              f"{len(ATTACKS)} conditions:")
        print(f"  attacks + forward only: {min(floor):.2f} s (runs "
              f"{', '.join(f'{t:.2f}' for t in floor)})")
        print(f"  nc-extract (hooks, copies, background writes, verify, consolidate): "
              f"{full[best]:.2f} s (runs {', '.join(f'{t:.2f}' for t in full)}), of which "
              f"store creation + final verification {setup[best]:.2f} s")
        print(f"  ratio {ratio:.3f}; steady state without the fixed store set-up "
              f"{steady:.3f} (goal <= 1.15)")
        half = []
        for rep in range(2):
            fixed.seconds = 0.0
            t0 = time.perf_counter()
            extract_store(ExtractConfig(**{**cfg.__dict__, "dtype": "float16"}),
                          tmp / f"half{rep}.zarr", progress=False, threads=1)
            half.append((time.perf_counter() - t0, fixed.seconds))
        h_total, h_fixed = min(half)
        print(f"  float16 store (half the bytes to disk): {h_total:.2f} s, ratio "
              f"{h_total / min(floor):.3f}, steady state {(h_total - h_fixed) / min(floor):.3f}")
        return {"floor_s": min(floor), "extract_s": full[best], "ratio": ratio,
                "steady_ratio": steady, "float16_ratio": h_total / min(floor)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
