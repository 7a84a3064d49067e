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

from ncprobe.analyze.findings import (
    conditions_by_kind,
    evaluate_findings,
    feature_layer,
    training_mode,
    value,
)
from ncprobe.data import schema as S

from . import figures as F

log = logging.getLogger("ncprobe.plots")


def key_numbers(models: dict) -> pd.DataFrame:
    """Per model and condition, at the layer feeding the classifier and the last checkpoint:
    test accuracy of the network and of the nearest clean centre, train NC1, test leap rate."""
    rows = []
    for name, tree in models.items():
        layer = feature_layer(tree)
        for cond in [str(c) for c in tree[S.SUMMARY_GROUP][S.CONDITION].values]:
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
                                          condition=cond)})
    return pd.DataFrame(rows)


def save_figure(drawn, out, name) -> Path:
    """Write ``name``.png (150 dpi) and ``name``.pdf of a Figure (or an Axes' Figure) under
    ``out``, close it, and return the PNG path."""
    fig = drawn if isinstance(drawn, Figure) else drawn.figure
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=150, bbox_inches="tight")
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
    return out / f"{name}.png"


def make_figures(models: dict, out, acts: dict | None = None) -> list[Path]:
    """Write every figure that the stores support, in the report's theme; return the PNG
    paths in report order."""
    steps = [("collapse_per_layer", lambda: F.collapse_per_layer(models)),
             ("ncc_per_layer", lambda: F.ncc_per_layer(models)),
             ("transitions", lambda: F.transition_heatmaps(models)),
             ("alignment", lambda: F.alignment_angles(models)),
             ("nc2_per_layer", lambda: F.nc2_per_layer(models))]
    for name, tree in models.items():
        atk = conditions_by_kind(tree).get("attack")
        if atk:
            steps.append((f"transitions_layers_{name}", lambda t=tree, a=atk, n=name:
                          F.transitions_across_layers(t, a, name=n)))
    if any(t[S.SUMMARY_GROUP].sizes[S.CHECKPOINT] > 1 for t in models.values()):
        steps.append(("metrics_vs_epoch", lambda: F.metrics_vs_epoch(models)))
    for name, tree in models.items():
        a = (acts or {}).get(name)
        if a is not None:
            steps.append((f"simplex_{name}", lambda t=tree, a=a, n=name:
                          F.simplex_view(t, a, name=n)))
    with F.theme():
        return [save_figure(make(), out, stem) for stem, make in steps]


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">' \
           f"<figcaption>{html.escape(path.stem)}</figcaption></figure>"


def write_report(models: dict, out, acts: dict | None = None) -> Path:
    """Figures plus ``report.html`` under ``out``; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pngs = make_figures(models, out, acts)
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
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222 }}
table {{ border-collapse: collapse; font-size: 0.85em }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: left }}
tr.pass td:nth-child(3) {{ color: #0a6 }} tr.fail td:nth-child(3) {{ color: #c30 }}
img {{ max-width: 100% }} figure {{ margin: 1.5em 0 }}
figcaption {{ color: #666; font-size: 0.8em }}
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
{''.join(_img(p) for p in pngs)}
</body></html>
"""
    path = out / "report.html"
    path.write_text(doc)
    log.info("wrote %s", path)
    return path
