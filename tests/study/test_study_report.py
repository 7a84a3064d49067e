"""The study dataset and report of a synthetic 60-model study, without torch: every figure is
written, the model table is sorted by robust accuracy, and labels give way to a legend."""

import warnings

import numpy as np
import pytest
import xarray as xr
import zarr

from ncprobe.analyze.run import analyze_store
from ncprobe.study import build_study, load_manifest, state, write_study, write_study_report
from ncprobe.study.report import figure_plan, model_table
from tests.helpers import synthetic_store

N_MODELS = 60


def finished_study(folder, n_models):
    """A manifest of ``n_models`` and, for each, stores as a finished run leaves them (the
    attack's strength varies by model, so the models differ in robustness)."""
    lines = ['[protocol]\ndataset = "synthetic"\nattacks = ["clean", "pgd"]\n']
    for i in range(n_models):
        training = ("standard", "pgd", "trades")[i % 3]
        pair = f'pair = "m{i - i % 3:02d}"\n' if i % 3 else ""
        lines.append(f'[[model]]\nname = "m{i:02d}"\ncheckpoint = "none.pt"\n'
                     f'training = "{training}"\nfamily = "f{i % 4}"\n{pair}')
    path = folder / "zoo.toml"
    path.write_text("\n".join(lines))
    manifest = load_manifest(path)
    for i, entry in enumerate(manifest.models):
        acts = state.acts_path(manifest, entry.name)
        acts.parent.mkdir(parents=True)
        synthetic_store(acts, n_classes=3, dims=(4, 6), n_per_class=10, seed=i,
                        attack_scale=0.2 + 0.05 * i, targeted=False)
        with warnings.catch_warnings():  # 10 samples a class: some predicted classes are empty
            warnings.simplefilter("ignore")
            analyze_store(acts, state.metrics_path(manifest, entry.name), progress=False)
        state.write_record(manifest, entry.name, {
            "status": state.DONE, "signature": entry.signature(manifest.protocol),
            "fingerprint": zarr.open_group(str(acts), mode="r").attrs["fingerprint"]})
    return manifest


@pytest.mark.slow
def test_sixty_models_every_figure_written(tmp_path):
    manifest = finished_study(tmp_path, N_MODELS)
    tree = build_study(manifest)
    write_study(tree, manifest.folder / "study.zarr")
    report = write_study_report(tree, manifest.folder)
    stems = [stem for stem, draw, _ in figure_plan(tree)]
    assert stems == ["key_metrics", "paired_slopes", "ncc_per_layer"]
    for stem in stems:
        assert (manifest.folder / "figures" / f"{stem}.png").stat().st_size > 10_000, stem
    text = report.read_text()
    assert text.count("<img") == 3 and "Only" not in text  # 60 models: no few-models warning
    table = model_table(tree)
    assert table.shape[0] == N_MODELS
    assert np.all(np.diff(table["robust acc"].values) <= 0)
    opened = xr.open_datatree(manifest.folder / "study.zarr", engine="zarr")
    assert opened["summary"].sizes["model"] == N_MODELS
    assert opened["pairs"].sizes["pair"] == 2 * N_MODELS // 3
    assert int(opened["comparison"]["n_models"].sel(metric="nc1", split="train",
                                                    condition="pgd")) == N_MODELS


def test_few_models_say_the_intervals_are_wide(tmp_path):
    manifest = finished_study(tmp_path, 4)
    tree = build_study(manifest)
    text = write_study_report(tree, manifest.folder).read_text()
    assert "Only 4 models" in text
    assert (manifest.folder / "figures" / "key_metrics.png").exists()


def test_a_model_analysed_without_its_feature_layer_reads_its_deepest(tmp_path):
    from ncprobe.analyze.run import AnalysisOptions

    manifest = finished_study(tmp_path, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analyze_store(state.acts_path(manifest, "m01"), state.metrics_path(manifest, "m01"),
                      AnalysisOptions(layers=["l0"]), progress=False, overwrite=True)
    s = build_study(manifest)["summary"]
    assert list(s["feature_layer"].values) == ["l1", "l0", "l1"]
    assert np.isfinite(float(s["nc1"].sel(model="m01", split="train", condition="clean",
                                           grouping="label")))
