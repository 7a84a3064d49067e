"""Wall time and peak memory of a function run in a fresh child process."""

from __future__ import annotations

import multiprocessing as mp
import resource
import time


def _child(conn, fn, args):
    t0 = time.perf_counter()
    result = fn(*args)
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send((wall, peak_kib / 2**20, result))
    conn.close()


def in_child(fn, *args):
    """Run ``fn(*args)`` in a spawned process: (wall seconds, peak RSS in GiB, result).

    A fresh process per measurement so that one's memory does not count toward another's.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_child, args=(child, fn, args))
    p.start()
    wall, peak, result = parent.recv()
    p.join()
    return wall, peak, result
