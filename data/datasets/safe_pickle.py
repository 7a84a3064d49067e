"""A restricted unpickler for the CIFAR python batches: data, never code.

The real batch files hold dicts, lists, bytes, str, ints and numpy arrays. Anything else a pickle
asks for (``os.system``, ``builtins.eval``, ...) is refused before it can be called.
"""

from __future__ import annotations

import io
import pickle

from ..errors import NcprobeError

# The globals a numpy array needs to be rebuilt, under numpy 1 and numpy 2 module names, plus
# the codec helper that protocol-2 pickles use for bytes. None of them runs user-chosen code.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class UnsafePickleError(pickle.UnpicklingError, NcprobeError):
    """The pickle asked for a global outside the data-only allow-list."""


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refusing to load {module}.{name} from a pickle; only plain data and numpy arrays "
            "are allowed"
        )


def safe_load(data: bytes):
    """Unpickle ``data`` admitting only plain containers and numpy arrays.

    Uses ``encoding="bytes"`` as the CIFAR batches (written by Python 2) require.
    """
    return _DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
