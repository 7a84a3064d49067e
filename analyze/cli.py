"""``nc-analyze``: collapse metrics of an activation store, out of core, on dask."""

from __future__ import annotations

import argparse

from ncprobe.data.cli_support import (
    OneLineParser,
    add_common_flags,
    csv_list,
    run_command,
)

from .cluster import SCHEDULER_HELP
from .memory import MEMORY_HELP
from .output import csv_path
from .run import AnalysisOptions, analyze_store

EXAMPLES = """examples:
  nc-analyze runs/digits-st/acts.zarr --out runs/digits-st/metrics.zarr
  nc-analyze acts.zarr --out metrics.zarr --scheduler tcp://10.0.0.5:8786
  nc-analyze acts.zarr --out metrics.zarr --layers block3,block4 --dense
  nc-analyze acts.zarr --out metrics.zarr --memory 0     (stream every layer twice)
  nc-analyze acts.zarr --out metrics.zarr --allow-partial     (a store still being written)
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="nc-analyze", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        aliases={"repair": "nc-extract --repair"},
        description="Compute NC1-NC4, simplex-ETF deviation, nearest-class-centre accuracy and "
                    "vertex-leap transitions for every split, layer, checkpoint and condition "
                    "of an activation store. Writes a metrics store (zarr) and a tidy CSV.")
    p.add_argument("store", help="activation store written by nc-extract")
    p.add_argument("--out", required=True, help="metrics store to write (e.g. metrics.zarr); "
                   "metrics.csv is written beside it")
    p.add_argument("--scheduler", default="local", help=SCHEDULER_HELP)
    p.add_argument("--memory", default="auto", help=MEMORY_HELP)
    p.add_argument("--reference-split", default="train",
                   help="split whose clean class means are the NCC centres (default: train; "
                        "each split's own when absent)")
    p.add_argument("--layers", help="comma-separated layers (default: all)")
    p.add_argument("--splits", help="comma-separated splits (default: all)")
    p.add_argument("--dense", action="store_true",
                   help="also store Sigma_W and Sigma_B for layers with D <= --dense-limit")
    p.add_argument("--dense-limit", type=int, default=4096, help="largest D for --dense")
    p.add_argument("--allow-partial", action="store_true",
                   help="analyse an incomplete store (missing chunks read as NaN)")
    p.add_argument("--metrics", metavar="NAME,...",
                   help="the metrics to compute, names of docs/metrics.md (default: all); "
                        "only what they need is computed, and a selection that needs nothing "
                        "from the second pass (nc2, nc3, align_angle, ...) reads each array "
                        "once")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing metrics store of another source or options")
    add_common_flags(p)
    return p


def _run(args) -> int:
    opts = AnalysisOptions(reference_split=args.reference_split, layers=csv_list(args.layers),
                           splits=csv_list(args.splits), dense=args.dense,
                           dense_limit=args.dense_limit, allow_partial=args.allow_partial,
                           metrics=csv_list(args.metrics))
    analyze_store(args.store, args.out, opts, scheduler=args.scheduler, memory=args.memory,
                  progress=not args.no_progress, overwrite=args.overwrite)
    print(f"wrote {args.out} and {csv_path(args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("nc-analyze", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
