"""The writer lock: one process at a time may write a store.

zarr has no locks (measured: two writers on one shard silently lost chunks), so a second
``nc-extract`` on the same store must refuse. On a local disk the lock is the kernel's
``flock`` on ``.<name>.lock`` beside the store: the kernel releases it when the holder exits or
is killed, so there is no staleness to guess, and taking it is atomic. The file also holds the
holder's pid, host and start time, only to say who holds it. Object stores have no such lock:
there the file is an advisory marker (see :class:`StoreLock`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path

from ..errors import NcprobeError
from . import fs


class StoreLockedError(NcprobeError):
    """Another live process is writing the store."""


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_path(store) -> str:
    """``.<name>.lock`` beside the store: zarr would read a file inside it as a node."""
    return fs.sibling(store, f".{fs.basename(store)}.lock")


class StoreLock:
    """Exclusive writer lock of a store, held from :meth:`acquire` to :meth:`release`.

    Local disks: ``flock(LOCK_EX | LOCK_NB)`` on the lock file. The holder deletes the file
    before it lets go, and whoever locks a file checks that it is still the one at the path
    (a file deleted in between was a released lock): so exactly one process holds it at a
    time, and a killed holder's lock is free at once. Network file systems that do not
    honour ``flock`` (some NFS set-ups) give no such guarantee.

    Object stores (fsspec URLs) have no atomic create-if-absent: there the lock is an
    advisory marker, which stops a second run started after the first took it, not two
    started at the same instant, and a marker left by a killed process on this host is
    taken over.
    """

    def __init__(self, store):
        self.store = str(store)
        self.path = lock_path(store)
        self.local = fs.is_local(store)
        self.held = False
        self._fd = None

    def _info(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}

    def _locked(self, other: dict) -> StoreLockedError:
        who = (f"pid {other.get('pid')} on {other.get('host')} since {other.get('since')}"
               if other else "details not yet written")
        return StoreLockedError(
            f"store {str(self.store)!r} is being written by another process ({who}); wait "
            "for it to finish")

    def acquire(self) -> StoreLock:
        if not self.local:
            return self._acquire_marker()
        path = Path(fs.filesystem(self.path)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = _parse(os.read(fd, 4096))
                os.close(fd)
                raise self._locked(other) from None
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                break
            os.close(fd)  # the holder released and deleted this file meanwhile: retry
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._info()).encode(), 0)
        self._fd, self.held = fd, True
        return self

    def _acquire_marker(self) -> StoreLock:
        me = self._info()
        filesystem, path = fs.filesystem(self.path)
        if filesystem.exists(path):
            try:
                other = _parse(filesystem.cat_file(path))
            except OSError:
                other = {}
            stale = other.get("host") == me["host"] and not process_alive(
                int(other.get("pid", 0)))
            if not stale:
                raise self._locked(other)
        filesystem.pipe_file(path, json.dumps(me).encode())
        self.held = True
        return self

    def release(self) -> None:
        if not self.held:
            return
        if self._fd is None:
            fs.remove(self.path)
        else:
            # delete while still holding the lock, then let go: see the class docstring
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fs.filesystem(self.path)[1])
            os.close(self._fd)
            self._fd = None
        self.held = False


def _parse(raw: bytes) -> dict:
    try:
        out = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return out if isinstance(out, dict) else {}
