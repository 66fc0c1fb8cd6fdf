"""fastbp's matrix products against BLIS's, the library made for small products.

Before writing its own small-product kernel (``fastbp/_smallgemm.h``), fastbp was to
measure the alternatives that the package index ships; BLIS, through the ``blis``
package (the build that spaCy uses, with its kernels for each CPU family chosen at
run time), is the one for small products. This times, for every matrix product of
one training step of the benchmark networks on one thread (each layer's forward
product ``A @ W``, the delta passed down ``D @ W^T``, the weight gradient
``A^T @ D``; row-major, ``fastbp._core``'s NN, NT and TN), in float32 and float64:

- fastbp: the path its step takes (``_core.matmul(path="auto")``: its small-product
  kernel or OpenBLAS, by the rule of ``_small_product``);
- OpenBLAS, through SciPy (``path="blas"``);
- BLIS: ``bli_sgemm`` / ``bli_dgemm`` of the ``blis`` package's library, on the same
  row-major operands through their row and column strides (no copy), called in a
  loop from C (``bench/repeat_gemm.c``, built here with the C compiler).

Each is the best of ``--runs`` runs of back-to-back products, the three interleaved,
twice over; every result is checked against NumPy. The report gives each product's
times, BLIS's and OpenBLAS's times over fastbp's, and each network's step total.

    pip install blis
    python bench/blis_products.py --out bench/BLIS.md
    python bench/blis_products.py --quick        # the tiny network, float32 only
"""

import argparse
import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gemm_paths import FORMS, operands  # noqa: E402
from run import NETWORKS  # noqa: E402

from common import Report, load_fastbp, machine_info, machine_markdown  # noqa: E402

DEFAULT_NETWORKS = ("tiny", "small", "deep", "tabular", "medium")
BLIS_TRANSPOSE = 8  # trans_t: BLIS_TRANSPOSE (0 is BLIS_NO_TRANSPOSE)
LABELS = {"openblas": "OpenBLAS"}
TOLERANCE = {"float32": 1e-4, "float64": 1e-11}  # max |error| / max |product|


def step_products(network):
    """(what, form, m, n, k) of each product of a one-thread step of ``network``."""
    sizes, batch = network.sizes, network.batch
    products = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        products.append((f"layer {i} forward", "NN", batch, fan_out, fan_in))
        if i > 1:
            products.append((f"layer {i} delta down", "NT", batch, fan_in, fan_out))
        products.append((f"layer {i} gradient", "TN", fan_in, fan_out, batch))
    return products


class Blis:
    """BLIS's expert typed gemm from the ``blis`` package's library, called ``repeats``
    times back to back by the helper built from ``bench/repeat_gemm.c``, with the
    kernels BLIS chose for this CPU or those of a configuration named here."""

    CONTEXT_BYTES = 1 << 20  # room for a cntx_t (a few KB in BLIS 0.7-1.0)

    def __init__(self, helper_path):
        origin = importlib.util.find_spec("blis.cy").origin
        self.lib = ctypes.CDLL(origin)
        self.lib.bli_init()
        self.lib.bli_thread_set_num_threads(ctypes.c_int64(1))
        self.lib.bli_arch_query_id.restype = ctypes.c_int
        self.lib.bli_arch_string.restype = ctypes.c_char_p
        self.lib.bli_info_get_version_str.restype = ctypes.c_char_p
        self.version = self.lib.bli_info_get_version_str().decode()
        self.detected = self.lib.bli_arch_string(self.lib.bli_arch_query_id()).decode()
        self.gemm = {
            "float32": ctypes.cast(self.lib.bli_sgemm_ex, ctypes.c_void_p).value,
            "float64": ctypes.cast(self.lib.bli_dgemm_ex, ctypes.c_void_p).value,
        }
        self.contexts = {}  # name: the context's buffer (None: BLIS's own choice)
        self.helper = ctypes.CDLL(helper_path)
        self.helper.repeat_gemm.restype = None
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self.helper.repeat_gemm.argtypes = [ptr, i64, ctypes.c_int, ctypes.c_int, i64, i64, i64]
        self.helper.repeat_gemm.argtypes += [ptr, ptr, i64, i64, ptr, i64, i64, ptr, ptr, i64, i64]
        self.helper.repeat_gemm.argtypes += [ptr]

    def add(self, name):
        """Time configuration ``name`` too (None: the one BLIS detected); returns the
        label of its column, or None where this library lacks it."""
        if name is None:
            self.contexts[self.detected] = None
            return self.detected
        init = getattr(self.lib, f"bli_cntx_init_{name}", None)
        if init is None:
            return None
        context = ctypes.create_string_buffer(self.CONTEXT_BYTES)
        init(context)
        self.contexts[name] = context
        return name

    def run(self, name, a, b, out, trans_a, trans_b, repeats):
        """``out = op(a) @ op(b)`` by configuration ``name``, ``repeats`` times."""
        dtype = out.dtype
        one, zero = np.ones(1, dtype), np.zeros(1, dtype)
        m, n = out.shape
        k = a.shape[0] if trans_a else a.shape[1]
        context = self.contexts[name]
        self.helper.repeat_gemm(
            self.gemm[dtype.name],
            repeats,
            BLIS_TRANSPOSE if trans_a else 0,
            BLIS_TRANSPOSE if trans_b else 0,
            m,
            n,
            k,
            one.ctypes.data,
            a.ctypes.data,
            a.shape[1],
            1,
            b.ctypes.data,
            b.shape[1],
            1,
            zero.ctypes.data,
            out.ctypes.data,
            out.shape[1],
            1,
            None if context is None else ctypes.addressof(context),
        )


def build_helper(directory):
    """The path of ``repeat_gemm.c`` built as a shared library, or an error message."""
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return None, "no C compiler (set CC): bench/repeat_gemm.c must be built"
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repeat_gemm.c")
    target = os.path.join(directory, "repeat_gemm.so")
    build = subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", source, "-o", target], capture_output=True, text=True
    )
    if build.returncode != 0:
        return None, f"building bench/repeat_gemm.c failed:\n{build.stderr[-500:]}"
    return target, None


def measure(core, blis, form, m, n, k, dtype, runs, rng):
    """{contender: best seconds a product}, after checking each one's result."""
    trans_a, trans_b = FORMS[form]
    a, b, _ = operands(form, m, n, k, dtype, rng)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    scale = max(float(np.abs(expected).max()), 1e-300)

    def fastbp_path(path):
        return lambda out, repeats: core.matmul(
            a, b, out, trans_a=trans_a, trans_b=trans_b, path=path, repeats=repeats
        )

    def blis_config(name):
        return lambda out, repeats: blis.run(name, a, b, out, trans_a, trans_b, repeats)

    contenders = {"fastbp": fastbp_path("auto"), "openblas": fastbp_path("blas")}
    contenders.update({f"BLIS {name}": blis_config(name) for name in blis.contexts})
    repeats = max(1, int(4e7 / (2 * m * n * k)))  # about a millisecond a run
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(2):  # interleaved: a drift of the machine's speed hits them all
        for name, product in contenders.items():
            out = np.full((m, n), np.nan, dtype)
            for _ in range(runs):
                start = time.perf_counter()
                product(out, repeats)
                best[name] = min(best[name], (time.perf_counter() - start) / repeats)
            error = float(np.abs(out - expected).max()) / scale
            if not error <= TOLERANCE[dtype]:
                raise SystemExit(
                    f"{name} computed a wrong {form} product ({m} x {n} x {k}, {dtype}):"
                    f" relative error {error:.3g}"
                )
    return best


def default_configs(core):
    """The BLIS configurations worth timing here besides the detected one: those for
    the vector instructions this CPU has (x86-64: Intel's AVX2 and AVX-512 ones and
    AMD's AVX2 one)."""
    isas = core.SMALL_GEMM_ISAS if core.SMALL_GEMM_CPU else ()
    return (["haswell", "zen2"] if "avx2" in isas else []) + (["skx"] if "avx512" in isas else [])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny network, float32")
    parser.add_argument(
        "--networks",
        default=",".join(DEFAULT_NETWORKS),
        help=f"comma-separated, of {', '.join(NETWORKS)}",
    )
    parser.add_argument(
        "--configs",
        help="comma-separated BLIS configurations to time besides the one BLIS detects"
        " (default: those for this CPU's vector instructions: haswell, zen2, skx)",
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs a product")
    parser.add_argument("--out", help="also write the report to this Markdown file")
    args = parser.parse_args(argv)
    names = ["tiny"] if args.quick else [s for s in args.networks.split(",") if s]
    unknown = [s for s in names if s not in NETWORKS]
    if unknown or not names:
        parser.error(f"--networks must name some of {', '.join(NETWORKS)}, got {unknown}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if importlib.util.find_spec("blis") is None:
        print("the blis package is not installed: pip install blis")
        return 0
    report = Report()
    say = report.say

    load_fastbp()
    from threadpoolctl import threadpool_limits

    from fastbp._backend import core as load_core

    core = load_core()
    with tempfile.TemporaryDirectory() as directory:
        helper, problem = build_helper(directory)
        if helper is None:
            print(problem)
            return 1
        blis = Blis(helper)
        configs = default_configs(core) if args.configs is None else args.configs.split(",")
        missing = [c for c in configs if c and c != blis.detected and blis.add(c) is None]
        if missing:
            parser.error(f"this BLIS has no configuration {', '.join(missing)}")
        blis.add(None)
        columns = ["fastbp", "openblas"] + [f"BLIS {name}" for name in blis.contexts]
        dtypes = ["float32"] if args.quick else ["float32", "float64"]
        rng = np.random.default_rng(0)
        say("# fastbp's products against BLIS's and OpenBLAS's, one thread\n")
        say(machine_markdown(machine_info(["bench/blis_products.py"] + list(argv or sys.argv[1:]))))
        say(
            f"- BLIS {blis.version} (the blis package); for this CPU it chose its"
            f" {blis.detected} configuration"
        )
        kernel = core.SMALL_GEMM_ISAS[-1] if core.SMALL_GEMM_CPU else "none on this CPU"
        say(f"- fastbp's small-product kernel: {kernel}\n")
        say("Each product of a one-thread training step, in µs, the best of the runs;")
        say("BLIS under each configuration timed (BLIS <name>). The ratios are how many")
        say("times fastbp's time the best BLIS configuration and OpenBLAS take.\n")
        totals = []
        with threadpool_limits(1):
            for dtype in dtypes:
                for name in names:
                    network = NETWORKS[name]
                    shape = "-".join(map(str, network.sizes))
                    say(f"## {name} {shape}, batch {network.batch}, {dtype}\n")
                    heads = ["product", "form", "m", "n", "k", "fastbp takes"]
                    heads += [f"{LABELS.get(c, c)} µs" for c in columns]
                    heads += ["best BLIS / fastbp", "OpenBLAS / fastbp"]
                    say("| " + " | ".join(heads) + " |")
                    say(
                        "| :--- | :--- | "
                        + " | ".join(["---:"] * 3)
                        + " | :--- | "
                        + " | ".join(["---:"] * (len(columns) + 2))
                        + " |"
                    )
                    sums = dict.fromkeys(columns, 0.0)
                    for what, form, m, n, k in step_products(network):
                        t = measure(core, blis, form, m, n, k, dtype, args.runs, rng)
                        chosen = core.gemm_path(m, n, k, *FORMS[form], dtype=dtype)
                        for key in sums:
                            sums[key] += t[key]
                        best_blis = min(t[c] for c in columns[2:])
                        cells = [what, form, m, n, k, chosen]
                        cells += [f"{t[c] * 1e6:.2f}" for c in columns]
                        cells += [f"{best_blis / t['fastbp']:.2f}"]
                        cells += [f"{t['openblas'] / t['fastbp']:.2f}"]
                        say("| " + " | ".join(map(str, cells)) + " |")
                    best_blis = min(sums[c] for c in columns[2:])
                    cells = ["**the step's products**", "", "", "", "", ""]
                    cells += [f"{sums[c] * 1e6:.2f}" for c in columns]
                    cells += [f"{best_blis / sums['fastbp']:.2f}"]
                    cells += [f"{sums['openblas'] / sums['fastbp']:.2f}"]
                    say("| " + " | ".join(cells) + " |\n")
                    totals.append((name, dtype, sums))
        say("## Summary: the products of a step\n")
        say("How many times fastbp's time each takes.\n")
        heads = ["network", "dtype", "fastbp µs"] + [LABELS.get(c, c) for c in columns[1:]]
        say("| " + " | ".join(heads) + " |")
        say("| :--- | :--- | " + " | ".join(["---:"] * (len(heads) - 2)) + " |")
        for name, dtype, sums in totals:
            cells = [name, dtype, f"{sums['fastbp'] * 1e6:.2f}"]
            cells += [f"{sums[c] / sums['fastbp']:.2f}" for c in columns[1:]]
            say("| " + " | ".join(cells) + " |")
    report.save(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
