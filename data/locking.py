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


def lock_path(store) -> Path:
    """``.<name>.lock`` beside the store: zarr would read a file inside it as a node."""
    store = Path(store)
    return store.with_name(f".{store.name}.lock")


class StoreLock:
    """Exclusive writer lock, a transient file beside the store, removed when writing ends."""

    def __init__(self, store):
        self.store = Path(store)
        self.path = lock_path(store)
        self.held = False

    def acquire(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text())
                except (OSError, json.JSONDecodeError):
                    other = {}
                stale = (other.get("host") == me["host"]
                         and not process_alive(int(other.get("pid", 0))))
                if stale or not other:
                    self.path.unlink(missing_ok=True)
                    continue
                raise StoreLockedError(
                    f"store {str(self.store)!r} is being written by another process "
                    f"(pid {other.get('pid')} on {other.get('host')} since {other.get('since')}); "
                    f"wait for it to finish, or delete {str(self.path)!r} if it is gone") \
                    from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise StoreLockedError(f"could not take the writer lock {str(self.path)!r}")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
