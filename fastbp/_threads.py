"""How many threads training uses, and how.

A training step can run on several threads in two ways: BLAS splits each matrix
product (OpenBLAS's own threads), or fastbp splits the whole step (rows of the batch
for the forward and backward passes, columns for the gradients, ranges of the flat
buffer for the update) over OpenMP threads, each calling single-threaded BLAS. The
second has three barriers per step instead of a thread hand-off per matrix product
and runs the elementwise loops in parallel too, which pays for all but the smallest
networks; tiny steps stay on one thread, where a barrier would cost more than it
saves.
"""

import contextlib
import os

from ._backend import core

# Below this many floating-point operations per training step (per thread), one
# thread does the whole step: a few microseconds of work. Measured in bench/.
PARALLEL_MIN_FLOPS_PER_THREAD = 2_000_000

# The largest thread budget a model accepts: more than any machine has cores, and
# within the C int that BLAS libraries take (threadpoolctl fails on larger ones).
MAX_THREADS = 1024

_controller = None


def _blas():
    """threadpoolctl's controller of the BLAS libraries, created once; the compiled
    module (and with it SciPy's OpenBLAS) is loaded first so that it is seen."""
    global _controller
    if _controller is None:
        core()
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def blas_threads():
    """The number of threads BLAS would use now (respects threadpool_limits)."""
    counts = [lib.num_threads for lib in _blas().lib_controllers]
    return max(counts) if counts else (os.cpu_count() or 1)


def plan(flops_per_step, threads=None):
    """Return ``(step_threads, blas_threads)`` for a training step.

    ``threads`` is the budget (None: what BLAS would use now).
    """
    budget = blas_threads() if threads is None else threads
    if (
        budget > 1
        and core().HAVE_OPENMP
        and flops_per_step >= budget * PARALLEL_MIN_FLOPS_PER_THREAD
    ):
        return min(budget, core().MAX_THREADS), 1
    return 1, budget


@contextlib.contextmanager
def blas_limited(n_threads):
    """Run the block with BLAS limited to ``n_threads`` (unchanged when it already is)."""
    if blas_threads() == n_threads:
        yield
    else:
        with _blas().limit(limits=n_threads):
            yield
