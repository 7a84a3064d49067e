"""benchmarks/gpu_check.py on the CPU, so that the GPU check cannot rot between GPU loans."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.torch
def test_gpu_check_runs_on_the_cpu(tmp_path):
    out = tmp_path / "table.md"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "gpu", "--device", "cpu",
                          "--small", "--out", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = out.read_text()
    assert table in run.stdout
    rows = re.findall(r"^\| (.+?) \| (PASS|FAIL|skip|info) \| (.+) \|$", table, re.M)
    checks = " / ".join(r[0] for r in rows)
    for expected in ("clean features", "PGD-3 features", "W h + b = logits, cpu",
                     "W h + b = logits, AMP", "throughput", "memory, host",
                     "torchrun 1 rank(s), gloo", "torchrun 2 ranks"):
        assert expected in checks, checks
    assert not [r for r in rows if r[1] == "FAIL"], table
    assert re.search(r"nc-extract [\d,]+ img/s", table)
