"""``nc-train``: train a model (standard, PGD adversarial, TRADES) and save checkpoints."""

from __future__ import annotations

import argparse
import shlex
import sys
from fractions import Fraction

from ncprobe.data.cli_support import OneLineParser, add_common_flags, run_command
from ncprobe.data.datasets import LOADERS

from ..models import ARCHS
from .loop import MODES, SCHEDULES, TrainConfig, train

EXAMPLES = """examples:
  nc-train --dataset digits --arch mlp --mode standard --epochs 120 --out runs/digits-st
  nc-train --dataset digits --arch mlp --mode pgd --eps 0.1 --steps 10 --out runs/digits-at
  nc-train --dataset cifar10 --data-root ~/data --arch preactresnet18 --mode trades \\
           --eps 8/255 --epochs 400 --save-epochs 50,100,200,400 --out runs/c10-trades
  nc-train ... --resume          (continue an interrupted run from its last epoch)
"""


def _fraction(text: str) -> float:
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") \
            from None


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = OneLineParser(prog="nc-train", epilog=EXAMPLES, aliases={"root": "--data-root"},
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Train a classifier and save checkpoints with JSON "
                                            "sidecars, a per-epoch log and run.json.")
    p.add_argument("--dataset", default=d.dataset, help=f"one of {', '.join(LOADERS)}")
    p.add_argument("--data-root", help="folder with the dataset files (not for digits)")
    p.add_argument("--arch", default=d.arch,
                   help=f"one of {', '.join(ARCHS)} or package.module:factory")
    p.add_argument("--mode", default=d.mode, help=f"one of {', '.join(MODES)}")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--schedule", default=d.schedule, help=f"one of {', '.join(SCHEDULES)}")
    p.add_argument("--milestones", type=_int_list, default=[],
                   help="epochs of x0.1 drops for --schedule multistep, e.g. 60,90")
    p.add_argument("--eps", type=_fraction, default=d.eps, help="attack radius, e.g. 8/255")
    p.add_argument("--norm", default=d.norm, help="linf or l2")
    p.add_argument("--steps", type=int, default=d.steps, help="PGD steps of the inner attack")
    p.add_argument("--step-size", type=_fraction, help="PGD step (default 2.5 eps / steps)")
    p.add_argument("--beta", type=float, default=d.beta, help="TRADES beta")
    p.add_argument("--attack-bn", choices=["train", "eval"],
                   help="BatchNorm mode while the inner attack runs (default: train for pgd, as "
                        "Madry et al. and Su et al.; eval for trades, as Zhang et al.)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--save-epochs", type=_int_list, default=[],
                   help="epochs to checkpoint (the last is always saved), e.g. 10,30,120")
    p.add_argument("--robust-eval", action="store_true",
                   help="log PGD-20 test accuracy at the saved epochs")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: 1 for small models)")
    add_common_flags(p)
    return p


def _run(args) -> int:
    cfg = TrainConfig(dataset=args.dataset, data_root=args.data_root, arch=args.arch,
                      mode=args.mode, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      momentum=args.momentum, weight_decay=args.weight_decay,
                      schedule=args.schedule, milestones=args.milestones, eps=args.eps,
                      norm=args.norm, steps=args.steps, step_size=args.step_size,
                      beta=args.beta, seed=args.seed, save_epochs=args.save_epochs,
                      robust_eval=args.robust_eval, attack_bn=args.attack_bn)
    rec = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, device=args.device,
                threads=args.threads, progress=not args.no_progress,
                command=shlex.join(["nc-train", *sys.argv[1:]]))
    print(f"trained {args.out}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()
                                              if k.endswith(("acc", "loss"))))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("nc-train", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
