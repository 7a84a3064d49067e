"""The installed package: one import name, nothing generic at the top of site-packages."""

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_everything_under_ncprobe(tmp_path):
    # built from a copy: setuptools' build/ folder can keep files that the tree no longer has
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "runs", "*.egg-info", "__pycache__", ".*_cache", "out"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path), str(src)], check=True,
                   capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("ncprobe-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = sorted({n.split("/")[0] for n in names})
    assert top == ["ncprobe", wheel.name.split("-py")[0] + ".dist-info"], top
    # every module of the package folders, and the data files they read
    folders = ("data", "extract", "analyze", "plots", "demo", "study")
    shipped = [p.relative_to(ROOT).as_posix() for f in folders for p in (ROOT / f).rglob("*")
               if p.suffix in (".py", ".txt") and "__pycache__" not in p.parts]
    assert "data/datasets/imagenet1k_wnids.txt" in shipped
    missing = [m for m in shipped if f"ncprobe/{m}" not in names]
    assert not missing, missing
    assert not any(n.startswith(("ncprobe/benchmarks", "ncprobe/tests")) for n in names)
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert sorted(re.findall(r"= (\S+):main", entry_points)) == [
        "ncprobe.analyze.cli", "ncprobe.demo.cli", "ncprobe.extract.cli",
        "ncprobe.extract.training.cli", "ncprobe.plots.cli", "ncprobe.study.cli"]


def _readme_notebook_code() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## In a notebook", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


@pytest.mark.slow
def test_readme_notebook_example_beside_files_named_like_our_folders(tmp_path):
    """A notebook folder with its own data.py, plots.py and analyze.py must not break us."""
    from ncprobe.analyze.run import analyze_store
    from tests.helpers import synthetic_store

    run = tmp_path / "runs" / "digits-at"
    run.mkdir(parents=True)
    synthetic_store(run / "acts.zarr", n_classes=10, dims=(8, 12), n_per_class=12,
                    checkpoints=(0, 1))
    analyze_store(run / "acts.zarr", run / "metrics.zarr", progress=False)
    for name in ("data", "plots", "analyze"):
        (tmp_path / f"{name}.py").write_text(f"raise ImportError('the user\\'s own {name}.py')\n")
    code = _readme_notebook_code().replace('"test/layers/block4"', '"test/layers/l1"')
    lines = code.rstrip().splitlines()
    lines[-1] = f"print('result', {lines[-1].split('#')[0].strip()}.values.tolist())"
    script = tmp_path / "notebook.py"
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    # two checkpoints x three conditions of finite NC1 values
    values = ast.literal_eval(out.stdout.split("result", 1)[1].strip())
    assert len(values) == 2 and all(len(row) == 3 for row in values), out.stdout
    assert all(v > 0 for row in values for v in row), out.stdout
