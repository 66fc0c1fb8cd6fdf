"""Where the small-product kernel beats BLAS: the switch point of ``_small_product``.

The training step multiplies in three forms (row-major, as ``fastbp._core._gemm``
names them): NN, a layer's forward product ``Z = A @ W`` (m = rows of the batch's
share, k = inputs, n = outputs); NT, the delta passed down ``D @ W^T`` (m = rows,
k = outputs, n = inputs); TN, a weight gradient ``A^T @ D`` (m = a share of the
weight's rows, k = rows of the batch, n = outputs). For every form, dtype and shape
of a grid this times the product by the small-product kernel and by BLAS (OpenBLAS
through SciPy) on one thread, interleaved, each the best of several runs of
back-to-back products without the GIL (``_core.matmul(..., repeats=...)``), and
reports BLAS's time over the kernel's. It also reports how often the step's rule
for that version of the kernel (``gemm_path(..., isa=...)``) takes the faster path,
and the time its wrong choices lose.

Needs a version of the kernel for this CPU (``_core.SMALL_GEMM_CPU``: x86-64 or arm64
with GCC or Clang); ``--isa`` picks the version (default: the widest the CPU runs, the
one the step takes)::

    python bench/gemm_paths.py --out bench/GEMM_PATHS.md   # the whole grid, both dtypes
    python bench/gemm_paths.py --quick         # a few shapes (the test suite's smoke run)

``bench/GEMM_PATHS.md`` is the AVX2 version on an AVX2 CPU (AMD Zen 3),
``bench/GEMM_PATHS_AVX512.md`` the AVX-512 version on an AVX-512 one (AMD Zen 4), and
``bench/GEMM_PATHS_PORTABLE.md`` the portable version (SSE2 here) against OpenBLAS held
to its SSE kernels (``OPENBLAS_CORETYPE=NEHALEM``) on that Zen 4: both sides with
16-byte vectors, as on an arm64 CPU, which no machine of ours is::

    OPENBLAS_CORETYPE=NEHALEM python bench/gemm_paths.py --isa portable \\
        --out bench/GEMM_PATHS_PORTABLE.md
"""

import argparse
import itertools
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Report, load_fastbp, machine_info, machine_markdown  # noqa: E402

FORMS = {"NN": (False, False), "NT": (False, True), "TN": (True, False)}
GRID_M = (1, 8, 25, 32, 64, 128, 256)
GRID_N = (2, 8, 10, 16, 32, 64, 100, 128, 256, 512)
GRID_K = (10, 32, 64, 100, 128, 256, 784)
QUICK = [(32, 32, 64), (64, 100, 100), (128, 512, 784)]


def operands(form, m, n, k, dtype, rng):
    """a, b and out for ``out (m x n) = op(a) @ op(b)`` in ``form``."""
    trans_a, trans_b = FORMS[form]
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    return a, b, np.empty((m, n), dtype)


def best_time(core, a, b, out, form, path, repeats, runs, isa):
    """Best over ``runs`` of the mean time of ``repeats`` back-to-back products."""
    trans_a, trans_b = FORMS[form]
    best = float("inf")
    isa = isa if path == "small" else None
    for _ in range(runs):
        start = time.perf_counter()
        core.matmul(
            a, b, out, trans_a=trans_a, trans_b=trans_b, path=path, repeats=repeats, isa=isa
        )
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def measure(core, form, m, n, k, dtype, runs, rng, isa):
    """(blas seconds, small seconds, the path "auto" takes) for one product."""
    a, b, out = operands(form, m, n, k, dtype, rng)
    repeats = max(1, int(4e7 / (2 * m * n * k)))  # about a millisecond a run
    times = {"blas": float("inf"), "small": float("inf")}
    for _ in range(2):  # interleaved: a drift of the machine's speed hits both
        for path in ("blas", "small"):
            t = best_time(core, a, b, out, form, path, repeats, runs, isa)
            times[path] = min(times[path], t)
    chosen = core.gemm_path(m, n, k, *FORMS[form], dtype=dtype, isa=isa)
    return times["blas"], times["small"], chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three shapes, float32")
    parser.add_argument("--runs", type=int, default=5, help="timed runs a path and shape")
    parser.add_argument("--out", help="also write the report to this Markdown file")
    parser.add_argument(
        "--isa",
        help="the kernel's version, portable, avx2 or avx512 (default: the widest the CPU runs)",
    )
    args = parser.parse_args(argv)
    report = Report()
    say = report.say

    load_fastbp()
    from threadpoolctl import threadpool_limits

    from fastbp._backend import core as load_core

    core = load_core()
    if not core.SMALL_GEMM_CPU:
        print(
            "no small-product kernel for this CPU and compiler: fastbp uses BLAS for every product"
        )
        return 0
    isa = args.isa or core.SMALL_GEMM_ISAS[-1]
    if isa not in core.SMALL_GEMM_ISAS:
        parser.error(f"--isa must be one of {', '.join(core.SMALL_GEMM_ISAS)} on this CPU")
    dtypes = ["float32"] if args.quick else ["float32", "float64"]
    shapes = QUICK if args.quick else list(itertools.product(GRID_M, GRID_N, GRID_K))
    rng = np.random.default_rng(0)
    say("# The small-product kernel against BLAS, one thread\n")
    say(machine_markdown(machine_info(["bench/gemm_paths.py"] + list(argv or sys.argv[1:]))))
    say(
        f"- small-product kernel: its {isa} version (this CPU runs"
        f" {', '.join(core.SMALL_GEMM_ISAS)}; the step takes the widest)\n"
    )
    say("BLAS / small: how many times longer BLAS takes. auto takes: the path the")
    say(f"training step's rule (`_small_product` in `fastbp/_core.pyx`) chooses for {isa}.\n")
    say("| dtype | form | m | n | k | BLAS µs | small µs | BLAS / small | auto takes |")
    say("| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | :--- |")
    agree = total = 0
    lost = spent = log_loss = log_blas = 0.0
    with threadpool_limits(1):
        for dtype, form, (m, n, k) in itertools.product(dtypes, FORMS, shapes):
            blas, small, chosen = measure(core, form, m, n, k, dtype, args.runs, rng, isa)
            say(
                f"| {dtype} | {form} | {m} | {n} | {k} | {blas * 1e6:.2f} | "
                f"{small * 1e6:.2f} | {blas / small:.2f} | {chosen} |"
            )
            faster = "small" if small < blas else "blas"
            total += 1
            agree += chosen == faster
            took = small if chosen == "small" else blas
            lost += took - min(blas, small)
            spent += min(blas, small)
            log_loss += math.log(took / min(blas, small))
            log_blas += math.log(blas / min(blas, small))
    say(
        f"\nthe rule takes the faster path for {agree} of {total} products; its wrong"
        f" choices cost {100 * lost / spent:.1f}% of the time over always taking the"
        f" faster path, {100 * (math.exp(log_loss / total) - 1):.1f}% per product on"
        f" average (always BLAS: {100 * (math.exp(log_blas / total) - 1):.1f}%)"
    )
    report.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
