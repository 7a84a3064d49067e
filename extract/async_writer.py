"""A background thread that writes blocks behind a bounded queue, with recycled buffers.

The model never waits on compression or disk unless the writer falls ``depth`` blocks behind;
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
    """Run ``write(item)`` for every submitted item in one background thread.

    Errors in the thread are re-raised in the caller at the next :meth:`submit` or at
    :meth:`close`; ``close`` waits until everything submitted is written.
    """

    def __init__(self, write, depth: int = 2, on_done=None):
        self._write = write
        self._on_done = on_done
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="ncprobe-writer", daemon=True)
        self._thread.start()

    def _loop(self):
        while True:
            item = self._q.get()
            if item is None:
                self._q.task_done()
                return
            try:
                if self._error is None:
                    self._write(item)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                self._error = e
            finally:
                if self._on_done is not None:
                    self._on_done(item)
                self._q.task_done()

    def _raise(self):
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, item) -> None:
        self._raise()
        self._q.put(item)

    def close(self) -> None:
        """Wait for everything submitted; idempotent. Re-raises a write error once."""
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
        self._raise()
