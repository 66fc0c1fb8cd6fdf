"""How many threads training uses, and how.

A training step can run on several threads in two ways: BLAS splits each matrix
product (OpenBLAS's own threads), or fastbp splits the whole step (rows of the batch
for the forward and backward passes; for the gradients and then their update,
a contiguous range of equal work of all the weight rows, layer after layer, with
the bias entries of its layers) over OpenMP threads, each calling
single-threaded BLAS. The second has two barriers per step (three with clipnorm)
instead of a thread hand-off per matrix product
and runs the elementwise loops in parallel too, which pays for all but the smallest
networks; tiny steps stay on one thread, where a barrier would cost more than it
saves.

A process made by ``fork`` (``os.fork``, ``multiprocessing``'s "fork" and
"forkserver" start methods) never splits a step over OpenMP threads. The GNU
OpenMP runtime's pool of threads does not survive fork: the child inherits the
pool's bookkeeping but not its threads, so its first parallel region with more than
one thread waits forever at a barrier for threads that do not exist, and no runtime
call repairs the pool. A forked child's steps run on one thread, with no OpenMP
region at all, and BLAS may use the thread budget instead (OpenBLAS restarts its
own threads after fork). Spawned processes ("spawn", joblib's loky) are fresh and
split steps as usual.
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

_forked = False  # whether this process was made by fork (see the module)


def _after_fork_in_child():
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
    """The number of threads BLAS would use now: the fewest of any BLAS library
    loaded. ``threadpool_limits`` limits the libraries loaded when it starts, and
    fastbp loads SciPy's OpenBLAS at its first use: a limit set after ``import
    fastbp`` and before that first use shows in NumPy's library alone."""
    counts = [lib.num_threads for lib in _blas().lib_controllers]
    return min(counts) if counts else (os.cpu_count() or 1)


def budget(threads=None):
    """The thread budget of a training call: ``threads``, or None for what BLAS
    would use now."""
    return blas_threads() if threads is None else threads


def plan(flops_per_step, threads=None):
    """Return ``(step_threads, blas_threads)`` for a training step.

    ``threads`` is the budget (None: what BLAS would use now). A forked process
    never splits the step (see the module).
    """
    total = budget(threads)
    if (
        total > 1
        and core().HAVE_OPENMP
        and not _forked
        and flops_per_step >= total * PARALLEL_MIN_FLOPS_PER_THREAD
    ):
        return min(total, core().MAX_THREADS), 1
    return 1, total


@contextlib.contextmanager
def blas_limited(n_threads):
    """Run the block with each BLAS library limited to ``n_threads`` threads, and
    restore those it changed afterwards. (What ``ThreadpoolController.limit`` does,
    through the same controllers, without recording every library's full state
    first: it took a third of the fixed cost of a ``fit`` call.)"""
    changed = []
    try:
        for lib in _blas().lib_controllers:
            before = lib.num_threads
            if before != n_threads:
                lib.set_num_threads(n_threads)
                changed.append((lib, before))
        yield
    finally:
        for lib, before in reversed(changed):
            lib.set_num_threads(before)
