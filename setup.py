"""Declares the compiled extensions; all metadata lives in pyproject.toml.

Set FASTBP_DEBUG=1 to build a debug extension with bounds and wraparound checks on
and without optimization (for hunting a bad index, not for timing).

OpenMP (used to split each training step over threads) is on by default on Linux
with GCC and off elsewhere; FASTBP_OPENMP=1 or 0 forces it. Without it fastbp is the
same library, single-threaded apart from BLAS.
"""

import os
import sys

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTBP_DEBUG", "0") not in ("", "0")
# FASTBP_PHASE_TIMES=1: the training step times its phases, per thread, for
# profiling (fastbp._core.phase_times, bench/phases.py); POSIX only.
PHASE_TIMES = os.environ.get("FASTBP_PHASE_TIMES", "0") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "nonecheck": DEBUG,
    "embedsignature": True,
}

if sys.platform == "win32":
    extra_compile_args = ["/Od", "/Zi"] if DEBUG else ["/O2"]
else:
    # -fno-trapping-math lets the compiler turn the selects in the activation and
    # optimizer loops into vector blends (fastbp never enables floating-point traps),
    # -fno-math-errno lets it use the sqrt instruction in vector loops (fastbp never
    # reads errno); neither changes a result. -ffp-contract=off keeps a * b + c two
    # roundings everywhere, so that the AVX-512, AVX2 and baseline versions of a loop
    # (_vmath.h) give the same bits. No -march: wheels must run on any x86-64 or arm64 CPU.
    extra_compile_args = (
        ["-O0", "-g"]
        if DEBUG
        else ["-O3", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off"]
    )

openmp = os.environ.get("FASTBP_OPENMP", "1" if sys.platform.startswith("linux") else "0")
openmp_flags = ["-fopenmp"] if openmp not in ("", "0") and sys.platform != "win32" else []
# Release builds on Linux link a stripped extension (no symbol tables: 0.66 MB
# instead of 3.4 MB); FASTBP_DEBUG=1 and sanitizer builds (tools/sanitize.sh: CFLAGS
# with -fsanitize) keep them, for readable reports.
sanitized = "-fsanitize" in os.environ.get("CFLAGS", "")
strip_flags = ["-s"] if sys.platform.startswith("linux") and not DEBUG and not sanitized else []

extensions = [
    Extension(
        "fastbp._core",
        ["fastbp/_core.pyx"],
        include_dirs=[np.get_include(), "fastbp"],
        depends=[
            "fastbp/_vmath.h",
            "fastbp/_parallel.h",
            "fastbp/_fpenv.h",
            "fastbp/_peak.h",
            "fastbp/_prefetch.h",
            "fastbp/_random.h",
            "fastbp/_smallgemm.h",
        ],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("FASTBP_PHASE_TIMES", "1")] if PHASE_TIMES else []),
        extra_compile_args=extra_compile_args + openmp_flags,
        extra_link_args=openmp_flags + strip_flags,
    ),
    # The command line's CSV parser (fastbp._table): no BLAS, no OpenMP.
    Extension(
        "fastbp._csv",
        ["fastbp/_csv.pyx"],
        extra_compile_args=extra_compile_args,
        extra_link_args=strip_flags,
    ),
    # The guard of a model's weights (a read section per predict call).
    Extension(
        "fastbp._guard",
        ["fastbp/_guard.pyx"],
        extra_compile_args=extra_compile_args,
        extra_link_args=strip_flags,
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
