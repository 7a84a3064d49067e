"""Where the analysis runs: dask's threads here, a local cluster, or an existing dask cluster."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import dask

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
