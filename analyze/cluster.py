"""Where the analysis runs: dask's threads here, a local cluster, or an existing dask cluster."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from .stats import AnalysisError

log = logging.getLogger("ncprobe.analyze")

SCHEDULER_HELP = ("'local' (threads in this process; the default, fastest here because the "
                  "kernels are numpy calls that release the GIL), 'localcluster[:N]' (N worker "
                  "processes), a 'tcp://host:port' scheduler address, or a scheduler JSON file")


def check_scheduler(scheduler: str | None) -> None:
    """A one-line error for a --scheduler value that names nothing we can connect to."""
    s = scheduler or "local"
    ok = (s == "local" or s.startswith(("localcluster", "tcp://", "tls://", "ucx://", "inproc://"))
          or Path(s).suffix == ".json")
    if not ok:
        raise AnalysisError(f"unknown --scheduler {s!r}; expected {SCHEDULER_HELP}")


@contextmanager
def connect(scheduler: str | None):
    """Yield a ``distributed.Client`` for the chosen scheduler, or None for local threads."""
    scheduler = scheduler or "local"
    if scheduler == "local":
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler.startswith("localcluster"):
        _, _, n = scheduler.partition(":")
        try:
            n_workers = int(n or 2)
        except ValueError:
            raise AnalysisError(f"--scheduler {scheduler!r}: worker count must be an integer, "
                                "e.g. localcluster:2") from None
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            log.info("dask LocalCluster with %d workers; dashboard %s", n_workers,
                     client.dashboard_link)
            yield client
        return
    if scheduler.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        kwargs = {"address": scheduler}
    elif Path(scheduler).suffix == ".json":
        if not Path(scheduler).is_file():
            raise AnalysisError(f"--scheduler: scheduler file {scheduler!r} does not exist")
        kwargs = {"scheduler_file": scheduler}
    else:
        raise AnalysisError(f"unknown --scheduler {scheduler!r}; expected {SCHEDULER_HELP}")
    try:
        client = Client(timeout="20s", **kwargs)
    except OSError as e:
        raise AnalysisError(f"cannot reach dask scheduler {scheduler!r}: {e}") from None
    with client:
        log.info("connected to dask scheduler %s; dashboard %s", scheduler,
                 client.dashboard_link)
        yield client
