"""End to end: nc-demo --quick trains, extracts, analyses and reports on digits."""

import json

import pytest

from ncprobe.demo.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "findings.json").read_text())
    keys = [f["key"] for f in summary["findings"]]
    assert keys[:4] == ["F1", "F2", "F3", "F4"]
    assert all(f["verdict"] in ("PASS", "FAIL") for f in summary["findings"][:4])
    for key in keys[:4]:
        assert key in out
    assert (tmp_path / "report" / "report.html").stat().st_size > 50_000
    for mode in ("standard", "pgd", "trades"):
        assert (tmp_path / mode / "metrics.csv").is_file()
