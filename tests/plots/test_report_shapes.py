"""nc-plot over the store shapes users make: one split (either), one or several checkpoints,
clean only, one layer, no classifier, two classes. Every figure the store supports is drawn;
the others are listed in the report with the reason."""

import numpy as np
import pytest

from ncprobe.analyze.run import analyze_store
from ncprobe.data.store.from_arrays import write_activation_store
from ncprobe.plots.cli import main as plot

CLEAN = {"name": "clean", "attack": "clean"}
PGD = {"name": "pgd", "attack": "pgd", "targeted": False}


def _store(path, *, splits=("train", "test"), checkpoints=(0,), conditions=(CLEAN, PGD),
           layers=("a", "b", "c"), n_classes=4, classifier=True, n_per_class=12):
    rng = np.random.default_rng(0)
    k, q = len(checkpoints), len(conditions)
    features, labels, outputs = {}, {}, {}
    for split in splits:
        y = np.repeat(np.arange(n_classes), n_per_class)
        labels[split] = y
        centres = 3 * rng.standard_normal((n_classes, 6))
        features[split] = {
            name: centres[y][None, None] + (1 + i) * rng.standard_normal((k, q, y.size, 6))
            for i, name in enumerate(layers)}
        pred = np.stack([np.stack([y] + [(y + 1) % n_classes] * (q - 1))] * k)
        outputs[split] = {"logits": np.eye(n_classes)[pred], "pred": pred,
                          "target": np.full(pred.shape, -1)}
    weight = rng.standard_normal((k, n_classes, 6))
    write_activation_store(path, features, labels, n_classes=n_classes, conditions=conditions,
                           checkpoints=checkpoints, outputs=outputs,
                           classifier=(layers[-1], weight, np.zeros((k, n_classes)))
                           if classifier else None)
    return path


SHAPES = {
    "test split only": ({"splits": ("test",)}, set()),
    "train split only": ({"splits": ("train",)}, set()),
    "several checkpoints": ({"checkpoints": (1, 2, 3)}, set()),
    "clean only": ({"conditions": (CLEAN,)},
                   {"alignment", "transitions_layers_m", "simplex_m"}),
    "one layer": ({"layers": ("only",)}, {"separation"}),
    "no classifier": ({"classifier": False}, set()),
    "two classes": ({"n_classes": 2}, {"simplex_m"}),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_report_of_whatever_store_a_user_makes(tmp_path, shape, capsys):
    kwargs, not_drawn = SHAPES[shape]
    store = _store(tmp_path / "m" / "acts.zarr", **kwargs)
    analyze_store(store, tmp_path / "m" / "metrics.zarr", progress=False)
    assert plot([str(tmp_path / "m" / "metrics.zarr"), "--out", str(tmp_path / "fig"),
                 "--names", "m", "--no-progress"]) == 0
    report = (tmp_path / "fig" / "report.html").read_text()
    drawn = {p.stem for p in (tmp_path / "fig").glob("*.png")}
    assert {"collapse_per_layer", "nc2_per_layer"} <= drawn
    assert ("separation" in drawn) == ("separation" not in not_drawn)
    assert not_drawn.isdisjoint(drawn)
    for stem in not_drawn:
        assert f"<li><b>{stem}</b>:" in report
    err = capsys.readouterr().err
    assert all(f"figure {stem} not drawn" in err for stem in not_drawn)
    if "checkpoints" in kwargs:
        assert "metrics_vs_epoch" in drawn
    if not not_drawn:
        assert "Figures not drawn" not in report

