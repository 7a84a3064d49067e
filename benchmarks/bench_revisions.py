"""Old code against new, side by side: is a change slower?

``python -m benchmarks compare --rev REV [--stores S ...] [--quick]`` exports revision REV
of this repository to a temporary folder and runs ``analyze_store`` with it and with the
working tree in fresh processes, alternating the order pair by pair (this VM's speed drifts
by 10-30 % within seconds, so only neighbouring runs compare). By default the store is the
analysis benchmark's (N = 50,000, D = 4,096, C = 10, two conditions); ``--stores`` times the
given stores instead, all analysed in one process per side (e.g. the demo's three).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("analyze", "data", "plots", "extract", "demo")

CHILD = """
import json, resource, sys, time
from ncprobe.analyze import run
stores = json.loads(sys.argv[1])
t0 = time.perf_counter()
for s in stores:
    run.analyze_store(s, progress=False)
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "module": run.__file__,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def export(rev: str, where: Path) -> Path:
    """Revision ``rev`` as importable ``ncprobe`` under ``where`` (a PYTHONPATH entry)."""
    tree = where / "tree"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    pkg = where / "path" / "ncprobe"
    pkg.mkdir(parents=True)
    for name in PACKAGES:
        if (tree / name).is_dir():
            (pkg / name).symlink_to(tree / name)
    return where / "path"


def timed(stores, pythonpath=None) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    paths = [str(Path(s).resolve()) for s in stores]
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(paths)], env=env,
                         capture_output=True, text=True, cwd=tempfile.gettempdir())
    if out.returncode:
        raise RuntimeError(f"analysis with {pythonpath or 'the working tree'} failed:\n"
                           f"{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(rev: str, stores=None, quick: bool = False, pairs: int = 3) -> dict:
    from .bench_analysis import write_store

    tmp = Path(tempfile.mkdtemp(prefix="ncprobe-compare-"))
    try:
        old_path = export(rev, tmp / "old")
        if not stores:
            n, d = (5_000, 512) if quick else (50_000, 4_096)
            write_store(tmp / "big.zarr", n, d)
            stores = [tmp / "big.zarr"]
            print(f"store N={n:,} D={d:,} C=10, 2 conditions")
        else:
            print(f"stores: {', '.join(map(str, stores))}")
        rows = []
        for rep in range(pairs):
            sides = ("old", "new") if rep % 2 == 0 else ("new", "old")
            got = {s: timed(stores, old_path if s == "old" else None) for s in sides}
            assert str(tmp) in got["old"]["module"] and str(tmp) not in got["new"]["module"]
            rows.append(got)
            ratio = got["new"]["wall"] / got["old"]["wall"]
            print(f"  pair {rep + 1} ({' then '.join(sides)}): old {got['old']['wall']:.1f} s, "
                  f"new {got['new']['wall']:.1f} s, new/old {ratio:.2f}; peak old "
                  f"{got['old']['peak']:.2f} GiB, new {got['new']['peak']:.2f} GiB")
        ratios = sorted(r["new"]["wall"] / r["old"]["wall"] for r in rows)
        median = ratios[len(ratios) // 2]
        print(f"  median new/old over {pairs} pairs: {median:.2f} (old = {rev})")
        return {"ratios": ratios, "median": median, "rows": rows}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
