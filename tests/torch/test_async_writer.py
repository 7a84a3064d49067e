"""The extraction's background writer: order, error hand-over, buffer release."""

import threading

import pytest

from ncprobe.extract.extraction.async_writer import AsyncBlockWriter


def test_jobs_run_in_order_and_release_after_each():
    done, released = [], []
    w = AsyncBlockWriter(depth=2)
    for i in range(6):
        w.submit(lambda i=i: done.append(i), release=lambda i=i: released.append(i))
    w.close()
    w.close()  # idempotent
    assert done == list(range(6)) and released == list(range(6))


def test_error_reaches_caller_once_and_later_jobs_are_skipped():
    gate = threading.Event()
    done, released = [], []

    def fail():
        gate.wait()
        raise OSError("disk full")

    w = AsyncBlockWriter(depth=3)
    w.submit(fail, release=lambda: released.append("fail"))
    w.submit(lambda: done.append("after"), release=lambda: released.append("after"))
    gate.set()
    with pytest.raises(OSError, match="disk full"):
        w.close()
    assert done == []  # queued behind the failure: skipped, not written
    assert released == ["fail", "after"]  # but every buffer went back
    w.close()  # the error was handed over once


def test_error_is_raised_at_the_next_submit():
    ran = threading.Event()

    def fail():
        raise OSError("disk full")

    w = AsyncBlockWriter(depth=1)
    w.submit(fail, release=ran.set)
    assert ran.wait(10)
    with pytest.raises(OSError, match="disk full"):
        w.submit(lambda: None)
    w.close()
