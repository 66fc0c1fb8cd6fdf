"""The guard (fastbp/_guard.pyx): many readers or one writer, the writer may read, a
waiting writer goes before new readers and waiting readers before the next write,
and one fit at a time."""

import threading
import time

import pytest

from fastbp._guard import Guard


def in_thread(target):
    thread = threading.Thread(target=target)
    thread.start()
    return thread


def test_readers_share_and_a_writer_waits_for_them():
    guard, log = Guard(), []
    first, second = guard.acquire_read(), guard.acquire_read()  # readers share
    writer = in_thread(lambda: (guard.acquire_write(), log.append("write"), guard.release_write()))
    time.sleep(0.05)
    assert log == []  # waits for the readers
    guard.release_read(first)
    time.sleep(0.05)
    assert log == []
    guard.release_read(second)
    writer.join(5)
    assert log == ["write"]


def test_readers_wait_for_the_writer_and_the_writer_may_read():
    guard, log = Guard(), []
    guard.acquire_write()
    token = guard.acquire_read()  # the writing thread reads without waiting
    guard.release_read(token)
    reader = in_thread(lambda: (guard.release_read(guard.acquire_read()), log.append("read")))
    time.sleep(0.05)
    assert log == []
    guard.release_write()
    reader.join(5)
    assert log == ["read"]


def test_readers_waiting_at_the_end_of_a_write_go_before_the_next_write():
    guard, log = Guard(), []
    guard.acquire_write()

    def read():
        token = guard.acquire_read()
        log.append("read")  # inside the read section
        guard.release_read(token)

    reader = in_thread(read)
    time.sleep(0.05)
    guard.release_write()
    guard.acquire_write()  # the same writer at once again: the reader goes first
    log.append("write")
    guard.release_write()
    reader.join(5)
    assert log == ["read", "write"]


def test_one_fit_at_a_time():
    guard = Guard()
    with guard.fitting():
        errors = []

        def second():
            try:
                with guard.fitting():
                    pass
            except RuntimeError as exc:
                errors.append(str(exc))

        in_thread(second).join(5)
        assert errors and "already training" in errors[0]
    with guard.fitting():  # free again
        pass


def test_a_fit_started_from_inside_a_fit_says_so():
    import numpy as np

    import fastbp

    model = fastbp.Sequential([fastbp.Dense(2)], loss="mse", input_dim=3, seed=0)
    X, y = np.ones((4, 3)), np.ones((4, 2))

    class Nested(fastbp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.fit(X, y, epochs=1)

    with pytest.raises(RuntimeError, match="already training in this thread"):
        model.fit(X, y, epochs=1, callbacks=[Nested()])
    model.fit(X, y, epochs=1)  # the guard was released


def test_readers_and_writers_never_overlap_under_frequent_thread_switches():
    # Three readers (the lock-free fast path) and a writer (the locked, waiting
    # path) enter and leave their sections many times with the interpreter switching
    # threads every microsecond; inside, each checks that the other kind is absent.
    import sys

    guard = Guard()
    inside = {"readers": 0, "writers": 0}
    counts_lock = threading.Lock()
    overlaps, done = [], {"reads": 0, "writes": 0}

    def enter(kind, other):
        with counts_lock:
            inside[kind] += 1
            if inside[other]:
                overlaps.append(dict(inside))

    def leave(kind):
        with counts_lock:
            inside[kind] -= 1

    def reader():
        for _ in range(3000):
            token = guard.acquire_read()
            enter("readers", "writers")
            time.sleep(0)  # let another thread run inside the section
            leave("readers")
            guard.release_read(token)
            with counts_lock:
                done["reads"] += 1

    def writer():
        for _ in range(300):
            guard.acquire_write()
            enter("writers", "readers")
            for _ in range(5):
                time.sleep(0)  # let the readers try while this thread writes
            leave("writers")
            guard.release_write()
            with counts_lock:
                done["writes"] += 1

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [in_thread(reader) for _ in range(3)] + [in_thread(writer)]
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not any(thread.is_alive() for thread in threads)  # no deadlock
    assert overlaps == []
    assert done == {"reads": 9000, "writes": 300}
