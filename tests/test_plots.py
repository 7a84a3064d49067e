"""Figures and the report on small metrics stores."""

import matplotlib.figure
import pytest

from ncprobe.analyze.run import analyze_store
from ncprobe.data.store import open_activations
from ncprobe.plots import figures as F
from ncprobe.plots.cli import main
from ncprobe.plots.report import key_numbers, write_report
from tests.helpers import synthetic_store


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("plots")
    out = {}
    for name, scale, seed in (("standard", 3.0, 0), ("pgd", 0.3, 1)):
        path = synthetic_store(d / f"{name}.zarr", attack_scale=scale, seed=seed,
                               checkpoints=(5, 10))[0]
        out[name] = (analyze_store(path, d / f"{name}-m.zarr", progress=False), path)
    return out


FIGS = [("collapse_per_layer", F.collapse_per_layer), ("ncc_per_layer", F.ncc_per_layer),
        ("transitions", F.transition_heatmaps), ("alignment", F.alignment_angles),
        ("nc2_per_layer", F.nc2_per_layer), ("metrics_vs_epoch", F.metrics_vs_epoch)]


@pytest.mark.parametrize(("stem", "fn"), FIGS)
def test_each_figure_returns_and_writes(models, tmp_path, stem, fn):
    trees = {k: v[0] for k, v in models.items()}
    fig = fn(trees, out=tmp_path)
    assert isinstance(fig, matplotlib.figure.Figure)
    for ext in ("png", "pdf"):
        assert (tmp_path / f"{stem}.{ext}").stat().st_size > 2000


def test_simplex_and_layer_transitions(models, tmp_path):
    tree, path = models["standard"]
    fig = F.simplex_view(tree, open_activations(path), out=tmp_path, name="standard")
    assert len(fig.axes[0].collections) >= 3
    assert (tmp_path / "simplex_standard.png").stat().st_size > 2000
    F.transitions_across_layers(tree, "pgd", out=tmp_path, name="standard")
    assert (tmp_path / "transitions_layers_standard.pdf").stat().st_size > 2000


def test_report_has_table_and_findings(models, tmp_path):
    trees = {k: v[0] for k, v in models.items()}
    acts = {k: open_activations(v[1]) for k, v in models.items()}
    path = write_report(trees, tmp_path, acts)
    html = path.read_text()
    assert 'id="findings"' in html and 'id="numbers"' in html
    for key in ("F1", "F2", "F3", "F4"):
        assert f"<td>{key}</td>" in html
    assert html.count("data:image/png;base64") >= 8
    table = key_numbers(trees)
    assert set(table.model) == {"standard", "pgd"} and len(table) == 6
    assert "ncc_acc (test)" in html and f"{table['net_acc (test)'].iloc[0]:.4g}" in html


def test_cli(models, tmp_path, capsys):
    args = [str(p.parent / f"{n}-m.zarr") for n, (_, p) in models.items()]
    assert main([*args, "--names", "standard,pgd", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").is_file()
    assert main([*args, "--names", "one", "--out", str(tmp_path)]) == 2
    assert "--names needs 2 distinct names" in capsys.readouterr().err
