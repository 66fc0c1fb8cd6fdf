"""What tests/test_fork.py runs in child processes: a module of its own, so that
spawned children (which import it by name) find it."""

import numpy as np

import fastbp
from fastbp import _threads

BATCH = 256


def train(threads=2):
    """A fit big enough to split each step over 2 threads (6 * 4740 parameters *
    256 rows = 7.3e6 flops, above 2 * PARALLEL_MIN_FLOPS_PER_THREAD); returns the
    weights, the optimizer's step count and the thread plan the process chose."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(2 * BATCH, 32)), rng.integers(0, 4, 2 * BATCH)
    model = fastbp.Sequential(
        [fastbp.Dense(128, "relu"), fastbp.Dense(4, "softmax")],
        optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
        seed=0,
        dtype="float64",
        threads=threads,
    )
    model.fit(X, y, epochs=3, batch_size=BATCH)
    plan = _threads.plan(6 * model.count_params() * BATCH, threads)
    return model.flat_params.copy(), model.optimizer_state.step, plan
