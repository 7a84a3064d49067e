"""``nc-demo``: run an experimental protocol end to end, by default the digits demo.

The default preset, ``digits``, reproduces the paper's findings on a laptop CPU in under a
minute: a standard, a PGD-AT and a TRADES ``mlp`` (eps 1/8, PGD-5 in training); both splits,
every layer, clean, PGD-20 l_inf 1/8 (untargeted and targeted "next") and Gaussian noise of the
attack's mean l_2 norm;
analysis, figures, report.html and the findings. ``paper-cifar10`` and ``paper-cifar100`` run
Su et al.'s protocol (PreActResNet18 and VGG11-BN, 400 epochs, PGD-AT and TRADES at 8/255) on
a GPU box. Every stage resumes: rerun the same command after an interruption.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from ncprobe.data.cli_support import OneLineParser, UserError, add_common_flags, run_command

from .protocol import PRESETS, QUICK_DIGITS, run_protocol

EXAMPLES = """examples:
  nc-demo --out runs/demo
  nc-demo --quick --out /tmp/demo                    (about half a minute, for CI)
  nc-demo --seed 1 --out runs/demo-seed1             (the same protocol, another seed)
  nc-demo --preset paper-cifar10 --data-root ~/data --out runs/paper-c10 --device cuda
  nc-demo --preset paper-cifar10 --data-root ~/data --epochs 2 --limit 512 --out /tmp/smoke
"""


def _run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: the command never opens a window
    if args.preset not in PRESETS:
        raise UserError(f"unknown --preset {args.preset!r}; expected {', '.join(PRESETS)}")
    if args.quick and args.preset != "digits":
        raise UserError("--quick is the digits demo's CI size; for other presets use --epochs "
                        "and --limit")
    protocol = QUICK_DIGITS if args.quick else PRESETS[args.preset]
    protocol = protocol.shortened(args.epochs, args.limit)
    if args.archs:
        unknown = sorted(set(args.archs.split(",")) - set(protocol.archs))
        if unknown:
            raise UserError(f"--archs {','.join(unknown)} not in preset {protocol.name!r}; "
                            f"expected some of {', '.join(protocol.archs)}")
        protocol = dataclasses.replace(protocol, archs=tuple(args.archs.split(",")))
    if args.layers:
        protocol = dataclasses.replace(protocol, layers=tuple(args.layers.split(",")))
    if args.seed is not None:
        protocol = dataclasses.replace(protocol, seed=args.seed)
    t0 = time.perf_counter()
    results = run_protocol(protocol, args.out, data_root=args.data_root, device=args.device,
                           progress=not args.no_progress)
    cols = ["model", "condition", "net_acc (test)", "ncc_acc (test)", "nc1 (train)",
            "leap_rate (test)"]
    for arch, result in results.items():
        if len(results) > 1:
            print(f"== {arch}")
        print(result["table"][cols].to_string(index=False,
                                              float_format=lambda v: f"{v:.3f}"))
        print()
        for f in result["findings"]:
            print(f"{f.key:9s} {f.verdict:5s} {f.title}\n{'':16s}{f.detail}")
            if f.bounds:
                print(f"{'':16s}margins: " + ", ".join(f"{k} {m:+.0%}"
                                                       for k, m in f.margins.items()))
        print(f"\nreport: {result['summary']['report']}")
        print(f"{arch}: " + ", ".join(f"{k} {v:.0f} s"
                                      for k, v in result["summary"]["times_s"].items()))
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="nc-demo", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[1], epilog=EXAMPLES, aliases={"root": "--data-root"})
    p.add_argument("--preset", default="digits", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--out", default="runs/demo", help="folder for runs, stores and reports")
    p.add_argument("--data-root", help="dataset folder (the cifar presets: CIFAR batches)")
    p.add_argument("--quick", action="store_true",
                   help="digits only: fewer epochs and a 300-sample subset, about half a minute")
    p.add_argument("--epochs", type=int,
                   help="train for fewer epochs (checkpoint epochs kept where they fit)")
    p.add_argument("--limit", type=int,
                   help="class-stratified subset of N samples per split (a smoke run)")
    p.add_argument("--archs", help="comma-separated subset of the preset's architectures")
    p.add_argument("--layers", help="comma-separated capture points to extract (default: all; "
                                    "see nc-extract --list-layers)")
    p.add_argument("--seed", type=int, help="seed of training (initialisation, batch order) "
                                            "and of the attacks' random starts (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_common_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("nc-demo", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
