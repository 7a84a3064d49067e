"""``nc-plot``: figures and report.html from one or more metrics stores."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ncprobe.data.cli_support import (
    OneLineParser,
    UserError,
    add_common_flags,
    csv_list,
    run_command,
)
from ncprobe.data.store import StoreError, open_activations, open_metrics

from .report import write_report

log = logging.getLogger("ncprobe.plots")

EXAMPLES = """examples:
  nc-plot runs/digits-st/metrics.zarr --out runs/figures
  nc-plot runs/st/metrics.zarr runs/at/metrics.zarr --names standard,pgd --out runs/figures
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="nc-plot", epilog=EXAMPLES, aliases={"repair": "nc-extract --repair"},
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Draw the collapse, NCC, transition, alignment, "
                                            "NC2 and simplex figures (PNG + PDF) and write a "
                                            "self-contained report.html with the findings.")
    p.add_argument("metrics", nargs="+", help="metrics stores written by nc-analyze")
    p.add_argument("--out", required=True, help="folder for the figures and report.html")
    p.add_argument("--names", help="comma-separated display names, one per store (default: "
                                   "the training mode recorded in each store, else its folder)")
    p.add_argument("--no-simplex", action="store_true",
                   help="skip the simplex view (it reads the activation store)")
    add_common_flags(p)
    return p


def _name(tree, path):
    from ncprobe.analyze.metrics_reader import training_mode

    return training_mode(tree) or Path(path).resolve().parent.name


def _run(args) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: the command never opens a window
    trees = [open_metrics(p) for p in args.metrics]
    names = csv_list(args.names) or [_name(t, p) for t, p in zip(trees, args.metrics,
                                                                  strict=True)]
    if len(names) != len(trees) or len(set(names)) != len(names):
        raise UserError(f"--names needs {len(trees)} distinct names, got {names}")
    models = dict(zip(names, trees, strict=True))
    acts = {}
    if not args.no_simplex:
        for name, tree in models.items():
            try:
                acts[name] = open_activations(tree.attrs["source"])
            except StoreError as e:
                log.warning("no simplex view for %s: %s", name, e)
    path = write_report(models, args.out, acts)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("nc-plot", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
