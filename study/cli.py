"""``nc-study``: many models under one protocol, one dataset, one report (docs/studies.md)."""

from __future__ import annotations

import argparse
import sys
import time

from ncprobe.data.cli_support import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    OneLineParser,
    add_common_flags,
    run_command,
)
from ncprobe.data.store.lock import StoreLock, StoreLockedError

from . import state
from .manifest import load_manifest

EXAMPLES = """examples:
  nc-study run examples/digits-study.toml            # every model, then study.zarr and the report
  nc-study run study.toml --only WRN-28-10-AT        # one model (a SLURM array task, one GPU)
  nc-study status study.toml                         # done, running, failed (why), not started
  nc-study compare study.toml                        # study.zarr and report.html of what is done
"""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="nc-study", epilog=EXAMPLES,
                      formatter_class=argparse.RawDescriptionHelpFormatter,
                      description="Run a study: every model of a manifest extracted and "
                                  "analysed under one protocol (resumable; several runs may "
                                  "share a study), stacked into one study.zarr and compared "
                                  "in one report.html.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="run the models that are not finished, then compare")
    status = sub.add_parser("status", help="where each model stands")
    compare = sub.add_parser("compare", help="study.zarr and report.html of the finished models")
    for q in (run, status, compare):
        q.add_argument("manifest", help="the study's TOML manifest")
        q.add_argument("--out", help="the study's folder (default: beside the manifest, "
                                     "NAME.study)")
        add_common_flags(q)
    run.add_argument("--only", action="append", metavar="NAME",
                     help="run only this model (repeatable); the comparison waits for all")
    run.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    run.add_argument("--no-compare", action="store_true",
                     help="do not build study.zarr and the report at the end")
    return p


def _compare(manifest, again: bool = True) -> None:
    """Build study.zarr and the report, one process at a time (the last run to finish a
    model waits for another run's build, then builds with its model included); unless
    ``again``, not when they were built from the same manifest and model records."""
    from .dataset import build_study, up_to_date, write_study
    from .report import write_study_report

    lock = StoreLock(manifest.folder / "study.zarr")
    deadline = time.monotonic() + 600
    while True:
        try:
            lock.acquire()
            break
        except StoreLockedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        if not again and up_to_date(manifest):
            print(f"{manifest.folder / 'study.zarr'} and the report are up to date")
            return
        tree = build_study(manifest)
        path = write_study(tree, manifest.folder / "study.zarr")
        report = write_study_report(tree, manifest.folder)
    finally:
        lock.release()
    print(f"wrote {path} ({len(tree.attrs['models'])} models) and {report}")


def _status(manifest) -> int:
    rows = state.status(manifest)
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:{width}s}  {r.status:11s}  {r.detail}".rstrip())
    counts = {s: sum(r.status == s for r in rows) for s in
              (state.DONE, state.RUNNING, state.FAILED, state.NOT_STARTED, state.CHANGED)}
    print("# " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return 0


def _run(args) -> int:
    manifest = load_manifest(args.manifest, args.out)
    if args.command == "status":
        return _status(manifest)
    if args.command == "compare":
        _compare(manifest)
        return 0
    from .runner import run_study

    if args.only:
        for name in args.only:
            manifest.model(name)  # one line naming the models before any work
    result = run_study(manifest, args.only, device=args.device,
                       progress=not args.no_progress)
    print(f"nc-study: {len(result.done)} run, {len(result.skipped)} already done, "
          f"{len(result.busy)} held by another run, {len(result.failed)} failed",
          file=sys.stderr)
    for name, reason in result.failed.items():
        print(f"nc-study: model {name} failed: {reason}", file=sys.stderr)
    statuses = state.status(manifest)
    pending = [s.name for s in statuses if s.status not in (state.DONE, state.FAILED)]
    if not args.no_compare and not pending and any(s.status == state.DONE for s in statuses):
        _compare(manifest, again=False)
    elif pending and not args.only:
        print(f"nc-study: not compared yet: {', '.join(pending)} not finished",
              file=sys.stderr)
    if result.failed:
        print(f"nc-study: failed: {', '.join(result.failed)} (nc-study status shows why)",
              file=sys.stderr)
        return EXIT_INTERNAL if result.internal else EXIT_BAD_INPUT
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command("nc-study", build_parser(), _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
