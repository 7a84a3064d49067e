"""``python -m benchmarks study``: what a study costs beyond its stages, and how it scales.

1. Overhead: the example manifest (examples/digits-study.toml; ``--quick``: its three MLPs)
   run by ``nc-study run`` against the same stages called by hand (train, extract, analyse
   per model, as a shell loop over nc-train/nc-extract/nc-analyze would), each in a fresh
   process, the two orders alternated. The comparison (study.zarr and the report) is timed
   apart: it is what the loop by hand does not give.
2. Scaling: time per model for studies of 1, 2, 4 and 8 small MLPs (goal: flat, i.e. linear
   in the number of models).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from ._measure import in_child

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits-study.toml"


def _quick_manifest(folder: Path, n_models: int | None = None) -> Path:
    """The example's MLPs (``n_models``: that many MLP variants, differing in seed)."""
    from ncprobe.study import load_manifest

    text = EXAMPLE.read_text()
    head = text.split("[[model]]", 1)[0]
    if n_models is None:
        body = "".join(f"[[model]]{m}" for m in text.split("[[model]]")[1:] if "mlp" in m)
    else:
        body = "".join(
            f'[[model]]\nname = "mlp-{i}"\ntrain = {{ arch = "mlp", mode = "pgd", epochs = 10, '
            f'lr = 0.05, eps = 0.125, steps = 3, seed = {i} }}\n\n' for i in range(n_models))
    path = folder / "m.toml"
    path.write_text(head + body)
    load_manifest(path)  # checked before anything is timed
    return path


def by_hand(manifest_path: str, out: str) -> float:
    """Seconds of the stages called one after another, as a loop by hand would (imports
    left out of the time, as in :func:`with_study`)."""
    from ncprobe.analyze.run import analyze_store
    from ncprobe.extract.extraction import extract_store
    from ncprobe.study import load_manifest
    from ncprobe.study.runner import _checkpoint, _extract_config

    manifest = load_manifest(manifest_path, out)
    t0 = time.perf_counter()
    for entry in manifest.models:
        folder = Path(out) / entry.name
        ckpt = _checkpoint(manifest, entry, "cpu", False)
        extract_store(_extract_config(manifest, entry, ckpt), folder / "acts.zarr",
                      device="cpu", progress=False)
        analyze_store(folder / "acts.zarr", folder / "metrics.zarr", progress=False)
    return time.perf_counter() - t0


def with_study(manifest_path: str, out: str) -> tuple[float, float]:
    """(seconds running the models, seconds comparing) of nc-study's run."""
    from ncprobe.study import build_study, load_manifest, run_study, write_study
    from ncprobe.study.report import write_study_report

    manifest = load_manifest(manifest_path, out)
    t0 = time.perf_counter()
    result = run_study(manifest, device="cpu", progress=False)
    assert not result.failed, result.failed
    t1 = time.perf_counter()
    tree = build_study(manifest)
    write_study(tree, manifest.folder / "study.zarr")
    write_study_report(tree, manifest.folder)
    return t1 - t0, time.perf_counter() - t1


def main(quick: bool = False) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ncprobe-bench-study-"))
    try:
        manifest = _quick_manifest(tmp) if quick else EXAMPLE
        rows = []
        for rep in range(2):
            order = ("hand", "study") if rep % 2 == 0 else ("study", "hand")
            times = {}
            for which in order:
                out = tmp / f"{which}-{rep}"
                if which == "hand":
                    _, _, times["hand"] = in_child(by_hand, str(manifest), str(out))
                else:
                    _, _, (run, compare) = in_child(with_study, str(manifest), str(out))
                    times["study"], times["compare"] = run, compare
                shutil.rmtree(out, ignore_errors=True)
            rows.append(times)
            print(f"  pair {rep + 1}: by hand {times['hand']:.1f} s, nc-study run "
                  f"{times['study']:.1f} s (ratio {times['study'] / times['hand']:.3f}), "
                  f"then study.zarr + report {times['compare']:.1f} s", flush=True)
        ratios = sorted(r["study"] / r["hand"] for r in rows)
        print(f"overhead of nc-study over the stages by hand ({manifest.name}): ratio "
              f"{', '.join(f'{r:.3f}' for r in ratios)} (goal <= 1.05); the comparison adds "
              f"{min(r['compare'] for r in rows):.1f} s")
        print("scaling: studies of small MLPs (10 epochs of PGD-AT each)")
        per_model = {}
        for n in (1, 2, 4, 8):
            folder = tmp / f"scale-{n}"
            folder.mkdir()
            path = _quick_manifest(folder, n)
            _, _, (run, compare) = in_child(with_study, str(path), str(folder / "out"))
            per_model[n] = run / n
            print(f"  {n} models: run {run:.1f} s ({run / n:.2f} s per model), compare "
                  f"{compare:.1f} s", flush=True)
        print(f"time per model at 8 models / at 1: {per_model[8] / per_model[1]:.2f} (goal: "
              "at most about 1, linear); each model beyond the fourth adds "
              f"{(8 * per_model[8] - 4 * per_model[4]) / 4:.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
