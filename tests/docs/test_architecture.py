"""The stages' dependency rules (analysis, plots and data never import torch; nor does a
study's comparison), enforced."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "ncprobe.extract" \\
                or name.startswith("ncprobe.extract."):
            raise ImportError(f"{name} is forbidden in the analysis stage")
sys.meta_path.insert(0, Block())
import ncprobe.data, ncprobe.analyze, ncprobe.plots
import ncprobe.data.store, ncprobe.data.store.writer, ncprobe.data.datasets
import ncprobe.analyze.run, ncprobe.analyze.cli, ncprobe.analyze.stats
import ncprobe.plots.cli, ncprobe.plots.figures, ncprobe.plots.report
import ncprobe.study, ncprobe.study.cli, ncprobe.study.dataset, ncprobe.study.report
assert "torch" not in sys.modules
print("ok")
"""


def test_analysis_stage_imports_without_torch():
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_extract_never_imports_analyze_or_plots():
    for path in (ROOT / "extract").rglob("*.py"):
        text = path.read_text()
        for bad in ("ncprobe.analyze", "ncprobe.plots", "from ..analyze", "from ..plots"):
            assert bad not in text, f"{path} contains {bad!r}"


def test_no_unsafe_loading_in_the_code():
    """weights-only checkpoints, the restricted unpickler, no eval/exec/yaml.load."""
    import re

    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        top = path.parts[len(ROOT.parts)]
        if top.startswith(".venv") or top in ("tests", "benchmarks"):
            continue
        text = path.read_text()
        for pattern in (r"(?<![.\w])eval\(", r"(?<![.\w])exec\(", r"yaml\.load\(",
                        r"yaml\.unsafe_load",
                        r"pickle\.loads?\(", r"weights_only\s*=\s*False"):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            if "weights_only=True" not in call:
                offenders.append(f"{path.relative_to(ROOT)}: {call}")
    assert not offenders, offenders


def test_kernels_are_numpy_only():
    """The two layers of the analysis stay visible: kernels by axis (numpy, scipy) never
    import xarray or dask, and the xarray layer keeps its numpy arithmetic in the kernels."""
    import ast

    for path in (ROOT / "analyze" / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level <= 1, f"{path.name} imports from outside the kernels"
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:  # numpy, scipy and the standard library's plain helpers
                assert name.split(".")[0] in ("__future__", "numpy", "scipy", "functools",
                                              "dataclasses", "collections"), \
                    f"{path.name} imports {name}"


def test_no_one_letter_module_aliases():
    import re

    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] == ".venv" or "site-packages" in path.parts:
            continue  # environments, also benchmarks/out's compat ones
        for line in path.read_text().splitlines():
            # torch.nn.functional as F is the convention of every torch codebase
            if re.search(r"\bimport \S+ as [A-Z]\b", line) and "functional as F" not in line:
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders
