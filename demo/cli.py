"""``nc-demo``: reproduce the paper's findings on digits in a few minutes on a laptop CPU.

Trains a standard, a PGD-AT and a TRADES ``mlp``; extracts both splits, every layer, clean,
PGD-20 l_inf 0.1 (untargeted and targeted "next") and Gaussian noise of the same mean l_2 norm
as the untargeted attack; analyses each store; writes the figures and report.html; prints
the findings. Every stage resumes, so a rerun only redoes what is missing.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ncprobe.analyze.findings import evaluate_findings
from ncprobe.analyze.run import AnalysisOptions, analyze_store
from ncprobe.data.cli_support import OneLineParser, add_common_flags, run_command
from ncprobe.data.store import open_activations
from ncprobe.extract.attacks import parse_attack, perturbation_norm, run_condition
from ncprobe.extract.checkpoints import checkpoint_path, load_state_dict
from ncprobe.extract.extraction import ExtractConfig, extract_store
from ncprobe.extract.models import build_model, load_state
from ncprobe.extract.training import TrainConfig, train
from ncprobe.plots.report import key_numbers, write_report

log = logging.getLogger("ncprobe.demo")

EPS = 0.1
ATTACK = f"pgd:norm=linf,eps={EPS},steps=20"
MODES = ("standard", "pgd", "trades")


@dataclass(frozen=True)
class Plan:
    epochs: int
    save_epochs: tuple
    train_steps: int
    limit: int | None


FULL = Plan(epochs=60, save_epochs=(10, 30, 60), train_steps=10, limit=None)
QUICK = Plan(epochs=8, save_epochs=(4, 8), train_steps=3, limit=300)


def train_all(out: Path, plan: Plan, progress: bool) -> None:
    for mode in MODES:
        cfg = TrainConfig(dataset="digits", arch="mlp", mode=mode, epochs=plan.epochs,
                          batch_size=128, lr=0.05, schedule="cosine", eps=EPS,
                          steps=plan.train_steps, save_epochs=list(plan.save_epochs), seed=0)
        t0 = time.perf_counter()
        train(cfg, out / mode, resume=True, progress=progress, command=f"nc-demo ({mode})")
        log.info("trained %s in %.1f s", mode, time.perf_counter() - t0)


def matched_noise_eps(out: Path, plan: Plan) -> float:
    """Mean l_2 norm of the untargeted attack on the standard model's test split (the
    paper's control: noise as large as the attack, in l_2)."""
    from ncprobe.data.datasets import load_dataset

    ds = load_dataset("digits")
    ck = checkpoint_path(out / "standard" / "checkpoints", plan.epochs)
    model = build_model("mlp", ds.input_shape, ds.n_classes, ds.mean, ds.std).eval()
    load_state(model, load_state_dict(ck), str(ck))
    x = torch.from_numpy(ds.images["test"])
    y = torch.from_numpy(ds.labels["test"])
    x_adv, _, _ = run_condition(model, x, y, parse_attack(ATTACK), ds.n_classes)
    return float(perturbation_norm(x_adv, x, "l2").mean())


def run_demo(out, quick: bool = False, progress: bool = True) -> dict:
    """Run every stage; return timings, findings and key numbers (also written as JSON)."""
    out = Path(out)
    plan = QUICK if quick else FULL
    times = {}
    t0 = time.perf_counter()
    train_all(out, plan, progress)
    times["train"] = time.perf_counter() - t0
    noise_eps = matched_noise_eps(out, plan)
    attacks = ["clean", ATTACK, f"{ATTACK},target=next",
               f"noise:kind=gaussian,eps={noise_eps:.4f},name=noise-gaussian-l2"]
    t1 = time.perf_counter()
    for mode in MODES:
        cfg = ExtractConfig(checkpoints=[str(out / mode / "checkpoints" / "epoch-*.pt")],
                            attacks=attacks, limit=plan.limit, batch_size=512)
        extract_store(cfg, out / mode / "acts.zarr", overwrite=True, progress=progress,
                      command="nc-demo")
    times["extract"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    metrics = {}
    for mode in MODES:
        metrics[mode] = analyze_store(out / mode / "acts.zarr", out / mode / "metrics.zarr",
                                      AnalysisOptions(reference_split="train"),
                                      progress=progress, overwrite=True)
    times["analyze"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    acts = {mode: open_activations(out / mode / "acts.zarr") for mode in MODES}
    report = write_report(metrics, out / "report", acts)
    times["plot"] = time.perf_counter() - t3
    findings = evaluate_findings(metrics)
    table = key_numbers(metrics)
    summary = {"times_s": {k: round(v, 1) for k, v in times.items()},
               "noise_l2_eps": noise_eps, "quick": quick, "report": str(report),
               "findings": [{"key": f.key, "verdict": f.verdict, "title": f.title,
                             "detail": f.detail, "values": f.values} for f in findings]}
    (out / "findings.json").write_text(json.dumps(summary, indent=2, default=float))
    return {"summary": summary, "findings": findings, "table": table}


def _run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: the command never opens a window
    t0 = time.perf_counter()
    result = run_demo(args.out, quick=args.quick, progress=not args.no_progress)
    table = result["table"]
    cols = ["model", "condition", "net_acc (test)", "ncc_acc (test)", "nc1 (train)",
            "leap_rate (test)"]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    for f in result["findings"]:
        print(f"{f.key:9s} {f.verdict:5s} {f.title}\n{'':16s}{f.detail}")
    print(f"\nreport: {result['summary']['report']}")
    print(f"total {time.perf_counter() - t0:.0f} s (" + ", ".join(
        f"{k} {v:.0f} s" for k, v in result["summary"]["times_s"].items()) + ")")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="nc-demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[1] if __doc__ else "",
        epilog="examples:\n  nc-demo --out runs/demo\n  nc-demo --quick --out /tmp/demo")
    p.add_argument("--out", default="runs/demo", help="folder for runs, stores and report")
    p.add_argument("--quick", action="store_true",
                   help="fewer epochs and a 300-sample subset: under a minute, for CI")
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("nc-demo", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
