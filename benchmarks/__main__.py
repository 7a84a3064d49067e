"""``python -m benchmarks [analysis|extraction|all] [--quick]``"""

import argparse

from . import bench_analysis, bench_extraction

parser = argparse.ArgumentParser(prog="python -m benchmarks")
parser.add_argument("which", nargs="?", default="all", choices=["analysis", "extraction", "all"])
parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
args = parser.parse_args()
if args.which in ("extraction", "all"):
    print("== extraction")
    bench_extraction.main(args.quick)
if args.which in ("analysis", "all"):
    print("== analysis")
    bench_analysis.main(args.quick)
