"""The GPU path, checked in one run: ``python -m benchmarks gpu [--device cpu --small]``.

A PreActResNet18 with random weights on CIFAR-shaped synthetic data (written in the CIFAR
binary format: nothing is downloaded) goes through ``nc-extract`` on the chosen device:

1. correctness: the device's store against a CPU store of the same checkpoint and seed
   (clean features to float32/TF32 tolerance, attacked ones per sample, since an attack's
   sign steps can flip where a gradient is near zero), and W h + b = logits at the layer
   feeding the classifier, with and without ``--amp``;
2. throughput: images per second of the bare attack + forward loop and of ``nc-extract`` on
   the same work (PGD-10 l_inf 8/255, every capture point with its default reduction), side by
   side, with and without AMP, and the GPU's utilisation when ``nvidia-smi`` reports it;
3. torchrun (NCCL on CUDA, gloo on the CPU) with one rank, and two where there are two GPUs:
   the store against the single-process one;
4. memory: peak GPU memory and host RSS of the extraction.

It prints one Markdown table, ready to paste into a note or ``docs/gpu.md``. On a machine
without a GPU ``--device cpu --small`` runs every check on a few images (the CPU stands in
for the device; the AMP rows say ``skip``) so the script cannot rot; a test does this.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: tolerances, relative to the largest magnitude of the reference array
TOL_FP32 = 1e-3  # float32 on two devices; cuDNN convolutions use TF32 by default
TOL_AMP = 3e-2  # bfloat16 (8-bit mantissa) activations through 18 layers


@dataclass
class Row:
    check: str
    verdict: str
    figures: str


@dataclass
class Sizes:
    n_correct: int  # images compared between devices
    n_throughput: int
    steps: int  # PGD steps of the throughput run
    batch: int
    pairs: int

    @classmethod
    def pick(cls, small: bool) -> Sizes:
        return cls(16, 32, 2, 16, 1) if small else cls(512, 10_000, 10, 512, 2)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def make_run(tmp: Path, n_test: int, seed: int = 0) -> Path:
    """CIFAR-shaped data and a random-weight PreActResNet18 checkpoint with its sidecar."""
    from ncprobe.data.datasets import load_dataset, write_cifar_binary
    from ncprobe.extract.checkpoints import save_checkpoint
    from ncprobe.extract.models import build_model

    root = tmp / "cifar"
    write_cifar_binary(root, "cifar10", n_train=20, n_test=n_test, seed=seed)
    ds = load_dataset("cifar10", root=root)
    torch.manual_seed(seed)
    model = build_model("preactresnet18", ds.input_shape, ds.n_classes, ds.mean, ds.std)
    meta = {"arch": "preactresnet18", "dataset": "cifar10", "data_root": str(root)}
    return save_checkpoint(model, tmp / "checkpoints", 1, meta)


def _config(ckpt, attacks, limit, batch, amp=False):
    from ncprobe.extract.extraction import ExtractConfig

    return ExtractConfig(checkpoints=[str(ckpt)], attacks=attacks, splits=["test"], limit=limit,
                         batch_size=batch, amp=amp)


def _extract(cfg, out, device):
    from ncprobe.extract.extraction import extract_store

    return extract_store(cfg, out, device=device, progress=False, overwrite=True)


def _features(store):
    import xarray as xr

    tree = xr.open_datatree(store, engine="zarr")
    layers = {la: tree[f"test/layers/{la}"]["features"].values[0] for la in tree.attrs["layers"]}
    return tree, layers


def classifier_identity(store) -> float:
    """max |W h + b - logits| / max |logits| at the layer that feeds the classifier."""
    tree, layers = _features(store)
    node = tree["classifier"]
    w, b = node["weight"].values[0], node["bias"].values[0]
    h = layers[node.attrs["layer"]].astype(np.float64)  # (condition, sample, feature)
    logits = tree["test/outputs"]["logits"].values[0]
    return rel_err(h @ w.T.astype(np.float64) + b, logits)


def check_correctness(ckpt, device, sizes, tmp) -> list[Row]:
    attacks = ["clean", "pgd:norm=linf,eps=8/255,steps=3"]
    cfg = _config(ckpt, attacks, sizes.n_correct, sizes.batch)
    ref = _extract(cfg, tmp / "cpu.zarr", "cpu")
    # on the CPU the device run is a second CPU run at another batch size (determinism)
    other = _config(ckpt, attacks, sizes.n_correct, max(1, sizes.batch // 2)) \
        if device == "cpu" else cfg
    got = _extract(other, tmp / "device.zarr", device)
    _, a = _features(got)
    _, b = _features(ref)
    clean = max(rel_err(a[la][0], b[la][0]) for la in a)
    per_sample = [np.abs(a[la][1] - b[la][1]).reshape(sizes.n_correct, -1).max(axis=1)
                  / max(np.abs(b[la][1]).max(), 1e-30) for la in a]
    agree = float(np.mean(np.max(per_sample, axis=0) <= TOL_FP32))
    rows = [Row(f"clean features, {device} vs cpu", _verdict(clean <= TOL_FP32),
                f"max rel. diff {clean:.1e} over {len(a)} layers (tol {TOL_FP32:g})"),
            Row(f"PGD-3 features, {device} vs cpu (same start)", _verdict(agree >= 0.9),
                f"{agree:.0%} of samples within {TOL_FP32:g} (needs >= 90 %: a sign step can "
                "flip where the gradient is ~0)")]
    ident = classifier_identity(got)
    rows.append(Row(f"W h + b = logits, {device}", _verdict(ident <= TOL_FP32),
                    f"max rel. diff {ident:.1e} (tol {TOL_FP32:g})"))
    if device == "cpu":
        rows.append(Row("W h + b = logits, AMP", "skip", "AMP needs CUDA"))
        return rows
    amp = _extract(_config(ckpt, attacks, sizes.n_correct, sizes.batch, amp=True),
                   tmp / "amp.zarr", device)
    ident = classifier_identity(amp)
    _, c = _features(amp)
    drift = max(rel_err(c[la][0], b[la][0]) for la in c)
    rows.append(Row(f"W h + b = logits, {device} --amp", _verdict(ident <= TOL_AMP),
                    f"max rel. diff {ident:.1e} (tol {TOL_AMP:g}); AMP clean features vs "
                    f"float32 cpu: {drift:.1e}"))
    return rows


class GpuUtilisation:
    """Samples ``nvidia-smi`` utilisation every 200 ms while the ``with`` block runs."""

    def __init__(self, device):
        self.samples: list[int] = []
        self.enabled = torch.device(device).type == "cuda" and shutil.which("nvidia-smi")

    def __enter__(self):
        self.proc = None
        if self.enabled:
            index = torch.cuda.current_device()
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 f"--id={index}", "-lms", "200"], stdout=subprocess.PIPE, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def summary(self) -> str:
        if not self.samples:
            return "GPU utilisation n/a"
        return f"GPU utilisation mean {np.mean(self.samples):.0f} %, max {max(self.samples)} %"


def check_throughput(ckpt, device, sizes, tmp) -> list[Row]:
    from ncprobe.data.datasets import load_dataset
    from ncprobe.extract.attacks import parse_attack
    from ncprobe.extract.checkpoints import load_state_dict, read_sidecar
    from ncprobe.extract.models import build_model

    from .bench_extraction import attacks_and_forward_only

    attack = f"pgd:norm=linf,eps=8/255,steps={sizes.steps}"
    meta = read_sidecar(ckpt)
    ds = load_dataset("cifar10", root=meta["data_root"])
    model = build_model("preactresnet18", ds.input_shape, ds.n_classes, ds.mean, ds.std)
    model.load_state_dict(load_state_dict(ckpt))
    model.to(device).eval()
    specs = [parse_attack(attack)]
    n = sizes.n_throughput
    rows = []
    for amp in ([False] if device == "cpu" else [False, True]):
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp else None
        cfg = _config(ckpt, [attack], n, sizes.batch, amp=amp)
        floor = functools.partial(attacks_and_forward_only, model, ds, specs, sizes.batch,
                                  16384, device=device, splits=["test"], amp=ctx, limit=n)
        floor()  # warm-up: cuDNN autotuning and allocator growth are nobody's overhead
        times, util = [], GpuUtilisation(device)
        if device != "cpu":
            torch.cuda.reset_peak_memory_stats()
        for rep in range(sizes.pairs):
            pair = {}
            order = ("floor", "extract") if rep % 2 == 0 else ("extract", "floor")
            for which in order:
                t0 = time.perf_counter()
                if which == "floor":
                    floor()
                else:
                    with util:
                        _extract(cfg, tmp / f"tp-{amp}-{rep}.zarr", device)
                pair[which] = time.perf_counter() - t0
            times.append((pair["floor"], pair["extract"]))
            shutil.rmtree(tmp / f"tp-{amp}-{rep}.zarr", ignore_errors=True)
        ratios = sorted(e / f for f, e in times)
        best_f, best_e = min(f for f, _ in times), min(e for _, e in times)
        label = f"throughput{' --amp' if amp else ''}, {n:,} images, PGD-{sizes.steps}"
        rows.append(Row(label, "info",
                        f"attack+forward {n / best_f:,.0f} img/s; nc-extract {n / best_e:,.0f} "
                        f"img/s; ratio per pair {', '.join(f'{r:.2f}' for r in ratios)}; "
                        + util.summary()))
        if device != "cpu":
            peak = torch.cuda.max_memory_allocated() / 2**30
            rows.append(Row(f"memory{' --amp' if amp else ''}", "info",
                            f"peak GPU memory {peak:.2f} GiB"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rows.append(Row("memory, host", "info", f"peak RSS of this process {rss:.2f} GiB"))
    return rows


def check_torchrun(ckpt, device, sizes, tmp) -> list[Row]:
    from ncprobe.data.store.reader import store_arrays

    attacks = ["clean", "pgd:norm=linf,eps=8/255,steps=3"]
    single = _extract(_config(ckpt, attacks, sizes.n_correct, sizes.batch), tmp / "one.zarr",
                      device)
    want = store_arrays(single)
    ranks = [1] + ([2] if device != "cpu" and torch.cuda.device_count() >= 2 else [])
    rows = []
    torchrun = Path(sys.executable).with_name("torchrun")
    for n in ranks:
        out = tmp / f"torchrun-{n}.zarr"
        cmd = [str(torchrun), "--standalone", "--nproc-per-node", str(n), "-m",
               "ncprobe.extract.cli", "--checkpoint", str(ckpt), "--out", str(out),
               "--splits", "test", "--limit", str(sizes.n_correct), "--batch-size",
               str(sizes.batch), "--device", device, "--no-progress"]
        for a in attacks:
            cmd += ["--attack", a]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        backend = "nccl" if device != "cpu" else "gloo"
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append(Row(f"torchrun {n} rank(s), {backend}", "FAIL", last[:160]))
            continue
        got = store_arrays(out)
        numeric = [k for k in want if np.issubdtype(want[k].dtype, np.number)]
        same = sum(np.array_equal(got[k], want[k], equal_nan=True) for k in numeric)
        worst = max(rel_err(got[k], want[k]) for k in numeric
                    if want[k].size and np.issubdtype(want[k].dtype, np.floating))
        ok = set(got) == set(want) and worst <= TOL_FP32
        rows.append(Row(f"torchrun {n} rank(s), {backend}", _verdict(ok),
                        f"{same}/{len(numeric)} arrays bitwise equal to one process; max rel. "
                        f"diff {worst:.1e}"))
    if len(ranks) == 1:
        rows.append(Row("torchrun 2 ranks", "skip", "needs two GPUs"))
    return rows


def table(rows: list[Row], device: str) -> str:
    name = torch.cuda.get_device_name() if device != "cpu" else "CPU"
    head = (f"ncprobe GPU check on {name}, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}\n\n| check | verdict | figures |\n|---|---|---|\n")
    return head + "\n".join(f"| {r.check} | {r.verdict} | {r.figures} |" for r in rows)


def main(device: str = "cuda", small: bool = False, out: str | None = None) -> list[Row]:
    if device != "cpu" and not torch.cuda.is_available():
        raise SystemExit("gpu check: CUDA is not available here; run with --device cpu --small")
    sizes = Sizes.pick(small)
    tmp = Path(tempfile.mkdtemp(prefix="ncprobe-gpu-"))
    rows: list[Row] = []
    try:
        ckpt = make_run(tmp, max(sizes.n_correct, sizes.n_throughput))
        for check in (check_correctness, check_throughput, check_torchrun):
            t0 = time.perf_counter()
            try:
                rows += check(ckpt, device, sizes, tmp)
            except Exception as e:  # noqa: BLE001 - one broken check must not hide the others
                rows.append(Row(check.__name__, "FAIL", f"{type(e).__name__}: {e}"[:200]))
            print(f"  {check.__name__}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = table(rows, device)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return rows
