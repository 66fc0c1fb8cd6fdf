"""Training in child processes after a parallel fit in the parent.

GNU OpenMP's thread pool does not survive fork: a forked child that enters a
parallel region of more than one thread waits forever for the parent's threads
(fastbp._threads). Each test runs the child with a timeout, so that a regression
fails instead of hanging, and compares its training with the parent's.
"""

import multiprocessing
import os
import pickle
import select
import signal
import time

import numpy as np
import pytest
from _forkwork import train

from fastbp import _threads
from fastbp._backend import core

TIMEOUT = 120  # seconds; each child trains in well under one

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def parent():
    """The parent's own 2-thread fit: the reference, and what starts OpenMP's
    thread pool in this process before any fork."""
    params, step, plan = train()
    if core().HAVE_OPENMP:
        assert plan == (2, 1)  # the step really is split over 2 OpenMP threads
    return params, step


def same_training(child, parent):
    params, step, _ = child
    # The same arithmetic up to the order of BLAS's sums (threads split them
    # differently): float64 weights within 1e-10 after 6 steps, as in test_threads.
    np.testing.assert_allclose(params, parent[0], rtol=1e-10, atol=1e-12)
    assert step == parent[1] == 6


def test_os_fork_child_trains(parent):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the training or the error, then leave
        try:
            os.close(read)
            try:
                payload = pickle.dumps(train())
            except BaseException as error:
                payload = pickle.dumps(error)
            os.write(write, payload)
        finally:
            os._exit(0)
    os.close(write)
    chunks, deadline = [], time.monotonic() + TIMEOUT
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([read], [], [], remaining)[0]:
                pytest.fail(f"the forked child did not finish training in {TIMEOUT} s")
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
        if not chunks or time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    child = pickle.loads(b"".join(chunks))
    if isinstance(child, BaseException):
        raise child
    assert child[2][0] == 1  # a forked child never splits the step over OpenMP
    same_training(child, parent)


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing_child_trains(parent, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    with multiprocessing.get_context(method).Pool(1) as pool:
        child = pool.apply_async(train).get(timeout=TIMEOUT)  # terminates on exit
    if method == "fork":
        assert child[2] == (1, 2)  # one OpenMP thread, BLAS free to use two
    elif method == "spawn" and core().HAVE_OPENMP:
        assert child[2] == (2, 1)  # a fresh process splits steps as usual
    same_training(child, parent)


@pytest.mark.parametrize("backend", ["loky", "threading", "multiprocessing"])
def test_joblib_workers_train(parent, backend):
    joblib = pytest.importorskip("joblib")
    children = joblib.Parallel(n_jobs=2, backend=backend, timeout=TIMEOUT)(
        joblib.delayed(train)() for _ in range(2)
    )
    for child in children:
        same_training(child, parent)


def test_plan_after_fork_keeps_the_step_on_one_thread(monkeypatch):
    monkeypatch.setattr(_threads, "_forked", True)
    assert _threads.plan(10**9, threads=2) == (1, 2)
