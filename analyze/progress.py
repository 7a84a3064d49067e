"""One progress bar across every computation of a run, local or distributed."""

from __future__ import annotations

import dask
from dask.callbacks import Callback
from threadpoolctl import threadpool_limits
from tqdm import tqdm


class _TaskCounter(Callback):
    def __init__(self, bar):
        super().__init__()
        self.bar = bar

    def _start_state(self, dsk, state):
        self.bar.total = (self.bar.total or 0) + len(state["ready"]) + len(state["waiting"])
        self.bar.refresh()

    def _posttask(self, key, result, dsk, state, worker_id):
        self.bar.update(1)


def make_bar(enabled: bool, desc: str = "nc-analyze"):
    return tqdm(total=0, desc=desc, unit="task", disable=not enabled, leave=False)


def one_blas_thread():
    """BLAS held to one thread, as in every dask task of the analysis: one kernel per core, and
    the same arithmetic whether a kernel runs in a task or in this thread."""
    return threadpool_limits(1, user_api="blas")


def persist_all(collections, bar, client=None):
    """Persist ``collections`` together, their chunks then held in memory (this process's, or
    the dask workers'). The graph is not optimised: optimising fuses each collection's reads
    into it under new names, and a chunk shared by two collections would be read twice."""
    if client is None:
        with _TaskCounter(bar), one_blas_thread():
            return list(dask.persist(*collections, optimize_graph=False))
    from distributed import wait

    held = client.persist(list(collections), optimize_graph=False)
    wait(held)
    return held


def compute_all(collections, bar, client=None):
    """Compute ``collections`` together (shared reads done once), advancing ``bar``.

    With dask's threads the parallelism is one kernel per core, so BLAS is held to one
    thread per kernel: nested BLAS threads only oversubscribe the cores (``python -m
    benchmarks analysis`` measures the passes under this limit).
    """
    if client is None:
        with _TaskCounter(bar), one_blas_thread():
            return list(dask.compute(*collections))
    from distributed import as_completed

    futures = client.compute(list(collections))
    bar.total = (bar.total or 0) + len(futures)
    for _ in as_completed(futures):
        bar.update(1)
    return client.gather(futures)
