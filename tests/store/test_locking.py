"""The writer lock with real processes: exactly one holder, and a killed holder frees it."""

import multiprocessing as mp
import os
import signal
import time

import pytest

from ncprobe.data.store.lock import StoreLock, StoreLockedError, lock_path

ROUNDS, PROCESSES = 20, 6


def _contend(store, start, tried, results):
    """Take the lock at the same moment as the others; hold it until everyone has tried."""
    lock = StoreLock(store)
    start.wait()
    try:
        lock.acquire()
        got = True
    except StoreLockedError:
        got = False
    tried.wait()
    results.put(got)
    if got:
        lock.release()


@pytest.mark.slow
def test_processes_racing_for_the_lock_have_exactly_one_holder(tmp_path):
    ctx = mp.get_context("fork")
    holders = []
    for r in range(ROUNDS):
        store = tmp_path / f"round{r % 4}.zarr"  # lock files reused across rounds, too
        start, tried, results = ctx.Barrier(PROCESSES), ctx.Barrier(PROCESSES), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(str(store), start, tried, results))
                 for _ in range(PROCESSES)]
        for p in procs:
            p.start()
        got = [results.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        holders.append(sum(got))
    assert holders == [1] * ROUNDS, holders


def _hold_forever(store, ready):
    StoreLock(store).acquire()
    ready.set()
    time.sleep(600)


@pytest.mark.slow
def test_a_killed_holders_lock_is_free_at_once(tmp_path):
    ctx = mp.get_context("fork")
    store = str(tmp_path / "s.zarr")
    for _ in range(3):
        ready = ctx.Event()
        holder = ctx.Process(target=_hold_forever, args=(store, ready))
        holder.start()
        assert ready.wait(60)
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid} on "):
            StoreLock(store).acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.join()
        assert os.path.exists(lock_path(store))  # left behind, with the dead pid in it
        lock = StoreLock(store).acquire()  # no staleness guess: the kernel let it go
        lock.release()
        assert not os.path.exists(lock_path(store))


def test_a_lock_file_without_details_is_no_reason_to_take_over(tmp_path):
    """The old race: a second process read the file before the first wrote its JSON."""
    store = str(tmp_path / "s.zarr")
    first = StoreLock(store).acquire()
    with open(lock_path(store), "w"):
        pass  # truncated: what a reader saw between the create and the write
    with pytest.raises(StoreLockedError, match="details not yet written"):
        StoreLock(store).acquire()
    first.release()
    StoreLock(store).acquire().release()
