"""Where and how the analysis runs: dask's threads here, a local cluster, or an existing dask
cluster, with one progress bar across every computation of a run."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import dask
import dask.threaded
from dask.callbacks import Callback
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from .blocks import AnalysisError

#: the dask setting whose default (65536) makes every chunk a worker reads a fresh mapping
TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"

log = logging.getLogger("ncprobe.analyze")

SCHEDULER_HELP = ("'local' (threads in this process; the default, fastest here because the "
                  "kernels are numpy calls that release the GIL), 'localcluster[:N]' (N worker "
                  "processes), a 'tcp://host:port' scheduler address, or a scheduler JSON file")


_ADDRESS_PREFIXES = ("tcp://", "tls://", "ucx://", "inproc://")


def parse_scheduler(scheduler: str | None) -> tuple[str, object]:
    """``(kind, argument)`` of a --scheduler value, or a one-line error before any work.

    kinds: ``local`` (None), ``localcluster`` (worker count), ``address`` (the URL), ``file``
    (the scheduler JSON path).
    """
    s = scheduler or "local"
    if s == "local":
        return "local", None
    if s.startswith("localcluster"):
        _, _, n = s.partition(":")
        try:
            return "localcluster", int(n or 2)
        except ValueError:
            raise AnalysisError(f"`scheduler` {s!r}: worker count must be an integer, "
                                "e.g. localcluster:2") from None
    if s.startswith(_ADDRESS_PREFIXES):
        return "address", s
    if Path(s).suffix == ".json":
        if not Path(s).is_file():
            raise AnalysisError(f"`scheduler`: scheduler file {s!r} does not exist")
        return "file", s
    raise AnalysisError(f"unknown `scheduler` {s!r}; expected {SCHEDULER_HELP}")


@contextmanager
def connect(scheduler: str | None):
    """Yield a ``distributed.Client`` for the chosen scheduler, or None for local threads."""
    kind, arg = parse_scheduler(scheduler)
    if kind == "local":
        yield None
        return
    from distributed import Client, LocalCluster

    if kind == "localcluster":
        # dask starts its workers with MALLOC_TRIM_THRESHOLD_ set, which also turns off
        # glibc's adaptive mmap threshold: every feature chunk a worker decodes is then a fresh
        # mapping, faulted in page by page (docs/scale-out.md, "Worker memory trimming", has
        # the figures). This cluster is ncprobe's own, so its workers start without it (the
        # same page says how to do the same for yours)
        with dask.config.set({TRIM_KEY: None}):
            cluster = LocalCluster(n_workers=arg, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")
        with cluster, Client(cluster) as client:
            log.info("dask LocalCluster with %d workers; dashboard %s", arg,
                     client.dashboard_link)
            yield client
        return
    kwargs = {"address": arg} if kind == "address" else {"scheduler_file": arg}
    try:
        client = Client(timeout="20s", **kwargs)
    except OSError as e:
        raise AnalysisError(f"cannot reach dask scheduler {scheduler!r}: {e}") from None
    with client:
        log.info("connected to dask scheduler %s; dashboard %s", scheduler,
                 client.dashboard_link)
        yield client

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


#: "local" is dask's threads in this process, given as the function itself: by name, or left
#: to dask, the scheduler is looked up by importing distributed to find a client, a fixed
#: cost that a local run has no use for (and a client the user set up elsewhere would take
#: over the computation, where "local" promises this process's threads)
_THREADS = dask.threaded.get


def persist_all(collections, bar, client=None):
    """Persist ``collections`` together, their chunks then held in memory (this process's, or
    the dask workers'). The graph is not optimised: optimising fuses each collection's reads
    into it under new names, and a chunk shared by two collections would be read twice."""
    if client is None:
        with _TaskCounter(bar), one_blas_thread():
            return list(dask.persist(*collections, optimize_graph=False, scheduler=_THREADS))
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
            return list(dask.compute(*collections, scheduler=_THREADS))
    from distributed import as_completed

    futures = client.compute(list(collections))
    bar.total = (bar.total or 0) + len(futures)
    for _ in as_completed(futures):
        bar.update(1)
    return client.gather(futures)
