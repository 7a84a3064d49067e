"""nc-demo's presets: the paper's CIFAR protocol end to end on CIFAR-shaped synthetic batches
in the CIFAR binary format (shortened: the full protocol is days on a GPU)."""

import dataclasses
import json
from fractions import Fraction
from pathlib import Path

import pytest

from ncprobe.demo.cli import main
from ncprobe.demo.protocol import PRESETS


def test_docs_protocol_table_states_the_preset():
    """docs/paper.md's protocol table and the paper-cifar presets must say the same."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "paper.md").read_text()
    table = {line.split("|")[1].strip(): line.split("|")[2].strip()
             for line in doc.splitlines() if line.startswith("| ") and line.count("|") == 3}
    p = PRESETS["paper-cifar10"]
    assert PRESETS["paper-cifar100"] == dataclasses.replace(p, name="paper-cifar100",
                                                            dataset="cifar100")
    train = table["training"]
    assert f"lr {p.lr:g}" in train and f"batch {p.batch_size}" in train
    assert f"{p.epochs} epochs" in train and p.schedule in train
    step = Fraction(p.train_step_size).limit_denominator(1000)
    eps = Fraction(p.eps).limit_denominator(1000)
    assert f"PGD-{p.train_steps}, l_inf {eps}, step {step}" in table["modes"]
    assert f"beta {p.beta:g}" in table["modes"]
    assert table["checkpoints"] == "epochs " + ", ".join(map(str, p.save_epochs))
    assert f"PGD-20 l_inf {eps} step {step}" in table["extraction"]
    assert " and ".join(a for a in ("PreActResNet18", "VGG11-BN")) in table["models"]


def test_shortened_keeps_the_checkpoints_that_fit():
    short = PRESETS["paper-cifar10"].shortened(epochs=120, limit=64)
    assert short.save_epochs == (25, 50, 100, 120) and short.train_limit == 64
    assert short.noise_samples == 64 and short.limit == 64


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize(("preset", "name", "archs", "layers"), [
    ("paper-cifar10", "cifar10", "preactresnet18,vgg11bn", "penultimate,logits"),
    ("paper-cifar100", "cifar100", "vgg11bn", "conv7,conv8,penultimate,logits")])
def test_paper_presets_run_end_to_end_and_resume(tmp_path, capsys, preset, name, archs,
                                                  layers):
    from ncprobe.data.datasets import write_cifar_binary

    write_cifar_binary(tmp_path / "data", name, n_train=8 if name == "cifar10" else 40,
                       n_test=20)
    args = ["--preset", preset, "--data-root", str(tmp_path / "data"), "--epochs", "1",
            "--limit", "20", "--archs", archs, "--layers", layers, "--out", str(tmp_path / "run"),
            "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    for arch in archs.split(","):
        folder = tmp_path / "run" / arch
        summary = json.loads((folder / "findings.json").read_text())
        assert summary["arch"] == arch and summary["protocol"]["name"] == preset
        assert [f["key"] for f in summary["findings"]][:4] == ["F1", "F2", "F3", "F4"]
        assert (folder / "report" / "report.html").stat().st_size > 10_000
        for mode in ("standard", "pgd", "trades"):
            side = json.loads((folder / mode / "checkpoints" / "epoch-0001.json").read_text())
            assert side["arch"] == arch and side["dataset"] == name
    # a rerun finds every stage done and redoes none of the training
    log = (tmp_path / "run" / archs.split(",")[0] / "pgd" / "log.jsonl").read_text()
    assert main(args) == 0
    assert (tmp_path / "run" / archs.split(",")[0] / "pgd" / "log.jsonl").read_text() == log
