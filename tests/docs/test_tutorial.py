"""docs/tutorial.ipynb runs end to end on a quick digits run (outputs are never committed)."""

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"


def test_tutorial_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)


@pytest.mark.slow
@pytest.mark.torch
def test_tutorial_executes_on_a_quick_digits_run(digits_checkpoints, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    from ncprobe.analyze.run import analyze_store
    from ncprobe.extract.cli import main as extract

    run = tmp_path / "run"
    assert extract(["--checkpoint", str(digits_checkpoints / "epoch-0002.pt"), "--out",
                    str(run / "acts.zarr"), "--attack", "clean", "--attack",
                    "pgd:norm=linf,eps=0.1,steps=5", "--no-progress"]) == 0
    analyze_store(run / "acts.zarr", run / "metrics.zarr", progress=False)
    monkeypatch.setenv("NCPROBE_RUN", str(run))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = {i: c["outputs"] for i, c in enumerate(nb.cells) if c["cell_type"] == "code"}
    text = json.dumps(outputs)
    assert "largest difference from the metrics store" in text
    assert "pgd-linf-0.1" in text  # the per-condition table
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for out in outputs.values() for o in out)  # the figure was drawn
