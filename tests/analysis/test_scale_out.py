"""Scale out: torchrun extraction on 2 gloo processes, nc-analyze on a real dask cluster."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from ncprobe.analyze.run import analyze_store
from tests.helpers import store_arrays

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ATTACKS = ["clean", "pgd:norm=linf,eps=0.1,steps=5", "noise:kind=gaussian,eps=0.5"]


def _args(ckpt, out):
    return ["--checkpoint", str(ckpt / "epoch-*.pt"), "--out", str(out), "--limit", "120",
            "--chunk-samples", "16", "--no-progress",
            *sum((["--attack", a] for a in ATTACKS), [])]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(ckpt, tmp_path):
    single = tmp_path / "one.zarr"
    subprocess.run([sys.executable, "-m", "ncprobe.extract.cli", *_args(ckpt, single)],
                   cwd=ROOT, check=True, capture_output=True)
    multi = tmp_path / "two.zarr"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2",
                          "-m", "ncprobe.extract.cli", *_args(ckpt, multi)], cwd=ROOT,
                         env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = store_arrays(single), store_arrays(multi)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    attrs = zarr.open_group(str(multi), mode="r").attrs
    assert attrs["complete"] is True


@pytest.fixture
def dask_cluster(tmp_path):
    """A real ``dask scheduler`` and one ``dask worker`` process on localhost."""
    sched_file = tmp_path / "scheduler.json"
    sched = subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                              "0", "--dashboard-address", ":0", "--scheduler-file",
                              str(sched_file)], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not sched_file.exists() and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    worker = subprocess.Popen([str(BIN / "dask"), "worker", "--scheduler-file", str(sched_file),
                               "--nworkers", "2", "--nthreads", "1", "--no-dashboard"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield sched_file
    finally:
        worker.terminate()
        sched.terminate()
        worker.wait(30)
        sched.wait(30)


@pytest.mark.slow
def test_analyze_on_a_dask_scheduler(tmp_path, dask_cluster):
    from tests.helpers import synthetic_store

    path = synthetic_store(tmp_path / "a.zarr", chunk_samples=20)[0]
    local = analyze_store(path, progress=False)["summary"].to_dataset()
    address = json.loads(dask_cluster.read_text())["address"]
    for scheduler in (str(dask_cluster), address):
        remote = analyze_store(path, progress=False, scheduler=scheduler)
        np.testing.assert_allclose(remote["summary"]["nc1"].values, local["nc1"].values,
                                   rtol=1e-12)
        np.testing.assert_array_equal(remote["summary"]["ncc_acc"].values,
                                      local["ncc_acc"].values)


LOCAL_RUN = """
import sys, warnings
warnings.simplefilter("ignore")
from ncprobe.analyze.run import analyze_store
analyze_store(sys.argv[1], progress=False)
print("distributed" in sys.modules)
"""


def test_a_local_run_stays_in_this_process(tmp_path):
    """The default scheduler is this process's threads: a local run neither imports
    distributed to look for a client, nor hands its tasks to a client set up elsewhere in the
    program, and gives the same values either way."""
    from distributed import Client, LocalCluster, get_task_stream

    from tests.helpers import synthetic_store

    path = synthetic_store(tmp_path / "a.zarr", chunk_samples=20)[0]
    out = subprocess.run([sys.executable, "-c", LOCAL_RUN, str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    alone = analyze_store(path, progress=False)["summary"]["nc1"].values
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster), get_task_stream() as tasks:
        beside = analyze_store(path, progress=False)["summary"]["nc1"].values
    assert tasks.data == []
    np.testing.assert_array_equal(beside, alone)
