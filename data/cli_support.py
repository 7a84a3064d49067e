"""What every ncprobe command shares: logging to stderr, one-line errors and exit codes.

Exit status 2: the user's input (an :class:`~ncprobe.data.errors.NcprobeError` or a bad flag),
one line. Status 1: a bug in ncprobe, one line that says so and where the traceback was
written (``--debug`` shows it instead). 130: interrupted. Warnings: ``prog: warning:
<message>``, one line each, parameters named as flags.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from .errors import NcprobeError, for_cli
from .store import fs

#: exit status for bad input (argparse uses 2 for bad flags too)
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


class UserError(NcprobeError):
    """Bad input found by a command itself; shown as one line without a traceback."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) on bad flags, like every other error,
    and the flag of each destination, to name flags in messages about parameters."""

    def __init__(self, *args, aliases: dict | None = None, **kwargs):
        #: parameter name -> flag; ``aliases`` for library parameters named unlike the flag
        self.flags = dict(aliases or {})  # before __init__, which adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs:
            self.flags.setdefault(action.dest, longs[0])
        return action

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks instead of one-line errors")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv for debug messages)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose + 1, 2)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)


def _crash_log(prog: str, args) -> Path:
    """Where a traceback goes: beside the command's local output, else the temp folder."""
    name = f"{prog}-error-{os.getpid()}.log"
    out = getattr(args, "out", None)
    if out and fs.is_local(out):
        folder = Path(fs.filesystem(out)[1]).parent
        if folder.is_dir() and os.access(folder, os.W_OK):
            return folder / name
    return Path(tempfile.gettempdir()) / name


def run_command(prog: str, parser: argparse.ArgumentParser, body, argv=None) -> int:
    """Parse ``argv``, run ``body(args)`` and turn failures into one line and an exit status.

    :class:`~ncprobe.data.errors.NcprobeError`: ``prog: error: <message>`` (parameters named as
    flags), status 2. Any other exception is a bug: ``prog: internal error ...`` naming the
    file that holds the traceback, status 1. ``--debug`` re-raises both with the traceback.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad flag already reported in one line
        return int(e.code or 0)
    _setup_logging(getattr(args, "verbose", 0))
    flags = getattr(parser, "flags", None)

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {for_cli(str(message), flags)}", file=sys.stderr)

    try:
        with warnings.catch_warnings():  # restored on return: the caller's filters stand
            warnings.simplefilter("default")
            warnings.showwarning = one_line
            return int(body(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except NcprobeError as e:
        if getattr(args, "debug", False):
            raise
        msg = str(e.args[0]) if e.args else str(e)
        print(f"{prog}: error: {for_cli(msg, flags)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - everything else is a bug and must say so
        if getattr(args, "debug", False):
            raise
        log = _crash_log(prog, args)
        log.write_text(f"{prog} {_dt.datetime.now(_dt.UTC).isoformat()}\n"
                       f"command: {' '.join(sys.argv)}\n\n{traceback.format_exc()}")
        first = " ".join(str(e).split())[:200]
        print(f"{prog}: internal error (a bug in ncprobe, not your input): "
              f"{type(e).__name__}: {first}; traceback in {log}; rerun with --debug to see "
              "it, and please report it", file=sys.stderr)
        return EXIT_INTERNAL


def csv_list(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; None or ``"all"`` -> None (everything)."""
    if text is None or text == "all":
        return None
    return [t.strip() for t in text.split(",") if t.strip()]
