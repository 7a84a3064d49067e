"""What every ncprobe command shares: logging to stderr and one-line errors with exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

#: exit status for bad input (argparse uses 2 for bad flags too)
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class UserError(ValueError):
    """Bad input found by a command itself; shown as one line without a traceback."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) on bad flags, like every other error."""

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
    logging.captureWarnings(True)
    warnings.simplefilter("default")


def run_command(prog: str, parser: argparse.ArgumentParser, body, argv=None) -> int:
    """Parse ``argv``, run ``body(args)`` and turn expected failures into one-line errors.

    ``ValueError`` (every ncprobe error derives from it), ``FileNotFoundError``,
    ``PermissionError`` and ``KeyError`` from bad input print ``prog: error: <message>`` and
    return 2; ``--debug`` re-raises with the traceback.
    """
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a bad flag already reported in one line
        return int(e.code or 0)
    _setup_logging(getattr(args, "verbose", 0))
    try:
        return int(body(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, FileNotFoundError, PermissionError, NotADirectoryError,
            IsADirectoryError, KeyError) as e:
        if getattr(args, "debug", False):
            raise
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        print(f"{prog}: error: {' '.join(msg.split())}", file=sys.stderr)
        return EXIT_BAD_INPUT


def csv_list(text: str | None) -> list[str] | None:
    """``"a,b"`` -> ``["a", "b"]``; None or ``"all"`` -> None (everything)."""
    if text is None or text == "all":
        return None
    return [t.strip() for t in text.split(",") if t.strip()]
