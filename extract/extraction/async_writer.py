"""A background thread that runs store writes in order behind a bounded queue, with recycled
buffers.

The model never waits on compression or disk unless the writer falls ``depth`` jobs behind;
host memory is bounded by ``depth + 2`` block buffers whatever the dataset size.
"""

from __future__ import annotations

import queue
import threading

import torch


class BufferPool:
    """``n`` reusable sets of per-layer host buffers (pinned when copying from CUDA)."""

    def __init__(self, n: int, shapes: dict, dtypes: dict, pin: bool):
        self._free: queue.Queue = queue.Queue()
        for _ in range(n):
            self._free.put({k: torch.empty(shape, dtype=dtypes[k], pin_memory=pin)
                            for k, shape in shapes.items()})

    def get(self) -> dict:
        return self._free.get()

    def put(self, buffers: dict) -> None:
        self._free.put(buffers)


class AsyncBlockWriter:
    """Run submitted jobs (zero-argument callables) in order in one background thread.

    After an error the remaining jobs are skipped (their ``release`` still runs, so buffers
    go back to their pool); the error is re-raised in the caller at the next :meth:`submit`
    or at :meth:`close`, which waits until everything submitted has run.
    """

    def __init__(self, depth: int = 2):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None  # raised once in the caller
        self._failed = False  # stays set: later jobs are skipped
        self._thread = threading.Thread(target=self._loop, name="ncprobe-writer", daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            item = self._q.get()
            if item is None:
                return
            job, release = item
            try:
                if not self._failed:
                    job()
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._error, self._failed = e, True
            finally:
                if release is not None:
                    release()

    def _raise(self):
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, job, release=None) -> None:
        """Queue ``job()``; ``release()`` runs after it, also when it fails or is skipped."""
        self._raise()
        self._q.put((job, release))

    def close(self) -> None:
        """Wait for everything submitted; idempotent. Re-raises a write error once."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._raise()
