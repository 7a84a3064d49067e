"""The experimental protocols ``nc-demo`` runs: the digits demo and the paper's CIFAR setups.

A :class:`Protocol` says what to train (architectures x standard / PGD-AT / TRADES), with which
optimiser, schedule and checkpoint epochs, and what to extract (clean, PGD untargeted and
targeted "next", Gaussian noise of the attack's mean l_2 norm). :func:`run_protocol` trains,
extracts, analyses and reports; every stage resumes, so an interrupted run is finished by
running the same command again. docs/paper.md describes the paper presets and what differs
from Su et al.'s released code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from ncprobe.analyze.findings import evaluate_findings
from ncprobe.analyze.run import AnalysisOptions, analyze_store
from ncprobe.data.cli_support import UserError
from ncprobe.data.datasets import load_dataset
from ncprobe.data.store import open_activations
from ncprobe.extract.attacks import parse_attack, perturbation_norm
from ncprobe.extract.checkpoints import checkpoint_path, load_state_dict
from ncprobe.extract.extraction import ExtractConfig, extract_store
from ncprobe.extract.models import build_model, load_state
from ncprobe.extract.training import MODES, TrainConfig, train
from ncprobe.plots.report import key_numbers, write_report

log = logging.getLogger("ncprobe.demo")



@dataclass(frozen=True)
class Protocol:
    """One experimental protocol; the fields are its settings, recorded in findings.json."""

    name: str
    dataset: str
    archs: tuple
    epochs: int
    save_epochs: tuple
    eps: float
    train_steps: int
    attack: str  # the untargeted extraction attack; "target=next" is added for the targeted
    lr: float = 0.1
    batch_size: int = 128
    schedule: str = "piecewise"
    train_step_size: float | None = None
    beta: float = 6.0
    limit: int | None = None  # samples per split to extract (class-stratified)
    train_limit: int | None = None  # samples per split to train and evaluate on
    noise_samples: int = 1000  # test images whose attack sets the matched noise's l_2 norm
    layers: tuple | None = None  # capture points to extract; None: all
    seed: int = 0  # training's initialisation and batch order, and the attacks' random starts

    def shortened(self, epochs: int | None = None, limit: int | None = None) -> Protocol:
        """The same protocol with fewer epochs (checkpoint epochs kept where they fit) or a
        class-stratified subset of ``limit`` samples per split (a smoke run)."""
        out = self
        if epochs is not None:
            if epochs < 1:
                raise UserError(f"`epochs` must be >= 1, got {epochs}")
            keep = tuple(e for e in self.save_epochs if e < epochs) + (epochs,)
            out = dataclasses.replace(out, epochs=epochs, save_epochs=keep)
        if limit is not None:
            if limit < 1:
                raise UserError(f"`limit` must be >= 1, got {limit}")
            out = dataclasses.replace(out, limit=limit, train_limit=limit,
                                      noise_samples=min(limit, 1000))
        return out


def _paper(name, dataset):
    eps = 8 / 255
    return Protocol(
        name=name, dataset=dataset, archs=("preactresnet18", "vgg11bn"), epochs=400,
        save_epochs=(25, 50, 100, 150, 200, 300, 400), eps=eps, train_steps=10,
        train_step_size=2 / 255, lr=0.1, batch_size=128, schedule="piecewise",
        attack="pgd:norm=linf,eps=8/255,steps=20,step=2/255")


PRESETS = {
    # eps 1/8 and PGD-5 training: see docs/paper.md, "The digits demo", for why
    "digits": Protocol(name="digits", dataset="digits", archs=("mlp",), epochs=60,
                       save_epochs=(10, 30, 60), eps=0.125, train_steps=5, lr=0.05,
                       schedule="cosine", attack="pgd:norm=linf,eps=0.125,steps=20"),
    "paper-cifar10": _paper("paper-cifar10", "cifar10"),
    "paper-cifar100": _paper("paper-cifar100", "cifar100"),
}
#: the digits demo in about half a minute (CI): fewer epochs and attack steps in training, a
#: 300-sample subset extracted; its findings pass on seed 0 (tests/cli/test_demo.py)
QUICK_DIGITS = dataclasses.replace(PRESETS["digits"], epochs=30, save_epochs=(10, 30),
                                   train_steps=3, limit=300)


def run_folder(out: Path, protocol: Protocol, arch: str) -> Path:
    """``out`` for the digits demo (one architecture), else ``out/<arch>``."""
    return out if protocol.name == "digits" else out / arch


def train_all(out: Path, p: Protocol, arch: str, *, data_root, device, progress) -> None:
    for mode in MODES:
        cfg = TrainConfig(dataset=p.dataset, data_root=data_root, arch=arch, mode=mode,
                          epochs=p.epochs, batch_size=p.batch_size, lr=p.lr,
                          schedule=p.schedule, eps=p.eps, steps=p.train_steps,
                          step_size=p.train_step_size, beta=p.beta,
                          save_epochs=list(p.save_epochs), seed=p.seed, train_limit=p.train_limit)
        t0 = time.perf_counter()
        train(cfg, out / mode, resume=True, device=device, progress=progress,
              command=f"nc-demo --preset {p.name} ({arch}, {mode})")
        log.info("trained %s %s in %.1f s", arch, mode, time.perf_counter() - t0)


def matched_noise_eps(out: Path, p: Protocol, arch: str, *, data_root, device) -> float:
    """Mean l_2 norm of the untargeted attack on the standard model's test images (the
    paper's control: noise as large as the attack, in l_2)."""
    ds = load_dataset(p.dataset, root=data_root)
    ck = checkpoint_path(out / "standard" / "checkpoints", p.epochs)
    model = build_model(arch, ds.input_shape, ds.n_classes, ds.mean, ds.std)
    load_state(model, load_state_dict(ck), str(ck))
    model.to(device).eval()
    n = p.noise_samples
    x = torch.from_numpy(ds.images["test"][:n]).to(device)
    y = torch.from_numpy(ds.labels["test"][:n]).to(device)
    norms, attack = [], parse_attack(p.attack)
    for i in range(0, len(x), 256):
        x_adv, _, _ = attack.run(model, x[i:i + 256], y[i:i + 256], ds.n_classes, box=ds.box)
        norms.append(perturbation_norm(x_adv, x[i:i + 256], "l2"))
    return float(torch.cat(norms).mean())


def run_protocol(p: Protocol, out, *, data_root=None, device: str = "auto",
                 progress: bool = True) -> dict:
    """Train, extract, analyse and report every architecture of ``p`` under ``out``.

    Returns ``{arch: {"summary", "findings", "table"}}``; each architecture's folder also gets
    ``findings.json`` and ``report/report.html``.
    """
    from ncprobe.extract.runtime import pick_device

    dev = str(pick_device(device))
    results = {}
    for arch in p.archs:
        folder = run_folder(Path(out), p, arch)
        times = {}
        t0 = time.perf_counter()
        train_all(folder, p, arch, data_root=data_root, device=dev, progress=progress)
        times["train"] = time.perf_counter() - t0
        noise = matched_noise_eps(folder, p, arch, data_root=data_root, device=dev)
        attacks = ["clean", p.attack, f"{p.attack},target=next",
                   f"noise:kind=gaussian,eps={noise:.4f},name=noise-gaussian-l2"]
        t1 = time.perf_counter()
        for mode in MODES:
            cfg = ExtractConfig(checkpoints=[str(folder / mode / "checkpoints" / "epoch-*.pt")],
                                attacks=attacks, limit=p.limit, batch_size=512, seed=p.seed,
                                layers=list(p.layers) if p.layers else None)
            extract_store(cfg, folder / mode / "acts.zarr", overwrite=True, progress=progress,
                          device=dev, command=f"nc-demo --preset {p.name}")
        times["extract"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        metrics = {mode: analyze_store(folder / mode / "acts.zarr", folder / mode / "metrics.zarr",
                                       AnalysisOptions(reference_split="train"),
                                       progress=progress, overwrite=True) for mode in MODES}
        times["analyze"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        acts = {mode: open_activations(folder / mode / "acts.zarr") for mode in MODES}
        report = write_report(metrics, folder / "report", acts)
        times["plot"] = time.perf_counter() - t3
        findings = evaluate_findings(metrics)
        summary = {"protocol": {k: (str(Fraction(v).limit_denominator(1000))
                                    if isinstance(v, float) else v)
                                for k, v in dataclasses.asdict(p).items()},
                   "arch": arch, "times_s": {k: round(v, 1) for k, v in times.items()},
                   "noise_l2_eps": noise, "report": str(report),
                   "findings": [{"key": f.key, "verdict": f.verdict, "title": f.title,
                                 "detail": f.detail, "values": f.values,
                                 "margins": f.margins} for f in findings]}
        (folder / "findings.json").write_text(json.dumps(summary, indent=2, default=float))
        results[arch] = {"summary": summary, "findings": findings,
                         "table": key_numbers(metrics)}
    return results
