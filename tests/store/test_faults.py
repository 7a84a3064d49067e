"""Fault injection with real processes: SIGKILL at random moments, two writers, corruption."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from ncprobe.analyze.run import analyze_store
from ncprobe.data.store import StoreError
from ncprobe.extract.extraction import ExtractConfig, extract_store
from tests.helpers import store_arrays

ROOT = Path(__file__).resolve().parents[2]
ATTACKS = ["clean", "pgd:norm=linf,eps=0.1,steps=10", "pgd:norm=linf,eps=0.1,steps=10,target=next",
           "noise:kind=gaussian,eps=0.5"]


@pytest.fixture(scope="module")
def last_ckpt(digits_checkpoints):
    return digits_checkpoints / "epoch-0002.pt"


def extract_args(last_ckpt, out):
    return [sys.executable, "-m", "ncprobe.extract.cli", "--checkpoint", str(last_ckpt), "--out",
            str(out), "--limit", "400", "--chunk-samples", "20", "--batch-size", "20",
            "--no-progress", *sum((["--attack", a] for a in ATTACKS), [])]


def chunk_files(path):
    # os.walk, not rglob: a folder the writer renames mid-walk is skipped, not an error
    return [f"{d}/{f}" for d, _, files in os.walk(path) for f in files
            if "/c/" in f"{d}/"]


def kill_when(cmd, ready, delay, timeout=120):
    """Start ``cmd``; once ``ready()`` holds, wait ``delay`` s and SIGKILL it.

    Returns True if it was killed before its work was done, False if it finished first. A
    process that already printed its final "wrote ..." line has done all its work and only
    the interpreter's exit was left to interrupt: that is not an interrupted run.
    """
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    t0 = time.monotonic()
    while not ready() and p.poll() is None and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
    time.sleep(delay)
    alive = p.poll() is None
    if alive:
        p.send_signal(signal.SIGKILL)
    out, _ = p.communicate()
    return alive and b"wrote" not in out


@pytest.mark.slow
def test_extract_survives_sigkill_and_resumes_bitwise(last_ckpt, tmp_path):
    ref = tmp_path / "ref.zarr"
    subprocess.run(extract_args(last_ckpt, ref), cwd=ROOT, check=True, capture_output=True)
    # kill once a random number of new chunk files, at most a twentieth of the whole store's,
    # has appeared: counted in files, not seconds, so five kills land before the work is done
    # however fast or loaded the machine is (a delay of a tenth of the run's time did not:
    # most of that time is the interpreter's start, and three kills could finish the work)
    step = len(chunk_files(ref)) // 20
    out = tmp_path / "cut.zarr"
    rng = random.Random(7)
    kills = 0
    for _ in range(5):
        before = len(chunk_files(out)) if out.exists() else 0
        target = before + rng.randint(1, step)
        killed = kill_when(extract_args(last_ckpt, out),
                           lambda n=target: out.exists() and len(chunk_files(out)) >= n, 0.0)
        if killed and out.exists() and \
                zarr.open_group(str(out), mode="r").attrs.get("complete") is True:
            # the kill landed after the store was finalised and before the closing message:
            # not an interruption, and then the store must be whole and exact
            a, b = store_arrays(ref), store_arrays(out)
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
            killed = False
        kills += killed
    assert kills >= 4, f"only {kills} of 5 runs were killed before finishing"
    done = subprocess.run(extract_args(last_ckpt, out), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a, b = store_arrays(ref), store_arrays(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)  # bitwise on the CPU
    assert not list(out.rglob("*.partial"))
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is True
    assert not (tmp_path / ".cut.zarr.lock").exists()


@pytest.mark.slow
def test_second_writer_refuses(last_ckpt, tmp_path, capsys):
    from ncprobe.extract.cli import main

    out = tmp_path / "s.zarr"
    first = subprocess.Popen(extract_args(last_ckpt, out), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    lock = tmp_path / ".s.zarr.lock"
    t0 = time.monotonic()
    while not lock.exists() and time.monotonic() - t0 < 60:
        time.sleep(0.01)
    # in this process, so the attempt lands while the first writer is still busy
    second = main(extract_args(last_ckpt, out)[3:])
    err = capsys.readouterr().err
    first.wait()
    assert first.returncode == 0
    assert second == 2
    assert "is being written by another process" in err
    assert err.count("\n") == 1
    assert zarr.open_group(str(out), mode="r").attrs["complete"] is True


@pytest.mark.slow
def test_analyze_killed_leaves_nothing_that_looks_complete(last_ckpt, tmp_path):
    store = tmp_path / "a.zarr"
    extract_store(ExtractConfig(checkpoints=[str(last_ckpt)], attacks=ATTACKS[:2], limit=200),
                  store, progress=False)
    ref = tmp_path / "ref.zarr"
    analyze_store(store, ref, progress=False)
    out = tmp_path / "m.zarr"
    cmd = [sys.executable, "-m", "ncprobe.analyze.cli", str(store), "--out", str(out),
           "--no-progress"]
    rng = random.Random(3)
    for _ in range(3):
        started = time.monotonic()
        kill_when(cmd, lambda s=started: time.monotonic() - s > 1.5, rng.uniform(0, 1.5))
        assert not out.exists() or zarr.open_group(str(out), mode="r").attrs["complete"]
    assert subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ref.csv"), pd.read_csv(
        tmp_path / "m.csv"))
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.slow
def test_train_killed_then_resumed_equals_uninterrupted(tmp_path):
    import torch

    from ncprobe.extract.checkpoints import load_state_dict

    base = [sys.executable, "-m", "ncprobe.extract.training.cli", "--mode", "pgd", "--eps", "0.1",
            "--steps", "3", "--epochs", "12", "--save-epochs", "6", "--no-progress"]
    subprocess.run(base + ["--out", str(tmp_path / "ref")], cwd=ROOT, check=True,
                   capture_output=True)
    out = tmp_path / "cut"
    log = out / "log.jsonl"
    rng = random.Random(1)
    for _ in range(2):
        n = len(log.read_text().splitlines()) if log.exists() else 0
        kill_when(base + ["--out", str(out), "--resume"],
                  lambda n=n: log.exists() and len(log.read_text().splitlines()) > n,
                  rng.uniform(0, 0.3))
    done = subprocess.run(base + ["--out", str(out), "--resume"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    a = load_state_dict(tmp_path / "ref/checkpoints/epoch-0012.pt")
    b = load_state_dict(out / "checkpoints/epoch-0012.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    epochs = [int(line.split('"epoch": ')[1].split(",")[0])
              for line in log.read_text().splitlines()]
    assert epochs == list(range(1, 13))


def test_corrupt_and_deleted_chunks_are_named_and_repaired(last_ckpt, tmp_path):
    store = tmp_path / "a.zarr"
    cfg = ExtractConfig(checkpoints=[str(last_ckpt)], attacks=ATTACKS[:2], limit=100,
                        chunk_samples=25)
    extract_store(cfg, store, progress=False)
    good = analyze_store(store, progress=False)["summary"]["nc1"].values
    chunk = store / "test/layers/block2/features/c/0/1/2/0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"test/layers/block2/features chunk \(0, 1, 2, 0\): "
                                         r"ValueError: Stored and computed checksum"):
        analyze_store(store, progress=False)
    extract_store(cfg, store, progress=False, repair=True)
    np.testing.assert_array_equal(analyze_store(store, progress=False)["summary"]["nc1"].values,
                                  good)
    os.remove(store / "train/outputs/pred/c/0/0/1")
    with pytest.raises(StoreError, match=r"marked complete but chunks are missing: "
                                         r"train/outputs/pred: 7 of 8 chunks \(first missing: "
                                         r"chunk \(0, 0, 1\)\)"):
        analyze_store(store, progress=False)
    extract_store(cfg, store, progress=False)  # the rerun the message asks for
    np.testing.assert_array_equal(analyze_store(store, progress=False)["summary"]["nc1"].values,
                                  good)
