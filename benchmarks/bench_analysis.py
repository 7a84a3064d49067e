"""Analysis at scale: exactness, peak memory and time against a read-and-sum dask pass, with
the layer held in memory (it fits the budget) and streamed twice (``memory=0``).

Synthetic store N = 50,000, D = 4,096, C = 10, two conditions (issue 5), and one layer with
D = 65,536, N = 5,000 (memory only).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ncprobe.data.store.layout import LayerSpec
from ncprobe.data.store.writer import ActivationStoreWriter


def write_store(path, n, d, c=10, conditions=("clean", "pgd"), seed=0, flipped=0.9):
    """Write a two-condition store block by block (never the whole array in memory).

    The network's predictions are the labels on clean data (zero training error, as at the
    end of training) and another class for a fraction ``flipped`` of the attacked samples,
    as a PGD attack on a standard network does: so the prediction grouping of an attacked
    condition costs what it costs in a real store.
    """
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    means = rng.standard_normal((c, d)).astype(np.float32) * 2
    w = ActivationStoreWriter(
        path, layers=[LayerSpec("layer", 0, "layer", (d,), "flatten", d)], checkpoints=[0],
        conditions=[{"name": q, "attack": q} for q in conditions],
        samples={"train": (np.arange(n), y)}, n_classes=c, config={"bench": [n, d]},
        attrs={"dataset": {"name": "bench", "splits": ["train"]}}).open(overwrite=True)
    for q in range(len(conditions)):
        for b, (lo, hi) in enumerate(w.layout.blocks("train")):
            noise = rng.standard_normal((hi - lo, d), dtype=np.float32) * (1 + q)
            f = means[y[lo:hi]] + noise
            wrong = rng.random(hi - lo) < (flipped if q else 0.0)
            pred = np.where(wrong, (y[lo:hi] + rng.integers(1, c, hi - lo)) % c, y[lo:hi])
            w.write_block("train", 0, q, b, {"layer": f}, np.zeros((hi - lo, c)), pred,
                          -np.ones(hi - lo), np.zeros(hi - lo))
    w.finalize()
    return w.layout.chunk_samples


#: a selection that needs nothing from the second pass (NC2, NC3, Tr Sigma_W, the alignment)
FIRST_PASS = ["equinorm", "equiangular", "max_angle", "etf_distance", "uniformity", "nc3",
              "align_angle", "nc1_trace", "cdnv", "within_var", "rank_b", "mean_norm"]


def run_analysis(path, scheduler=None, memory="auto", metrics=None):
    from ncprobe.analyze.run import AnalysisOptions, analyze_store

    m = analyze_store(path, options=AnalysisOptions(metrics=metrics), progress=False,
                      scheduler=scheduler, memory=memory)
    s = m["summary"].to_dataset().sel(grouping="label").isel(split=0, layer=0, checkpoint=0)
    return {k: s[k].values.tolist() for k in ("nc1", "nc1_trace", "ncc_acc", "etf_distance")
            if k in s}


def read_and_sum(path, chunk_files=False):
    """The floor: one dask pass that reads every chunk and sums it, nothing else; through
    xarray and zarr, or with ``chunk_files`` as the analysis reads a local store
    (ncprobe.data.store.chunk_file)."""
    import dask
    import xarray as xr

    if chunk_files:
        from ncprobe.data.store.chunk_file import chunk_file_array

        f = chunk_file_array(path, "train/layers/layer/features")
    else:
        f = xr.open_zarr(path, group="train/layers/layer")["features"].data
    return float(dask.compute(f.astype(np.float64).sum())[0])


def passes_from_memory(path):
    """Seconds of both exact passes over features already in memory (nothing read): what the
    analysis costs beyond reading, on the same threads as the floor. With the floor F and
    this P, a held layer costs about F + P and a streamed one 2 F + P (on a large store,
    where the floor is reading, not fixed costs)."""
    from ncprobe.analyze.cluster import compute_all, make_bar, persist_all
    from ncprobe.analyze.run import AnalysisOptions, _open_job
    from ncprobe.analyze.stats import class_stats, clean_reference, within_stats

    job = _open_job(path, AnalysisOptions())
    key = next(iter(job.feats))
    labels, pred, groups = job.inputs[key.split]
    bar = make_bar(False)
    (feats,) = persist_all([job.feats[key]], bar)
    t0 = time.perf_counter()  # as nc-analyze computes: same threads, same BLAS limits
    (stats,) = compute_all([class_stats(feats, groups, job.n_classes)], bar)
    compute_all([within_stats(feats, groups, stats, labels=labels, pred=pred,
                              reference=clean_reference(stats))], bar)
    return time.perf_counter() - t0


def reference(path, n_classes=10):
    """In-memory float64 NC1, NC1-trace, NCC accuracy and ETF distance, one condition at a time:
    the full D x D Sigma_W and an eigen-decomposed pseudo-inverse with an explicit threshold."""
    import xarray as xr

    f = xr.open_zarr(path, group="train/layers/layer")
    y = f["label"].values
    out = {k: [] for k in ("nc1", "nc1_trace", "ncc_acc", "etf_distance")}
    clean_means = None
    for q in range(f.sizes["condition"]):
        h = f["features"].isel(checkpoint=0, condition=q).values.astype(np.float64)
        mu = np.stack([h[y == c].mean(0) for c in range(n_classes)])
        mg = h.mean(0)
        r = h - mu[y]
        sw = r.T @ r / len(h)
        m = (mu - mg).T
        sb = m @ m.T / n_classes
        w, v = np.linalg.eigh(sb)
        keep = w > 1e-10 * w.max()
        sb_pinv = (v[:, keep] / w[keep]) @ v[:, keep].T
        out["nc1"].append(float(np.trace(sw @ sb_pinv) / n_classes))
        out["nc1_trace"].append(float(np.trace(sw) / np.trace(sb)))
        if clean_means is None:
            clean_means = mu
        d2 = ((h[:, None, :] - clean_means[None]) ** 2).sum(-1) if len(h) <= 5000 else \
            (clean_means**2).sum(1)[None] - 2 * h @ clean_means.T
        out["ncc_acc"].append(float((d2.argmin(1) == y).mean()))
        g = m.T @ m
        e = np.eye(n_classes) - 1 / n_classes
        out["etf_distance"].append(float(np.linalg.norm(g / np.linalg.norm(g)
                                                        - e / np.linalg.norm(e))))
        del h, r, sw
    return out


def main(quick: bool = False) -> dict:
    from ._measure import in_child

    n, d = (5_000, 512) if quick else (50_000, 4_096)
    n_wide, d_wide = (500, 8_192) if quick else (5_000, 65_536)
    tmp = Path(tempfile.mkdtemp(prefix="ncprobe-bench-"))
    try:
        t0 = time.perf_counter()
        cs = write_store(tmp / "big.zarr", n, d)
        print(f"store N={n:,} D={d:,} C=10, 2 conditions, {cs} samples/chunk: written in "
              f"{time.perf_counter() - t0:.0f} s")
        # the three side by side, in rotating order: this VM's speed drifts by 10-30 % within
        # seconds, so a ratio is only meaningful between neighbouring runs
        # "fits": a budget that holds the layer (``auto`` streams a local layer this large,
        # see ncprobe.analyze.memory.AUTO_LOCAL_BATCH)
        # first_pass: a selection with no second pass (read once); nc1: one metric that needs
        # both passes, streamed
        # floor_files: the same pass reading chunk files as the analysis does
        kinds = {"floor": (read_and_sum,), "floor_files": (read_and_sum, True),
                 "fits": (run_analysis, None, "8GiB"),
                 "streaming": (run_analysis, None, 0),
                 "first_pass": (run_analysis, None, 0, FIRST_PASS),
                 "nc1": (run_analysis, None, 0, ["nc1"]), "passes": (passes_from_memory,)}
        names = list(kinds)
        reps = []
        for rep in range(1 if quick else 3):
            order = names[rep % len(names):] + names[:rep % len(names)]
            runs = {k: in_child(kinds[k][0], str(tmp / "big.zarr"), *kinds[k][1:])
                    for k in order}
            reps.append(runs)
        got = reps[0]["fits"][2]
        if got != reps[0]["streaming"][2]:
            raise AssertionError("held and streamed analyses differ")
        for k in ("first_pass", "nc1"):
            if any(reps[0][k][2][m] != got[m] for m in reps[0][k][2]):
                raise AssertionError(f"the {k} selection differs from the default run")
        measured = ("fits", "streaming", "first_pass", "nc1")
        ratios = {k: sorted(r[k][0] / r["floor"][0] for r in reps)
                  for k in ("floor_files", *measured)}
        ratio = {k: v[len(v) // 2] for k, v in ratios.items()}
        files = {k: sorted(r[k][0] / r["floor_files"][0] for r in reps)[len(reps) // 2]
                 for k in measured}
        goal = {"fits": 1.3, "streaming": 2.2, "first_pass": 1.3, "nc1": 2.2}
        for k in ("floor", "floor_files", *measured):
            if k == "floor":
                note = " (read-and-sum dask pass, xarray)"
            else:
                note = (f"; ratio to the floor {', '.join(f'{x:.2f}' for x in ratios[k])}, "
                        f"median {ratio[k]:.2f}")
                note += (f" (goal <= {goal[k]}); to floor_files {files[k]:.2f}" if k in goal
                         else " (the same pass reading chunk files, as the analysis)")
            print(f"  {k:11s} (s): {', '.join(f'{r[k][0]:.1f}' for r in reps)}; peak "
                  f"{max(r[k][1] for r in reps):.2f} GiB{note}")
        passes = sorted(r["passes"][2] / r["floor"][0] for r in reps)
        p = passes[len(passes) // 2]
        seconds = ", ".join(f"{r['passes'][2]:.1f}" for r in reps)
        print(f"  both passes on the layer already in memory, nothing read: {seconds} s, "
              f"{', '.join(f'{x:.2f}' for x in passes)} x the floor (median {p:.2f}); "
              f"reading and the passes share the cores, so a held layer costs about {1 + p:.2f}"
              f" x the floor and a streamed one {2 + p:.2f} x")
        ref_t, ref_mem, want = in_child(reference, str(tmp / "big.zarr"))
        rel = max(abs(g - w) / max(abs(w), 1e-300) for k in want
                  for g, w in zip(got[k], want[k], strict=True))
        print(f"  in-memory float64 reference: {ref_t:.1f} s, peak {ref_mem:.2f} GiB; largest "
              f"relative difference {rel:.1e} over nc1, nc1_trace, ncc_acc, etf_distance")
        print(f"  nc1 clean {got['nc1'][0]:.6g} (reference {want['nc1'][0]:.6g}), "
              f"pgd {got['nc1'][1]:.6g} (reference {want['nc1'][1]:.6g})")
        one_t, _, _ = in_child(run_analysis, str(tmp / "big.zarr"), "localcluster:1", 0)
        two_t, _, _ = in_child(run_analysis, str(tmp / "big.zarr"), "localcluster:2", 0)
        print(f"  streaming on a dask LocalCluster, 1 worker process: {one_t:.1f} s; 2 worker "
              f"processes: {two_t:.1f} s; speed-up {one_t / two_t:.2f} (2 cores; cluster start "
              "included)")
        shutil.rmtree(tmp / "big.zarr")
        t0 = time.perf_counter()
        write_store(tmp / "wide.zarr", n_wide, d_wide)
        print(f"store N={n_wide:,} D={d_wide:,}: written in {time.perf_counter() - t0:.0f} s")
        w_t, w_mem, _ = in_child(run_analysis, str(tmp / "wide.zarr"), None, 0)
        print(f"  nc-analyze streaming: {w_t:.1f} s, peak {w_mem:.2f} GiB (goal < 2 GiB)")
        return {"ratio_floor_files": ratio["floor_files"],
                "ratio_fits": ratio["fits"], "ratio_streaming": ratio["streaming"],
                "ratio_first_pass": ratio["first_pass"], "ratio_nc1": ratio["nc1"],
                "passes_over_floor": p,
                "peak_gib": max(r["fits"][1] for r in reps), "rel_err": rel,
                "wide_peak_gib": w_mem, "speedup_2_workers": one_t / two_t}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


WHOLE = """
import resource, sys
from ncprobe.analyze.cli import main
code = main([sys.argv[1], "--out", sys.argv[2], "--no-progress"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
sys.exit(code)
"""


def whole_process(store, out) -> tuple[float, float]:
    """Wall time and peak memory of ``nc-analyze STORE --out OUT`` as its own process."""
    import subprocess
    import sys

    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WHOLE, str(store), str(out)], check=True,
                          capture_output=True, text=True)
    return time.perf_counter() - t0, float(done.stdout.strip().splitlines()[-1])


def by_classes(classes=(10, 100, 1_000), samples=(50_000,), d=512, quick=False) -> list[dict]:
    """Time and peak memory of the analysis for several class counts (and sample counts) at
    the same D, side by side, with the ratio to the first row."""
    from ._measure import in_child

    if quick:
        classes, samples, d = tuple(c for c in classes if c <= 100) or (10,), (5_000,), 64
    tmp = Path(tempfile.mkdtemp(prefix="ncprobe-bench-classes-"))
    rows = []
    try:
        for c, n in [(c, n) for c in classes for n in samples]:
            path = tmp / f"c{c}.zarr"
            write_store(path, n, d, c=c)
            wall, peak, _ = in_child(run_analysis, str(path))
            cli_wall, cli_peak = whole_process(path, tmp / f"c{c}-metrics.zarr")
            rows.append({"classes": c, "n": n, "wall": wall, "peak": peak,
                         "cli_wall": cli_wall, "cli_peak": cli_peak})
            shutil.rmtree(path)
        base = rows[0]
        print(f"D={d:,}, two conditions; analyze_store in a child, and nc-analyze as a whole "
              "process (start, imports, writing the metrics store):")
        print("| C | N | analyze_store | ratio | peak | nc-analyze | ratio | peak | ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['classes']:,} | {r['n']:,} | {r['wall']:.1f} s | "
                  f"{r['wall'] / base['wall']:.2f} | "
                  f"{r['peak']:.2f} GiB | {r['cli_wall']:.1f} s | "
                  f"{r['cli_wall'] / base['cli_wall']:.2f} | {r['cli_peak']:.2f} GiB | "
                  f"{r['cli_peak'] / base['cli_peak']:.2f} |")
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
