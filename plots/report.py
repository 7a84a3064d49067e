"""``report.html``: every figure, a table of the key numbers, and the four findings as checks.

Self-contained: the figures are embedded as PNG data, so the file can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import logging
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from ncprobe.analyze.findings import evaluate_findings
from ncprobe.analyze.kernels.separation import MIN_LAYERS
from ncprobe.analyze.metrics_reader import (
    conditions_by_kind,
    feature_layer,
    separation,
    training_mode,
    value,
)
from ncprobe.data import schema

from . import figures

log = logging.getLogger("ncprobe.plots")


def key_numbers(models: dict) -> pd.DataFrame:
    """Per model and condition, at the layer feeding the classifier and the last checkpoint:
    test accuracy of the network and of the nearest clean centre, train NC1, test leap rate."""
    rows = []
    for name, tree in models.items():
        layer = feature_layer(tree)
        for cond in [str(c) for c in tree[schema.SUMMARY_GROUP][schema.CONDITION].values]:
            rows.append({
                "model": name, "condition": cond, "layer": layer,
                "net_acc (test)": value(tree, "net_acc", split="test", layer=layer,
                                        condition=cond),
                "ncc_acc (test)": value(tree, "ncc_acc", split="test", layer=layer,
                                        condition=cond),
                "nc1 (train)": value(tree, "nc1", split="train", layer=layer, condition=cond),
                "nc1_shuffled (train)": value(tree, "nc1_shuffled", split="train", layer=layer,
                                              condition=cond),
                "leap_rate (test)": value(tree, "leap_rate", split="test", layer=layer,
                                          condition=cond),
                "pred_outside (test)": value(tree, "pred_outside", split="test", layer=layer,
                                             condition=cond)})
    table = pd.DataFrame(rows)
    # a model with more outputs than the dataset's classes: leaps to no vertex of the simplex
    outside = table.pop("pred_outside (test)")
    if (outside.fillna(0) > 0).any():
        table["pred_outside (test)"] = outside
    return table


def save_figure(drawn, out, name) -> Path:
    """Write ``name``.png (150 dpi) and ``name``.pdf of a Figure (or an Axes' Figure) under
    ``out``, close it, and return the PNG path."""
    fig = drawn if isinstance(drawn, Figure) else drawn.figure
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # the tight box once for both files: finding it draws the whole figure
    box = fig.get_tightbbox().padded(plt.rcParams["savefig.pad_inches"])
    fig.savefig(out / f"{name}.png", dpi=150, bbox_inches=box)
    fig.savefig(out / f"{name}.pdf", bbox_inches=box)
    plt.close(fig)
    return out / f"{name}.png"


def _values(tree, dim) -> set:
    return {str(v) for v in tree[schema.SUMMARY_GROUP][dim].values}


def _split(models: dict, preferred: str) -> str | None:
    """``preferred`` if every store has that split, else another split they all have."""
    common = set.intersection(*(_values(t, schema.SPLIT) for t in models.values()))
    if preferred in common:
        return preferred
    return next((s for s in ("train", "test") if s in common), min(common, default=None))


def figure_plan(models: dict, acts: dict | None = None) -> list[tuple]:
    """``(stem, draw, reason)`` of every figure of the report, in order: ``draw`` makes the
    figure, or is None and ``reason`` says in one line why these stores cannot give it.

    Each figure uses the split it is about when every store has it (NC1 and NC2: train;
    NCC, transitions, alignment: test), else the split the stores share.
    """
    train, test = _split(models, "train"), _split(models, "test")
    no_clean = [n for n, t in models.items() if schema.CLEAN not in _values(t, schema.CONDITION)]
    no_attack = [n for n, t in models.items() if _values(t, schema.CONDITION) <= {schema.CLEAN}]
    need_clean = (f"{', '.join(no_clean)} has no clean condition (the NCC centres are clean "
                  "class means)") if no_clean else None
    no_split = None if train else "the stores share no split"
    plan = [("collapse_per_layer", lambda: figures.collapse_per_layer(models, train), no_split),
            ("ncc_per_layer", lambda: figures.ncc_per_layer(models, test), no_split or need_clean),
            ("transitions", lambda: figures.transition_heatmaps(models, test),
             no_split or need_clean),
            ("alignment", lambda: figures.alignment_angles(models, test),
             no_split or need_clean or (f"{', '.join(no_attack)} has no condition besides "
                                        "clean to align with it" if no_attack else None)),
            ("nc2_per_layer", lambda: figures.nc2_per_layer(models, train), no_split or need_clean),
            ("separation", lambda: figures.separation_per_layer(models, train),
             no_split or _separation_reason(models))]
    for name, tree in models.items():
        atk = conditions_by_kind(tree).get("attack")
        plan.append((f"transitions_layers_{name}",
                     lambda t=tree, a=atk, n=name: figures.transitions_across_layers(t, a, test, n),
                     no_split or need_clean or (None if atk else
                                                f"{name} has no untargeted attack condition")))
    if any(t[schema.SUMMARY_GROUP].sizes[schema.CHECKPOINT] > 1 for t in models.values()):
        plan.append(("metrics_vs_epoch", lambda: figures.metrics_vs_epoch(models, test),
                     no_split or need_clean))
    for name, tree in models.items():
        a = (acts or {}).get(name)
        if a is not None:
            plan.append((f"simplex_{name}", lambda t=tree, a=a, n=name:
                         figures.simplex_view(t, a, split=test, name=n),
                         _simplex_reason(tree, a, test)))
    return [(stem, None if reason else draw, reason) for stem, draw, reason in plan]


def _separation_reason(models: dict) -> str | None:
    """Why the law of data separation cannot be drawn, or None."""
    old = [n for n, t in models.items() if separation(t) is None]
    if old:
        return f"{', '.join(old)} was analysed before ncprobe fitted the law (analyse it again)"
    few = {n: t[schema.SUMMARY_GROUP].sizes[schema.LAYER] for n, t in models.items()}
    few = {n: k for n, k in few.items() if k < MIN_LAYERS}
    if few:
        return (f"the law is fitted over at least {MIN_LAYERS} layers; "
                + ", ".join(f"{n} has {k}" for n, k in few.items()))
    return None


def _simplex_reason(tree, acts, split) -> str | None:
    """Why the simplex view of ``tree`` cannot be drawn, or None."""
    if split is None:
        return "the stores share no split"
    if int(tree.attrs.get("n_classes") or acts.attrs.get("n_classes", 0)) < 3:
        return "a face of the simplex needs three classes"
    conditions = _values(tree, schema.CONDITION)
    if schema.CLEAN not in conditions or len(conditions) < 2:
        return ("it shows clean samples beside perturbed ones: the store needs clean and "
                "another condition")
    try:
        acts[f"{split}/{schema.LAYERS_GROUP}/{feature_layer(tree)}"]
    except KeyError:
        return f"the activation store has no {split} features of {feature_layer(tree)}"
    return None


def make_figures(models: dict, out, acts: dict | None = None) -> tuple[list[Path], dict]:
    """Write every figure that the stores support, in the report's theme; return the PNG
    paths in report order and ``{stem: reason}`` of the figures left out (each logged)."""
    pngs, skipped = [], {}
    with figures.theme():
        for stem, draw, reason in figure_plan(models, acts):
            if draw is None:
                log.warning("figure %s not drawn: %s", stem, reason)
                skipped[stem] = reason
            else:
                pngs.append(save_figure(draw(), out, stem))
    return pngs, skipped


#: the look of ncprobe's HTML reports (this one and a study's)
STYLE = """body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto;
       color: #222 }
table { border-collapse: collapse; font-size: 0.85em }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: left }
img { max-width: 100% } figure { margin: 1.5em 0 }
figcaption { color: #666; font-size: 0.8em }"""


def embed_png(path: Path) -> str:
    """An HTML figure holding the PNG at ``path`` as data (the report stays one file)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">' \
           f"<figcaption>{html.escape(path.stem)}</figcaption></figure>"


def _skipped_html(skipped: dict) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>"
                    for k, v in skipped.items())
    return f'<h3 id="not-drawn">Figures not drawn</h3><ul>{items}</ul>'


def write_report(models: dict, out, acts: dict | None = None) -> Path:
    """Figures plus ``report.html`` under ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs, skipped = make_figures(models, out, acts)
    table = key_numbers(models)
    table.to_csv(out / "key_numbers.csv", index=False)
    findings = evaluate_findings(models)
    roles = {n if n in ("standard", "pgd") else training_mode(t) for n, t in models.items()}
    pair = {"standard", "pgd"} <= roles
    rows = "".join(
        f"<tr class='{f.verdict.lower().replace('/', '') if pair else 'na'}'><td>{f.key}</td>"
        f"<td>{html.escape(f.title)}</td><td><b>{f.verdict if pair else '&mdash;'}</b></td>"
        f"<td>{html.escape(f.detail)}</td></tr>" for f in findings)
    protocol = ("Verdicts use the thresholds of the digits demo's protocol (docs/paper.md); "
                "other models and datasets may need others." if pair else
                "These stores are not a standard / PGD-AT pair: the numbers are shown "
                "without verdicts.")
    sources = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(str(t.attrs.get('source')))}"
                      "</li>" for n, t in models.items())
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ncprobe report</title>
<style>
{STYLE}
tr.pass td:nth-child(3) {{ color: #0a6 }} tr.fail td:nth-child(3) {{ color: #c30 }}
</style></head><body>
<h1>ncprobe report</h1>
<p>Neural-collapse geometry under attack, after Su, Zhang, Tsilivis and Kempe, "On the
Robustness of Neural Collapse and the Neural Collapse of Robustness" (TMLR 2024). NC1 is
(1/C) Tr(&Sigma;<sub>W</sub> &Sigma;<sub>B</sub><sup>+</sup>) (exact); NCC centres are the clean
class means of the train split.</p>
<ul>{sources}</ul>
<h2 id="findings">Findings</h2>
<p>{html.escape(protocol)}</p>
<table><tr><th></th><th>finding</th><th>verdict</th><th>numbers</th></tr>{rows}</table>
<h2 id="numbers">Key numbers (layer feeding the classifier, last checkpoint)</h2>
{table.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="n/a")}
<h2 id="figures">Figures</h2>
{''.join(embed_png(p) for p in pngs)}
{_skipped_html(skipped)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(doc)
    log.info("wrote %s", path)
    return path
