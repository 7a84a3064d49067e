"""The one base class of every failure that is the user's to fix.

An :class:`NcprobeError` means "the input was not usable": the command-line tools print its
message as one line and exit with status 2. Anything else that escapes is a bug in ncprobe
and is reported as one (status 1, traceback kept): a numpy broadcast error or an IndexError
must never reach a user disguised as bad input.

Messages name the parameters of the function that was called in backticks (```batch_size```);
:func:`for_cli` rewrites them as the command's flags (``--batch-size``), so the library and
the command line each speak their own vocabulary.
"""

from __future__ import annotations

import re


class NcprobeError(ValueError):
    """Input that ncprobe cannot use; the message says what was wrong and what was expected.

    A ``ValueError`` too, so code that catches ``ValueError`` keeps working.
    """


_PARAM = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def for_cli(message: str, flags: dict | None = None) -> str:
    """``message`` on one line with each ```param``` written as the flag that sets it.

    ``flags`` maps parameter names to flags (``{"batch_size": "--batch-size"}``); any other
    backticked name loses its backticks.
    """
    text = _PARAM.sub(lambda m: (flags or {}).get(m[1], m[1]), message)
    return " ".join(text.split())
