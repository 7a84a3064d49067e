"""Training: standard cross-entropy, PGD adversarial training (Madry et al. 2018), TRADES
(Zhang et al. 2019). Deterministic on the CPU for a seed, resumable from the last epoch."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ncprobe.data.datasets import load_dataset
from ncprobe.data.datasets.subsets import stratified_subset
from ncprobe.data.errors import NcprobeError
from ncprobe.data.params import Interval, OneOf, Optional, check_params

from ..attacks import ce_objective, pgd
from ..attacks.pgd import NORMS, UNIT_BOX, default_step_size
from ..checkpoints import atomic_save, atomic_write_text, save_checkpoint
from ..models import build_model
from ..runtime import pick_device, set_threads, versions

log = logging.getLogger("ncprobe.train")

MODES = ("standard", "pgd", "trades")
SCHEDULES = ("piecewise", "multistep", "cosine", "constant")


class TrainError(NcprobeError):
    """A training configuration or output folder that cannot be used."""


@dataclass
class TrainConfig:
    """Everything that determines a training run; saved as ``run.json``. Checked when built:
    a bad value raises :class:`~ncprobe.data.params.ParameterError` naming it."""

    dataset: str = "digits"
    data_root: str | None = None
    arch: str = "mlp"
    mode: str = "standard"
    epochs: int = 120
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "piecewise"
    milestones: list = field(default_factory=list)
    eps: float = 8 / 255
    norm: str = "linf"
    steps: int = 10
    step_size: float | None = None
    beta: float = 6.0
    seed: int = 0
    save_epochs: list = field(default_factory=list)
    robust_eval: bool = False
    robust_eval_steps: int = 20
    robust_eval_limit: int | None = 1000
    #: BatchNorm mode while the inner attack runs: None -> "train" for pgd (Madry et al., Rice
    #: et al., Su et al.), "eval" for trades (Zhang et al.'s code)
    attack_bn: str | None = None
    #: train (and evaluate) on a class-stratified subset of this many samples per split
    train_limit: int | None = None

    _constraints = {
        "mode": OneOf(MODES), "schedule": OneOf(SCHEDULES), "norm": OneOf(NORMS),
        "eps": Interval(float, 0), "epochs": Interval(int, 1), "batch_size": Interval(int, 1),
        "steps": Interval(int, 1), "lr": Interval(float, 0, open_low=True),
        "momentum": Interval(float, 0), "weight_decay": Interval(float, 0),
        "step_size": Optional(Interval(float, 0, open_low=True)), "beta": Interval(float, 0),
        "seed": Interval(int), "train_limit": Optional(Interval(int, 1)),
        "attack_bn": Optional(OneOf(("train", "eval")))}

    def __post_init__(self):
        check_params(self, self._constraints)

    def validate(self) -> TrainConfig:
        """Fill in what depends on other fields (every checkpoint epoch within the run and
        the last one, the attack's step and BatchNorm mode); returns ``self``."""
        bad = [e for e in self.save_epochs if not 1 <= e <= self.epochs]
        if bad:
            raise TrainError(f"`save_epochs` {bad} outside the run's 1..{self.epochs}")
        self.save_epochs = sorted(set(self.save_epochs) | {self.epochs})
        if self.step_size is None:
            self.step_size = default_step_size(self.eps, self.steps)
        if self.attack_bn is None:
            self.attack_bn = "train" if self.mode == "pgd" else "eval"
        return self

    def attack_settings(self) -> dict:
        return {"norm": self.norm, "eps": self.eps, "steps": self.steps,
                "step_size": self.step_size, "beta": self.beta if self.mode == "trades"
                else None, "bn": self.attack_bn} if self.mode != "standard" else {}


@contextlib.contextmanager
def eval_mode(model):
    """Eval mode inside (BatchNorm uses running statistics and is not updated by the attack),
    the previous mode restored afterwards, also on error. Su et al.'s released TRADES left
    the model in eval mode for the rest of training; this cannot."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Learning-rate multiplier for 0-based ``epoch``."""
    if cfg.schedule == "piecewise":  # Su et al.: drops at 25% and 37.5% of training
        return 0.1 ** ((epoch >= 0.25 * cfg.epochs) + (epoch >= 0.375 * cfg.epochs))
    if cfg.schedule == "multistep":
        return 0.1 ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / cfg.epochs))
    return 1.0


def attack_mode(model, cfg: TrainConfig):
    """The BatchNorm mode of the inner attack (``cfg.attack_bn``): eval mode (restored after)
    or the train mode the model is in, where the attack's batches move the running stats."""
    return eval_mode(model) if cfg.attack_bn == "eval" else contextlib.nullcontext()


def trades_loss(model, x, y, cfg: TrainConfig, generator, box=UNIT_BOX):
    """TRADES: CE(f(x), y) + beta KL(f(x) || f(x')), x' maximising the KL in the eps-ball."""
    with attack_mode(model, cfg):
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)

        def kl(logits):
            return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="none").sum(1)

        # TRADES starts 0.001 * N(0, 1) from x rather than uniformly in the ball
        start = 0.001 * torch.randn(x.shape, generator=generator).to(x.device)
        x_adv = pgd(model, x, kl, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps,
                    norm=cfg.norm, start=start, box=box)
    logits = model(x)
    logits_adv = model(x_adv)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1),
                      reduction="batchmean")
    return F.cross_entropy(logits, y) + cfg.beta * robust, logits


def training_loss(model, x, y, cfg: TrainConfig, generator, box=UNIT_BOX):
    """The loss of one batch and the logits used for train accuracy; model in train mode.
    ``box`` is the dataset's valid input range, which the attacks stay inside."""
    if cfg.mode == "standard":
        logits = model(x)
        return F.cross_entropy(logits, y), logits
    if cfg.mode == "pgd":
        with attack_mode(model, cfg):
            x_adv = pgd(model, x, ce_objective(y), eps=cfg.eps, step_size=cfg.step_size,
                        steps=cfg.steps, norm=cfg.norm, generator=generator, box=box)
        logits = model(x_adv)
        return F.cross_entropy(logits, y), logits
    return trades_loss(model, x, y, cfg, generator, box)


def evaluate(model, x, y, batch_size=1000, attack=None, generator=None) -> float:
    """Accuracy on (x, y), optionally under ``attack(model, xb, yb, generator)``."""
    correct = 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            if attack is not None:
                xb = attack(model, xb, yb, generator)
            with torch.no_grad():
                correct += (model(xb).argmax(1) == yb).sum().item()
    return correct / len(x)


def robust_attack(cfg: TrainConfig, box=UNIT_BOX):
    step = default_step_size(cfg.eps, cfg.robust_eval_steps)

    def attack(model, x, y, generator):
        return pgd(model, x, ce_objective(y), eps=cfg.eps, step_size=step,
                   steps=cfg.robust_eval_steps, norm=cfg.norm, generator=generator, box=box)

    return attack


def _prepare_out(out: Path, cfg: TrainConfig, resume: bool, overwrite: bool) -> dict | None:
    """Check the output folder; return the training state to resume from, if any."""
    run_json = out / "run.json"
    if out.exists() and any(out.iterdir()):
        if not run_json.is_file():
            raise TrainError(f"output folder {str(out)!r} is not empty and holds no run.json; "
                             "choose another `out` (it is never overwritten)")
        old = json.loads(run_json.read_text()).get("config", {})
        new = json.loads(json.dumps(dataclasses.asdict(cfg)))
        if overwrite:  # only our own files: anything else in the folder is left alone
            for p in [run_json, out / "last.pt", out / "log.jsonl",
                      *(out / "checkpoints").glob("epoch-*")]:
                p.unlink(missing_ok=True)
            return None
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise TrainError(f"output folder {str(out)!r} holds a different run (differs in: "
                             f"{', '.join(diff)}); pass `overwrite` or choose another `out`")
        if not resume:
            raise TrainError(f"output folder {str(out)!r} already holds this run; pass `resume` "
                             "to continue it or `overwrite` to start again")
        last = out / "last.pt"
        if last.is_file():
            return torch.load(last, map_location="cpu", weights_only=True)
    return None


def _truncate_log(path: Path, last_epoch: int) -> None:
    """Keep only log records up to ``last_epoch``: a run killed between writing an epoch's
    record and its training state would otherwise log that epoch twice after resuming."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("epoch", 0) <= last_epoch:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line torn by the kill
    atomic_write_text(path, "".join(f"{line}\n" for line in keep))


def train(cfg: TrainConfig, out, *, resume: bool = False, overwrite: bool = False,
          device: str = "auto", threads: int | None = None, progress: bool = True,
          command: str = "") -> dict:
    """Train a model and write checkpoints, ``run.json`` and ``log.jsonl`` under ``out``.

    Returns the last epoch's log record.
    """
    cfg.validate()
    out = Path(out)
    ds = load_dataset(cfg.dataset, root=cfg.data_root)
    state = _prepare_out(out, cfg, resume, overwrite)
    dev = pick_device(device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, ds.input_shape, ds.n_classes, ds.mean, ds.std).to(dev)
    n_threads = set_threads(model, dev, threads)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    start_epoch = _resume(out, state, model, opt)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "run.json", json.dumps(
        {"config": dataclasses.asdict(cfg), "dataset": ds.provenance(), "command": command,
         "versions": versions(), "threads": n_threads, "device": str(dev)}, indent=2,
        default=str))
    data = _tensors(ds, cfg, dev)
    record = {}
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"nc-train {cfg.mode}", disable=not progress,
               initial=start_epoch, total=cfg.epochs, leave=False)
    for epoch in bar:
        t0 = time.perf_counter()
        loss, acc = _train_epoch(model, opt, cfg, data["train"], epoch, ds.box)
        record = _evaluate_epoch(model, cfg, data, epoch + 1, loss, acc,
                                 opt.param_groups[0]["lr"], ds.box)
        record["seconds"] = time.perf_counter() - t0
        with open(out / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        bar.set_postfix(loss=f"{record['loss']:.3f}", test=f"{record['test_acc']:.3f}")
        _save_epoch(out, model, opt, cfg, ds, record)
    bar.close()
    return record


def _resume(out: Path, state, model, opt) -> int:
    """Load the model and optimiser of an interrupted run; the epoch to start from."""
    if state is None:
        return 0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    start_epoch = int(state["epoch"])
    log.info("resuming %s after epoch %d", out, start_epoch)
    _truncate_log(out / "log.jsonl", start_epoch)
    return start_epoch


def _tensors(ds, cfg: TrainConfig, dev) -> dict:
    """(images, labels) on the device: ``train``, ``test`` (the train split when the dataset
    has no test split) and ``robust`` (the test images the robust accuracy is measured on)."""
    test = "test" if "test" in ds.images else "train"
    keep = {s: stratified_subset(ds.labels[s], cfg.train_limit) for s in {"train", test}}
    out = {name: (torch.from_numpy(ds.images[s][keep[s]]).to(dev),
                  torch.from_numpy(ds.labels[s][keep[s]]).to(dev))
           for name, s in (("train", "train"), ("test", test))}
    x, y = out["test"]
    limit = cfg.robust_eval_limit
    out["robust"] = (x[:limit], y[:limit]) if limit else (x, y)
    return out


def _train_epoch(model, opt, cfg: TrainConfig, train_data, epoch: int, box):
    """One epoch of SGD; its mean loss and training accuracy."""
    xtr, ytr = train_data
    for g in opt.param_groups:
        g["lr"] = cfg.lr * lr_factor(cfg, epoch)
    # per-epoch generators: the same batches and attack starts after a resume
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(xtr), generator=gen).to(xtr.device)
    model.train()
    tot_loss, tot_correct = 0.0, 0
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i:i + cfg.batch_size]
        x, y = xtr[idx], ytr[idx]
        loss, logits = training_loss(model, x, y, cfg, gen, box)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot_loss += loss.item() * len(idx)
        tot_correct += (logits.argmax(1) == y).sum().item()
    return tot_loss / len(xtr), tot_correct / len(xtr)


def _evaluate_epoch(model, cfg: TrainConfig, data, ep: int, loss, acc, lr, box) -> dict:
    """The epoch's log record: loss, accuracies, and the robust accuracy at checkpoints."""
    record = {"epoch": ep, "loss": loss, "train_acc": acc,
              "test_acc": evaluate(model, *data["test"]), "lr": lr}
    if cfg.robust_eval and ep in cfg.save_epochs:
        record["robust_acc"] = evaluate(model, *data["robust"], attack=robust_attack(cfg, box),
                                        generator=torch.Generator().manual_seed(cfg.seed))
    return record


def _save_epoch(out: Path, model, opt, cfg: TrainConfig, ds, record) -> None:
    """The checkpoint of a checkpoint epoch, and the state to resume from after every one."""
    ep = record["epoch"]
    if ep in cfg.save_epochs:
        save_checkpoint(model, out / "checkpoints", ep, {
            "arch": cfg.arch, "dataset": cfg.dataset, "data_root": cfg.data_root,
            "mode": cfg.mode, "attack": cfg.attack_settings(), "n_classes": ds.n_classes,
            "input_shape": list(ds.input_shape), "mean": list(ds.mean),
            "std": list(ds.std), "accuracies": {k: v for k, v in record.items()
                                                if k.endswith("acc")}})
    atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": ep},
                out / "last.pt")
