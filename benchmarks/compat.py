"""``python -m benchmarks compat``: the declared lower bounds and the newest releases, tested.

Two environments are built under ``benchmarks/out/compat-*`` (each a fresh virtual
environment; pip reaches the package index), and the store, analysis and CLI tests run in
each, as xarray's and scikit-learn's "min-deps" and "latest" jobs do:

* ``minimum``: every requirement of setup.cfg (the base install and the ``extract`` extra)
  pinned to exactly its lower bound (``numpy>=1.26`` becomes ``numpy==1.26``), torch included;
  what those pins leave open, and the ``test`` extra, are the newest pip finds;
* ``newest``: the newest release of everything that this Python can install.

It prints one Markdown table (environment, key versions, tests passed), the one in
docs/store.md. A lower bound that fails here is raised in setup.cfg, with the reason beside it.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
TESTS = ["tests/store", "tests/analysis", "tests/cli"]
#: what the table names, in this order
SHOWN = ["numpy", "pandas", "xarray", "zarr", "numcodecs", "google-crc32c", "dask",
         "distributed", "fsspec", "scikit-learn", "scipy", "matplotlib", "torch"]
#: the ``test`` extra (pytest, and what the tests load: transformers for the Hugging Face
#: rows of the CLI's bad-input table, ...) is not ncprobe's requirements: the newest that the
#: pins allow, in both environments
EXTRAS = "extract,test"


def requirements() -> list[str]:
    """setup.cfg's base requirements and the ``extract`` extra, one per line, as written."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    lines += cfg["options.extras_require"]["extract"].splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def minimum_pins(reqs: list[str]) -> list[str]:
    """``name==lower bound`` for each requirement (extras dropped: pins are constraints)."""
    pins = []
    for req in reqs:
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)", req)
        if m is None:
            raise SystemExit(f"compat: setup.cfg requirement {req!r} has no lower bound")
        pins.append(f"{m[1]}=={m[3]}")
    return pins


def _run(cmd: list[str], log: Path, **kw) -> subprocess.CompletedProcess:
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, **kw)


def build(name: str, constraints: list[str]) -> tuple[Path, Path]:
    """A fresh venv with ncprobe[extract,test] under ``constraints``."""
    home = OUT / f"compat-{name}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    log = home / "log.txt"
    _run([sys.executable, "-m", "venv", str(home / "venv")], log, check=True)
    py = home / "venv" / "bin" / "python"
    (home / "constraints.txt").write_text("\n".join(constraints) + "\n")
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run(pip + ["-c", str(home / "constraints.txt"), "-e", f"{ROOT}[{EXTRAS}]"], log,
         check=True, cwd=home)
    return py, log


def versions(py: Path) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\n"
            f"print(json.dumps({{n: m.version(n) for n in {SHOWN!r}}}))")
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def run_tests(py: Path, log: Path) -> str:
    """pytest's closing line over the store, analysis and CLI tests."""
    done = _run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], log,
                cwd=ROOT)
    last = log.read_text().strip().splitlines()[-1]
    return last.strip("= ") + ("" if done.returncode == 0 else f" (exit {done.returncode})")


def main(which: str = "both") -> int:
    envs = {"minimum": minimum_pins(requirements()), "newest": []}
    if which != "both":
        envs = {which: envs[which]}
    rows, failed = [], False
    for name, pins in envs.items():
        t0 = time.perf_counter()
        print(f"  {name}: installing", file=sys.stderr, flush=True)
        py, log = build(name, pins)
        built = time.perf_counter() - t0
        print(f"  {name}: testing ({built:.0f} s to install; log {log})", file=sys.stderr,
              flush=True)
        result = run_tests(py, log)
        failed |= "failed" in result or "error" in result or "exit" in result
        v = versions(py)
        rows.append(f"| {name} | {', '.join(f'{k} {v[k]}' for k in SHOWN)} | {result} |")
    print("| environment | versions | store, analysis and CLI tests |\n|---|---|---|")
    print("\n".join(rows))
    return 1 if failed else 0
