"""A lock file that gives one process at a time the right to write a store.

zarr has no locks (NOTES.md: two writers on one shard silently lost chunks), so a second
``nc-extract`` on the same store must refuse. The lock records pid, host and start time; a
lock left by a process that no longer exists on this host is taken over.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from pathlib import Path

from . import fs


class StoreLockedError(ValueError):
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
    """Exclusive writer lock, a transient file beside the store, removed when writing ends.

    On a local disk the lock is taken atomically (O_EXCL). Object stores have no atomic
    create-if-absent, so there it is advisory: it stops a second run started after the first
    took the lock, not two started at the same instant.
    """

    def __init__(self, store):
        self.store = str(store)
        self.path = lock_path(store)
        self.local = fs.is_local(store)
        self.held = False

    def _create(self, text: str) -> None:
        if self.local:
            path = Path(fs.filesystem(self.path)[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return
        if fs.exists(self.path):
            raise FileExistsError(self.path)
        filesystem, path = fs.filesystem(self.path)
        filesystem.pipe_file(path, text.encode())

    def _read(self) -> dict:
        filesystem, path = fs.filesystem(self.path)
        try:
            return json.loads(filesystem.cat_file(path))
        except (OSError, json.JSONDecodeError):
            return {}

    def acquire(self) -> StoreLock:
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                self._create(json.dumps(me))
            except FileExistsError:
                other = self._read()
                stale = (other.get("host") == me["host"]
                         and not process_alive(int(other.get("pid", 0))))
                if stale or not other:
                    fs.remove(self.path)
                    continue
                raise StoreLockedError(
                    f"store {str(self.store)!r} is being written by another process "
                    f"(pid {other.get('pid')} on {other.get('host')} since {other.get('since')}); "
                    f"wait for it to finish, or delete {str(self.path)!r} if it is gone") \
                    from None
            self.held = True
            return self
        raise StoreLockedError(f"could not take the writer lock {str(self.path)!r}")

    def release(self) -> None:
        if self.held:
            fs.remove(self.path)
            self.held = False
