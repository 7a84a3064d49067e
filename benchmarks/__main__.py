"""``python -m benchmarks [analysis|extraction|gpu|compare|compat|study|all] [--quick]
[--device D --small] [--rev REV --stores S ...] [--env minimum|newest|both]``"""

import argparse
import sys

from . import bench_analysis, bench_extraction, bench_revisions, bench_study, compat, gpu_check

parser = argparse.ArgumentParser(prog="python -m benchmarks")
parser.add_argument("which", nargs="?", default="all",
                    choices=["analysis", "extraction", "gpu", "compare", "compat", "study", "all"],
                    help="'all' is analysis and extraction; 'gpu' needs a CUDA device unless "
                         "--device cpu")
parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
parser.add_argument("--device", default="cuda", help="gpu check: cuda (default) or cpu")
parser.add_argument("--small", action="store_true",
                    help="gpu check: a few images (with --device cpu: the CI smoke run)")
parser.add_argument("--out", help="gpu check: also write its table to this file")
parser.add_argument("--classes", nargs="*", type=int,
                    help="analysis: time and memory for these class counts instead (default "
                         "10 100 1000) at --samples and --dim")
parser.add_argument("--samples", type=int, nargs="*", default=[50_000],
                    help="analysis --classes: N (several: memory against N)")
parser.add_argument("--dim", type=int, default=512, help="analysis --classes: D")
parser.add_argument("--rev", default="HEAD",
                    help="compare: the git revision to time the working tree against")
parser.add_argument("--stores", nargs="*",
                    help="compare: activation stores to analyse (default: a synthetic one)")
parser.add_argument("--env", default="both", choices=["minimum", "newest", "both"],
                    help="compat: which environment to build and test")
args = parser.parse_args()
if args.which in ("extraction", "all"):
    print("== extraction")
    bench_extraction.main(args.quick)
if args.which in ("analysis", "all"):
    if args.classes is not None:
        print("== analysis by class count")
        bench_analysis.by_classes(tuple(args.classes) or (10, 100, 1_000),
                                  tuple(args.samples), args.dim, args.quick)
    else:
        print("== analysis")
        bench_analysis.main(args.quick)
if args.which == "compare":
    print(f"== analysis, working tree vs {args.rev}")
    bench_revisions.main(args.rev, args.stores, args.quick)
if args.which == "gpu":
    rows = gpu_check.main(args.device, args.small, args.out)
    sys.exit(1 if any(r.verdict == "FAIL" for r in rows) else 0)
if args.which == "compat":
    print("== compat: the declared minimum versions and the newest, store/analysis/CLI tests")
    sys.exit(compat.main(args.env))
if args.which == "study":
    print("== study: nc-study against its stages by hand, and time per model")
    bench_study.main(args.quick)
