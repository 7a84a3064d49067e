"""Figures and the report on small metrics stores."""

import subprocess
import sys

import matplotlib
import matplotlib.figure
import matplotlib.pyplot as plt
import pytest

from ncprobe.analyze.run import analyze_store
from ncprobe.data.store import open_activations
from ncprobe.plots import figures
from ncprobe.plots.cli import main
from ncprobe.plots.report import key_numbers, save_figure, write_report
from tests.helpers import synthetic_store


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("plots")
    out = {}
    for name, scale, seed in (("standard", 3.0, 0), ("pgd", 0.3, 1)):
        path = synthetic_store(d / f"{name}.zarr", attack_scale=scale, seed=seed,
                               checkpoints=(5, 10), dims=(16, 12, 6))[0]
        out[name] = (analyze_store(path, d / f"{name}-m.zarr", progress=False), path)
    return out


GRIDS = [figures.collapse_per_layer, figures.ncc_per_layer, figures.transition_heatmaps,
         figures.nc2_per_layer, figures.metrics_vs_epoch, figures.separation_per_layer]


@pytest.mark.parametrize("fn", GRIDS)
def test_grid_figures_return_a_figure_and_write_nothing(models, tmp_path, monkeypatch, fn):
    monkeypatch.chdir(tmp_path)
    trees = {k: v[0] for k, v in models.items()}
    fig = fn(trees)
    assert isinstance(fig, matplotlib.figure.Figure)
    assert sum(len(ax.lines) + len(ax.collections) for ax in fig.axes) >= 2
    assert list(tmp_path.iterdir()) == []
    plt.close(fig)


@pytest.mark.parametrize("fn", [figures.collapse_per_layer, figures.ncc_per_layer,
                                figures.alignment_angles])
def test_single_panel_figures_draw_on_the_users_ax(models, fn):
    fig, (left, right) = plt.subplots(1, 2)
    left.plot([0, 1], [0, 1])
    got = fn(models["pgd"][0], ax=right)
    assert got is right
    assert len(left.lines) == 1 and len(right.lines) + len(right.patches) >= 2
    assert len(fig.axes) == 2
    plt.close(fig)


def test_ax_with_several_models_is_refused(models):
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="`ax` takes one model, got 2"):
        figures.collapse_per_layer({k: v[0] for k, v in models.items()}, ax=ax)
    with pytest.raises(TypeError, match="models must be a metrics DataTree"):
        figures.ncc_per_layer([models["pgd"][0]])
    plt.close(fig)


def test_simplex_and_layer_transitions(models, tmp_path):
    tree, path = models["standard"]
    ax = figures.simplex_view(tree, open_activations(path), name="standard")
    assert len(ax.collections) >= 3
    assert save_figure(ax, tmp_path, "simplex_standard").stat().st_size > 2000
    fig = figures.transitions_across_layers(tree, "pgd", name="standard")
    assert len(fig.axes) == 3  # one per layer
    save_figure(fig, tmp_path, "transitions_layers_standard")
    assert (tmp_path / "transitions_layers_standard.pdf").stat().st_size > 2000


IMPORT_CHECK = """
import matplotlib
matplotlib.use("svg")
rc = dict(matplotlib.rcParams)
import ncprobe.plots, ncprobe.plots.figures, ncprobe.plots.report, ncprobe.plots.cli
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
changed = [k for k, v in matplotlib.rcParams.items() if str(rc[k]) != str(v)]
assert not changed, changed
print("ok")
"""


def test_importing_plots_changes_no_matplotlib_state():
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_report_theme_is_scoped(models, tmp_path):
    before = dict(matplotlib.rcParams)
    write_report({k: v[0] for k, v in models.items()}, tmp_path)
    assert {k: str(v) for k, v in matplotlib.rcParams.items()} == \
        {k: str(v) for k, v in before.items()}
    assert plt.get_fignums() == []  # every figure the report drew is closed


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


def test_separation_figure_draws_the_fit_of_every_condition(models, tmp_path):
    trees = {n: m for n, (m, _) in models.items()}
    fig = figures.separation_per_layer(trees)
    axes = fig.axes
    assert len(axes) == 2 * 3  # models x conditions, clean and attacked side by side
    for ax, (name, cond) in zip(axes, [(n, c) for n in trees for c in
                                       ("clean", "pgd", "pgd-next")], strict=True):
        law = trees[name]["separation"].to_dataset().sel(split="train", condition=cond)
        rho = float(law["rho"].isel(checkpoint=-1))
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert any(f"ρ = {rho:.3g}" in s for s in labels), labels
    save_figure(fig, tmp_path, "separation")
    assert (tmp_path / "separation.png").stat().st_size > 10_000
