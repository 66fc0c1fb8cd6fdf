"""Time a training step of dense networks: fastbp against NumPy by hand, PyTorch
eager and scikit-learn.

Usage (from the repository root)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/run.py            # full
    python bench/run.py --quick                  # scaled-down networks, seconds
    python bench/run.py --networks tiny,medium --dtype float32 --threads 1 --optimizer adam

A training step is forward + loss + backward + optimizer update on one shuffled
minibatch. An epoch is one call (``fit`` for fastbp, ``partial_fit`` for
scikit-learn, a Python loop over minibatches for NumPy and PyTorch); a measurement
times whole epochs back to back for at least ``--min-time`` seconds and divides by
their number of minibatches. The implementations are warmed up, then measured
round-robin (one measurement of each per repeat, the starting implementation
rotating), and the median and min-max over the repeats are
reported, beside two peaks measured in the same run at the same thread count: the
best gemm throughput, and the rate of independent multiply-adds (fastbp's FMA
loop).

Results: Markdown on stdout and in ``OUT/RESULTS.md``, every raw time in
``OUT/results.json``. ``OUT`` is ``bench/`` for full runs and a temporary folder
for ``--quick`` and ``--smoke`` unless ``--out`` says otherwise.
"""

import argparse
import dataclasses
import gc
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import latency  # noqa: E402
from common import (  # noqa: E402
    fmt_number,
    fmt_range,
    fmt_time,
    machine_info,
    machine_markdown,
    markdown_table,
    openblas_report,
    summarize,
)
from impls import (  # noqa: E402
    ADAPTERS,
    IMPLEMENTATIONS,
    Network,
    available,
    default_optimizer,
    initial_weights,
    make_data,
    reference_loss,
)

HERE = os.path.dirname(os.path.abspath(__file__))

NETWORKS = {
    "tiny": Network("tiny", (64, 32, 10), "relu", "cross_entropy", 32),
    "small": Network("small", (784, 128, 10), "relu", "cross_entropy", 64),
    "medium": Network("medium", (784, 512, 512, 10), "relu", "cross_entropy", 256),
    "large": Network("large", (1024, 4096, 4096, 1024), "relu", "mse", 1024),
    "deep": Network("deep", (100,) + (100,) * 10 + (10,), "tanh", "cross_entropy", 128),
    # A tabular classifier trained on a million rows: an epoch reads 200 MB (float32)
    # of shuffled rows, more than any cache holds.
    "tabular": Network("tabular", (50, 256, 256, 2), "relu", "cross_entropy", 256),
}
# --quick: the same networks, the two big ones scaled down.
QUICK_NETWORKS = dict(
    NETWORKS,
    **{
        "medium": Network("medium", (784, 128, 128, 10), "relu", "cross_entropy", 64),
        "large": Network("large", (128, 512, 512, 128), "relu", "mse", 128),
    },
)
# Minibatches per measured epoch.
STEPS = {"tiny": 400, "small": 200, "medium": 60, "large": 6, "deep": 200, "tabular": 3907}
QUICK_STEPS = {"tiny": 40, "small": 20, "medium": 20, "large": 8, "deep": 20, "tabular": 20}
# At most this many measured epochs where one takes seconds (tabular: 1,000,192 rows).
MAX_REPEATS = {"tabular": 3}
SMOKE_STEPS = 6

GEMM_SIZES = (512, 1024, 1536, 2048)
QUICK_GEMM_SIZES = (256, 512)
SMOKE_GEMM_SIZES = (128,)

CHECK_FAILED = "CHECK FAILED"


def log(message):
    """Progress goes to stderr, so that stdout holds only the Markdown report."""
    print(message, file=sys.stderr, flush=True)


def csv_list(text):
    """Split a comma-separated option value."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args(argv=None):
    """Parse the command line and fill in the defaults of the chosen mode."""
    parser = argparse.ArgumentParser(
        description="Time a training step of dense networks (fastbp, NumPy, PyTorch, "
        "scikit-learn).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="scaled-down networks, fewer steps and repeats (seconds); "
        "defaults to float32, 1 thread",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="--quick, networks tiny,deep,large, 1 repeat, few steps (for the test suite)",
    )
    parser.add_argument(
        "--networks",
        type=csv_list,
        default=None,
        help=f"comma-separated subset of {','.join(NETWORKS)}",
    )
    parser.add_argument(
        "--dtype", type=csv_list, default=None, help="float32,float64 (full) or float32 (--quick)"
    )
    parser.add_argument(
        "--threads",
        type=lambda s: [int(t) for t in csv_list(s)],
        default=None,
        help="BLAS thread counts: 1,2 (full) or 1 (--quick)",
    )
    parser.add_argument(
        "--optimizer",
        type=csv_list,
        default=["sgd", "adam"],
        help="sgd (momentum 0.9, lr 0.01) and/or adam (lr 1e-3)",
    )
    parser.add_argument(
        "--implementations",
        type=csv_list,
        default=list(IMPLEMENTATIONS),
        help="subset of fastbp,numpy,torch,sklearn (absent libraries are left out)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="measured epochs per implementation (7 full, 2 quick)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="minibatches per measured epoch, for every network (default: per network)",
    )
    parser.add_argument(
        "--gemm-sizes",
        type=lambda s: [int(t) for t in csv_list(s)],
        default=None,
        help="square gemm sizes for the peak: 512,1024,1536,2048 (full), 256,512 (--quick)",
    )
    parser.add_argument(
        "--latency-calls",
        type=int,
        default=None,
        help="one-row predict calls per implementation for the latency table: 10000"
        " (full), 2000 (--quick), 200 (--smoke); 0 leaves the table out",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=None,
        help="seconds a measurement lasts at least (whole epochs back to back): 0.25"
        " (full), 0.1 (--quick), 0 (--smoke: one epoch)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-check", action="store_true", help="skip the correctness checks before timing"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for RESULTS.md and results.json (bench/ for full "
        "runs, a temporary folder for --quick/--smoke)",
    )
    args = parser.parse_args(argv)

    args.quick = args.quick or args.smoke
    networks = QUICK_NETWORKS if args.quick else NETWORKS
    names = args.networks or (["tiny", "deep", "large"] if args.smoke else list(NETWORKS))
    unknown = [n for n in names if n not in networks]
    if unknown:
        parser.error(f"unknown network(s) {unknown}; choose from {list(networks)}")
    args.network_list = [networks[n] for n in names]
    args.dtype = args.dtype or (["float32"] if args.quick else ["float32", "float64"])
    args.threads = args.threads or ([1] if args.quick else [1, 2])
    for bad, allowed, what in (
        (args.dtype, ("float32", "float64"), "dtype"),
        (args.optimizer, ("sgd", "adam"), "optimizer"),
        (args.implementations, IMPLEMENTATIONS, "implementation"),
    ):
        wrong = [x for x in bad if x not in allowed]
        if wrong:
            parser.error(f"unknown {what}(s) {wrong}; choose from {list(allowed)}")
    if min(args.threads) < 1:
        parser.error("thread counts must be positive")
    args.repeats = args.repeats or (1 if args.smoke else 2 if args.quick else 7)
    args.settle = 0.0 if args.smoke else 0.1
    if args.min_time is None:
        args.min_time = 0.0 if args.smoke else 0.1 if args.quick else 0.25
    if args.min_time < 0:
        parser.error("--min-time must not be negative")
    if args.steps is None:
        args.steps_for = (
            (lambda n: SMOKE_STEPS)
            if args.smoke
            else ((lambda n: QUICK_STEPS[n]) if args.quick else (lambda n: STEPS[n]))
        )
    else:
        args.steps_for = lambda n: args.steps
    args.gemm_sizes = args.gemm_sizes or (
        SMOKE_GEMM_SIZES if args.smoke else QUICK_GEMM_SIZES if args.quick else GEMM_SIZES
    )
    args.gemm_repeats = 2 if args.smoke else 3 if args.quick else 5
    if args.latency_calls is None:
        args.latency_calls = 200 if args.smoke else 2000 if args.quick else 10_000
    if args.latency_calls < 0:
        parser.error("--latency-calls must not be negative")
    if args.out is None:
        args.out = os.path.join(tempfile.gettempdir(), "fastbp-bench-quick") if args.quick else HERE
    return args


# -- gemm peak --------------------------------------------------------------------
def _best_time(fn, repeats, min_time=0.05):
    """Best time of one call of ``fn`` over ``repeats`` samples, each sample
    looping over enough calls to last about ``min_time`` seconds (after a warm-up
    call that also sets the loop count)."""
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    loops = max(1, int(min_time / max(once, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops)
    return best


def gemm_peak(dtype, sizes, repeats, seed=0):
    """The best gemm throughput at the current thread count.

    Times SciPy's BLAS ``sgemm``/``dgemm`` (Fortran-ordered operands and output,
    so nothing is copied; this is the BLAS fastbp calls) and ``np.matmul`` with
    ``out=`` (NumPy's BLAS) on square matrices.

    Returns
    -------
    dict
        GFLOP/s per library and size, and "peak": the best of all.
    """
    from scipy.linalg import blas

    gemm = blas.sgemm if np.dtype(dtype) == np.float32 else blas.dgemm
    gemm_name = "sgemm" if np.dtype(dtype) == np.float32 else "dgemm"
    rng = np.random.default_rng(seed)
    result = {"scipy." + gemm_name: {}, "np.matmul": {}}
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(dtype)
        b = rng.standard_normal((n, n)).astype(dtype)
        flops = 2.0 * n**3
        af, bf, cf = np.asfortranarray(a), np.asfortranarray(b), np.zeros((n, n), dtype, "F")
        t = _best_time(lambda: gemm(1.0, af, bf, beta=0.0, c=cf, overwrite_c=1), repeats)  # noqa: B023
        result["scipy." + gemm_name][n] = flops / t / 1e9
        c = np.empty((n, n), dtype)
        t = _best_time(lambda: np.matmul(a, b, out=c), repeats)  # noqa: B023
        result["np.matmul"][n] = flops / t / 1e9
    result["peak"] = max(max(v.values()) for v in result.values())
    return result


def fma_peak(dtype, threads, repeats, min_time=0.05, settle=0.5):
    """The multiply-add peak at ``threads`` threads: the best rate of fastbp's loop of
    independent FMA chains held in registers (``fastbp._core.fma_loop``, the widest
    version this CPU runs: AVX-512, AVX2 or portable), all threads at once.

    Measured after a pause of ``settle`` seconds: BLAS worker threads spin for a while
    after a product (OpenBLAS's, just after the gemm peak, cut the 2-thread rate of
    the loop from 205 to 43 GFLOP/s here), and the loop's threads must have the
    cores to themselves.

    Returns
    -------
    dict
        "gflops" (all threads together), "isa" (the version) and "threads" (those
        that ran: fewer than asked where fastbp is built without OpenMP).
    """
    from fastbp._backend import core

    loop = core().fma_loop
    sums = np.zeros(threads)
    time.sleep(settle)
    rounds = 100_000
    start = time.perf_counter()
    loop(sums, rounds, dtype)
    once = time.perf_counter() - start
    rounds = max(rounds, int(rounds * min_time / max(once, 1e-9)))
    best, team, flops = float("inf"), 1, 0
    for _ in range(repeats):
        start = time.perf_counter()
        team, flops = loop(sums, rounds, dtype)
        best = min(best, time.perf_counter() - start)
    return {"gflops": team * flops / best / 1e9, "isa": core().PEAK_ISA, "threads": team}


# -- correctness checks -------------------------------------------------------------
def run_checks(names, dtype, opt, seed):
    """Check every implementation on the tiny network before timing.

    1. Its loss (by ``fastbp._reference``, in float64) decreases over 3 epochs of 16
       minibatches (for scikit-learn, which draws its own initial weights, from
       after its first epoch).
    2. Those that start from the same weights agree: after 5 full-batch steps
       (shuffling then cannot matter) their losses match to float rounding.

    Returns
    -------
    list of dict
        One record per implementation, and one for the agreement; a failure is
        printed as a line starting with ``CHECK FAILED``.
    """
    net = NETWORKS["tiny"]
    records = []
    X, y = make_data(net, net.batch * 16, dtype, seed + 11)
    weights = initial_weights(net, dtype, seed)
    for name in names:
        try:
            impl = ADAPTERS[name](net, opt, dtype, weights, seed)
            data = impl.prepare(X, y)
            if not impl.takes_weights:
                impl.epoch(data)
            before = reference_loss(impl.get_weights(), net, X, y)
            for _ in range(3):
                impl.epoch(data)
            after = reference_loss(impl.get_weights(), net, X, y)
        except Exception as exc:  # noqa: BLE001  (reported, the run goes on)
            before = after = float("nan")
            log(f"check {dtype} {opt.name} {name} raised {type(exc).__name__}: {exc}")
        ok = bool(np.isfinite(after) and after < before)
        records.append(
            {
                "check": "loss decreases",
                "dtype": dtype,
                "optimizer": opt.name,
                "implementation": name,
                "before": before,
                "after": after,
                "ok": ok,
            }
        )
        line = f"check {dtype} {opt.name:4s} {name:8s} loss {before:.4f} -> {after:.4f}"
        log(line + ("  ok" if ok else ""))
        if not ok:
            print(
                f"{CHECK_FAILED}: {name} ({dtype}, {opt.name}): the loss did not decrease"
                f" on the tiny network ({before:.6g} -> {after:.6g})",
                flush=True,
            )

    # Agreement after full-batch steps from the same weights.
    full = dataclasses.replace(net, batch=256)
    X, y = make_data(full, full.batch, dtype, seed + 12)
    losses = {}
    for name in names:
        if not ADAPTERS[name].takes_weights:
            continue
        try:
            impl = ADAPTERS[name](full, opt, dtype, weights, seed)
            data = impl.prepare(X, y)
            for _ in range(5):
                impl.epoch(data)
            losses[name] = reference_loss(impl.get_weights(), full, X, y)
        except Exception as exc:  # noqa: BLE001
            losses[name] = float("nan")
            log(f"check {dtype} {opt.name} {name} raised {type(exc).__name__}: {exc}")
    if len(losses) >= 2:
        values = np.array(list(losses.values()))
        spread = float((values.max() - values.min()) / abs(values.mean()))
        tolerance = 1e-4 if np.dtype(dtype) == np.float32 else 1e-9
        ok = bool(np.isfinite(spread) and spread <= tolerance)
        records.append(
            {
                "check": "full-batch agreement",
                "dtype": dtype,
                "optimizer": opt.name,
                "losses": losses,
                "relative_spread": spread,
                "tolerance": tolerance,
                "ok": ok,
            }
        )
        shown = ", ".join(f"{k} {v:.6f}" for k, v in losses.items())
        log(
            f"check {dtype} {opt.name:4s} agreement after 5 full-batch steps: {shown}"
            f" (relative spread {spread:.1e})" + ("  ok" if ok else "")
        )
        if not ok:
            print(
                f"{CHECK_FAILED}: {dtype} {opt.name}: losses after 5 identical full-batch"
                f" steps disagree: {shown} (relative spread {spread:.2e} > {tolerance:g})",
                flush=True,
            )
    return records


# -- timing -----------------------------------------------------------------------
def measure_network(net, names, dtype, opt, steps, repeats, seed, settle=0.0, min_time=0.0):
    """Time one network for every implementation, interleaved.

    Each implementation is built from the same initial weights and data, warmed up
    on a quarter of the data (at least 2 minibatches), then measured ``repeats``
    times, round-robin: repeat r measures every implementation once, starting from
    the (r mod n)-th, each after a pause of ``settle`` seconds. A measurement is
    ``k`` epochs of ``steps`` minibatches back to back, timed together: ``k`` is the
    smallest count that lasts ``min_time`` seconds by one more warm-up epoch, timed
    (1 when ``min_time`` is 0 or the first warm-up says an epoch lasts longer), so
    that an epoch of milliseconds is not timed alone just after the pause, with cold
    caches and a clock that has slowed down. An implementation that raises (a
    diverging fit, say) is reported and left out of the rest.

    Returns
    -------
    results : dict of str to dict
        Per implementation that completed: raw epoch times (each a measurement's
        mean), step times, their summary and ``k``.
    errors : dict of str to str
        Per implementation that raised: the error.
    """
    X, y = make_data(net, net.batch * steps, dtype, seed)
    weights = initial_weights(net, dtype, seed)
    warm_rows = net.batch * max(2, steps // 4)
    impls, data, errors, epochs = {}, {}, {}, {}
    for name in names:
        try:
            impl = ADAPTERS[name](net, opt, dtype, weights, seed)
            data[name] = impl.prepare(X, y)
            start = time.perf_counter()
            impl.epoch(impl.prepare(X[:warm_rows], y[:warm_rows]))
            guess = (time.perf_counter() - start) * net.batch * steps / warm_rows
            epochs[name] = 1
            if guess < min_time:  # (a long epoch is not run once more to learn that)
                start = time.perf_counter()
                impl.epoch(data[name])
                epochs[name] = max(1, math.ceil(min_time / (time.perf_counter() - start)))
            impls[name] = impl
        except Exception as exc:  # noqa: BLE001  (reported, the run goes on)
            errors[name] = f"{type(exc).__name__}: {exc}"
    epoch_times = {name: [] for name in impls}
    gc.collect()
    for r in range(repeats):
        running = [n for n in names if n in impls and n not in errors]
        shift = r % max(1, len(running))
        for name in running[shift:] + running[:shift]:
            # Let the worker threads of the implementation timed before this one
            # (OpenMP and BLAS pools spin for a while after their work) go idle, so
            # that they do not take a core from this one.
            time.sleep(settle)
            start = time.perf_counter()
            try:
                for _ in range(epochs[name]):
                    impls[name].epoch(data[name])
            except Exception as exc:  # noqa: BLE001
                errors[name] = f"{type(exc).__name__}: {exc}"
                continue
            epoch_times[name].append((time.perf_counter() - start) / epochs[name])
    results = {}
    for name in impls:
        if name in errors:
            continue
        step_times = [t / steps for t in epoch_times[name]]
        finite = all(
            np.isfinite(w).all() and np.isfinite(b).all() for w, b in impls[name].get_weights()
        )
        results[name] = dict(
            summarize(step_times),
            epoch_times=epoch_times[name],
            epochs_per_measurement=epochs[name],
            step_times=step_times,
            finite=bool(finite),
            describe=impls[name].describe(),
        )
    del impls, data
    gc.collect()
    return results, errors


def time_network(args, net, names, dtype, threads, opt_name, peak, describe, fma=None):
    """Measure one network in one (dtype, threads, optimizer) setting.

    Returns
    -------
    records : list of dict
        One per implementation that completed: the raw times, their summary,
        samples/s, GFLOP/s, % of the gemm ``peak`` and of the multiply-add peak
        ``fma`` (GFLOP/s; None: not measured), and the ratio to fastbp's median.
    failures : list of dict
        One per implementation that raised.
    """
    steps = args.steps_for(net.name)
    res, errors = measure_network(
        net,
        names,
        dtype,
        default_optimizer(opt_name),
        steps,
        min(args.repeats, MAX_REPEATS.get(net.name, args.repeats)),
        args.seed,
        settle=args.settle,
        min_time=args.min_time,
    )
    failures = []
    for name, error in errors.items():
        print(
            f"{CHECK_FAILED}: {name} {net.name} ({dtype}, {threads} threads, {opt_name})"
            f" raised {error}",
            flush=True,
        )
        failures.append(
            {
                "dtype": dtype,
                "threads": threads,
                "optimizer": opt_name,
                "network": net.name,
                "implementation": name,
                "error": error,
            }
        )
    base = res.get("fastbp", {}).get("median")
    records = []
    for name in [n for n in names if n in res]:
        r = res[name]
        describe[name] = r.pop("describe")
        gflops = net.flops_per_step / r["median"] / 1e9
        rec = {
            "dtype": dtype,
            "threads": threads,
            "optimizer": opt_name,
            "network": net.name,
            "arch": net.arch,
            "batch": net.batch,
            "steps": steps,
            "implementation": name,
            "samples_per_s": net.batch / r["median"],
            "gflops": gflops,
            "pct_of_peak": 100 * gflops / peak,
            "pct_of_fma_peak": 100 * gflops / fma if fma else None,
            "ratio_to_fastbp": r["median"] / base if base else None,
        }
        rec.update(r)
        records.append(rec)
        if not r["finite"]:
            print(
                f"{CHECK_FAILED}: {name} {net.name} ({dtype}, {threads} threads,"
                f" {opt_name}): weights became non-finite",
                flush=True,
            )
    shown = "  ".join(f"{n} {fmt_time(res[n]['median'])}" for n in res)
    log(f"{dtype} {threads}t {opt_name:4s} {net.name:6s} {shown}")
    return records, failures


def set_torch_threads(threads):
    """Set torch's intra-op thread count, when torch is loaded."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


# -- report -----------------------------------------------------------------------
def opt_label(name):
    """The optimizer's name and hyperparameters, for table headings."""
    spec = default_optimizer(name)
    if name == "sgd":
        return f"SGD (momentum {spec.momentum}, lr {spec.lr:g})"
    return f"Adam (lr {spec.lr:g})"


def result_table(records):
    """Markdown table of one (dtype, threads, optimizer) block of records."""
    headers = [
        "network",
        "implementation",
        "time/step (median)",
        "spread (min–max)",
        "samples/s",
        "GFLOP/s",
        "% of gemm peak",
        "% of FMA peak",
        "time ÷ fastbp",
    ]
    rows = []
    for rec in records:
        ratio = rec.get("ratio_to_fastbp")
        rows.append(
            [
                rec["network"],
                rec["implementation"],
                fmt_time(rec["median"]),
                fmt_range(rec["min"], rec["max"]),
                fmt_number(rec["samples_per_s"]),
                fmt_number(rec["gflops"]),
                f"{rec['pct_of_peak']:.1f}",
                "–" if rec.get("pct_of_fma_peak") is None else f"{rec['pct_of_fma_peak']:.1f}",
                "–" if ratio is None else f"{ratio:.2f}",
            ]
        )
    return markdown_table(headers, rows, "llrrrrrrr")


def render_report(meta, args, networks, gemm, checks, records, describe, failures=(), latencies=()):
    """The whole Markdown report: machine, method, networks, checks, gemm peak,
    one table per (dtype, threads, optimizer), and the one-row predict latency."""
    out = ["# fastbp training-step benchmark", ""]
    out += ["## Machine", "", machine_markdown(meta), ""]
    out += ["OpenBLAS as threadpoolctl reports it:", ""]
    out += [f"- {line}" for line in openblas_report()] + [""]
    out += [
        "## Method",
        "",
        "Time per training step = forward + loss + backward + optimizer update on one"
        " shuffled minibatch: the time of an epoch (fastbp `fit(epochs=1)`,"
        " scikit-learn `partial_fit` with `max_iter=1`, a Python loop of minibatches"
        " for NumPy and PyTorch) divided by its number of minibatches. A measurement"
        " runs whole epochs back to back for at least"
        f" {args.min_time:g} s (the count fixed per implementation by a timed warm-up"
        " epoch) and takes their mean, so that a short epoch is not timed alone on"
        " cold caches. Synthetic data"
        f" (seed {args.seed}); every implementation but scikit-learn starts from the"
        " same weights. Each implementation is warmed up, then measured"
        f" {args.repeats} time(s)"
        + "".join(
            f" ({name}: at most {cap}, an epoch of it takes seconds)"
            for name, cap in MAX_REPEATS.items()
            if any(n.name == name for n in networks) and cap < args.repeats
        )
        + ", round-robin (the starting implementation rotates"
        " per repeat). Median and min–max over the repeats. GFLOP/s counts"
        " 6 × weights × batch per step. % of gemm peak: against the best"
        " GFLOP/s of SciPy's BLAS gemm and `np.matmul` on square matrices"
        f" ({', '.join(map(str, args.gemm_sizes))}) at the same thread count, measured"
        " in the same run; % of FMA peak: against fastbp's loop of independent"
        " multiply-adds at the same thread count, also measured in the same run."
        " time ÷ fastbp: the implementation's median over fastbp's"
        " (above 1: fastbp is faster).",
        "",
    ]
    out += ["Implementations:", ""] + [f"- {k}: {v}" for k, v in describe.items()] + [""]
    rows = [
        [
            n.name,
            n.arch,
            n.activation,
            n.loss,
            n.batch,
            f"{n.n_weights:,}",
            fmt_number(n.flops_per_step / 1e6),
            args.steps_for(n.name),
        ]
        for n in networks
    ]
    out += [
        "## Networks",
        "",
        markdown_table(
            [
                "network",
                "layers",
                "hidden activation",
                "loss",
                "batch",
                "weights",
                "MFLOP/step",
                "steps/measurement",
            ],
            rows,
            "lllrrrrr",
        ),
        "",
    ]
    if checks:
        rows = []
        for c in checks:
            if c["check"] == "loss decreases":
                detail = f"{c['before']:.4f} → {c['after']:.4f}"
                who = c["implementation"]
            else:
                detail = (
                    ", ".join(f"{k} {v:.6f}" for k, v in c["losses"].items())
                    + f" (spread {c['relative_spread']:.1e})"
                )
                who = "all given the same weights"
            rows.append(
                [c["dtype"], c["optimizer"], c["check"], who, detail, "ok" if c["ok"] else "FAILED"]
            )
        out += [
            "## Correctness checks (tiny network)",
            "",
            markdown_table(
                ["dtype", "optimizer", "check", "implementation", "loss", "result"], rows, "llllll"
            ),
            "",
        ]
    rows = []
    for g in gemm:
        for lib in [k for k in g["gflops"] if k != "peak"]:
            rows.append(
                [g["dtype"], g["threads"], lib]
                + [fmt_number(g["gflops"][lib][n]) for n in args.gemm_sizes]
            )
    out += [
        "## gemm peak (GFLOP/s)",
        "",
        markdown_table(
            ["dtype", "threads", "library"] + [f"n={n}" for n in args.gemm_sizes],
            rows,
            "lrl" + "r" * len(args.gemm_sizes),
        ),
        "",
    ]
    fma_rows = [
        [
            g["dtype"],
            g["threads"],
            g["fma"]["isa"],
            g["fma"]["threads"],
            fmt_number(g["fma"]["gflops"]),
        ]
        for g in gemm
        if g.get("fma")
    ]
    if fma_rows:
        out += [
            "## Multiply-add peak (GFLOP/s)",
            "",
            "fastbp's loop of independent FMA chains held in registers"
            " (`fastbp._core.fma_loop`, `fastbp/_peak.h`), the widest version the CPU runs,"
            " on every thread at once: what the cores retire when no memory traffic or"
            " dependence limits them.",
            "",
            markdown_table(
                ["dtype", "threads", "version", "threads that ran", "GFLOP/s"], fma_rows, "lrlrr"
            ),
            "",
        ]
    if failures:
        out += (
            ["## Failures", ""]
            + [
                f"- {f['implementation']} on {f['network']} ({f['dtype']}, {f['threads']}"
                f" threads, {f['optimizer']}): {f['error']}"
                for f in failures
            ]
            + [""]
        )
    out += ["## Time per training step", ""]
    for dtype in args.dtype:
        for threads in args.threads:
            g = next(g for g in gemm if g["dtype"] == dtype and g["threads"] == threads)
            peak = g["gflops"]["peak"]
            fma = f"; FMA peak: {g['fma']['gflops']:.1f} GFLOP/s" if g.get("fma") else ""
            for opt in args.optimizer:
                block = [
                    r
                    for r in records
                    if r["dtype"] == dtype and r["threads"] == threads and r["optimizer"] == opt
                ]
                if not block:
                    continue
                plural = "thread" if threads == 1 else "threads"
                out += [
                    f"### {dtype}, {threads} BLAS {plural}, {opt_label(opt)}",
                    "",
                    f"gemm peak: {peak:.1f} GFLOP/s{fma}",
                    "",
                    result_table(block),
                    "",
                ]
    if latencies:
        out += [
            "## One-row prediction latency",
            "",
            latency.__doc__.split("\n\n")[1].replace("\n", " ").replace("``", "`")
            + f" Network {'-'.join(map(str, latency.NETWORK.sizes))}; max error: the"
            " largest difference of the probabilities from a float64 NumPy forward pass.",
            "",
            markdown_table(
                [
                    "dtype",
                    "threads",
                    "implementation",
                    "calls",
                    "median",
                    "p99",
                    "p99.9",
                    "median ÷ fastbp",
                    "max error",
                ],
                [
                    [
                        r["dtype"],
                        r["threads"],
                        r["implementation"],
                        f"{r['calls']:,}",
                        fmt_time(r["median"]),
                        fmt_time(r["p99"]),
                        fmt_time(r["p999"]),
                        f"{r['ratio']:.2f}" if r["ratio"] is not None else "–",
                        f"{r['max_error']:.1e}",
                    ]
                    for r in latencies
                ],
                "lrlrrrrrr",
            ),
            "",
        ]
    return "\n".join(out)


def main(argv=None):
    """Run the benchmark (see the module docstring); ``argv`` as on the command line."""
    args = parse_args(argv)
    names = available(args.implementations)
    missing = [n for n in args.implementations if n not in names]
    if missing:
        log(f"not installed, left out: {', '.join(missing)}")
    if not names:
        raise SystemExit("no implementation to run")
    # Import the optional libraries now, so that threadpoolctl sees (and limits)
    # their thread pools and the machine description lists them.
    if "torch" in names:
        import torch  # noqa: F401
    if "sklearn" in names:
        import sklearn.neural_network  # noqa: F401
    import scipy.linalg  # noqa: F401  (fastbp's BLAS)
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    meta = machine_info(["bench/run.py"] + (sys.argv[1:] if argv is None else list(argv)))
    for line in openblas_report():
        log(line)

    checks = []
    if not args.no_check:
        with threadpool_limits(limits=args.threads[0]):
            set_torch_threads(args.threads[0])
            for dtype in args.dtype:
                for opt_name in args.optimizer:
                    checks += run_checks(names, dtype, default_optimizer(opt_name), args.seed)

    gemm, records, describe, failures = [], [], {}, []
    for dtype in args.dtype:
        for threads in args.threads:
            with threadpool_limits(limits=threads):
                set_torch_threads(threads)
                fma = fma_peak(dtype, threads, args.gemm_repeats)
                g = gemm_peak(dtype, args.gemm_sizes, args.gemm_repeats, args.seed)
                gemm.append({"dtype": dtype, "threads": threads, "gflops": g, "fma": fma})
                log(
                    f"gemm peak {dtype} {threads} thread(s): {g['peak']:.1f} GFLOP/s;"
                    f" FMA peak ({fma['isa']}, {fma['threads']} thread(s)):"
                    f" {fma['gflops']:.1f} GFLOP/s"
                )
                for opt_name in args.optimizer:
                    for net in args.network_list:
                        new, failed = time_network(
                            args,
                            net,
                            names,
                            dtype,
                            threads,
                            opt_name,
                            g["peak"],
                            describe,
                            fma["gflops"],
                        )
                        records += new
                        failures += failed

    latencies = []
    if args.latency_calls:
        for dtype in args.dtype:
            for threads in args.threads:
                with threadpool_limits(limits=threads):
                    set_torch_threads(threads)
                    times, errors = latency.measure(names, dtype, args.latency_calls, args.seed)
                latencies += latency.summarize(times, errors, dtype, threads)
                log(f"one-row predict latency {dtype} {threads} thread(s) measured")

    report = render_report(
        meta, args, args.network_list, gemm, checks, records, describe, failures, latencies
    )
    elapsed = time.perf_counter() - started
    os.makedirs(args.out, exist_ok=True)
    payload = {
        "meta": dict(
            meta,
            elapsed_s=elapsed,
            quick=args.quick,
            smoke=args.smoke,
            repeats=args.repeats,
            seed=args.seed,
            implementations=describe,
            openblas_report=openblas_report(),
        ),
        "networks": [
            dict(
                dataclasses.asdict(n),
                n_weights=n.n_weights,
                flops_per_step=n.flops_per_step,
                steps=args.steps_for(n.name),
            )
            for n in args.network_list
        ],
        "gemm": gemm,
        "checks": checks,
        "failures": failures,
        "results": records,
        "latency": latencies,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(payload, f, indent=1, default=str)
    with open(os.path.join(args.out, "RESULTS.md"), "w") as f:
        f.write(report + "\n")
    print(report)
    log(f"wrote {os.path.join(args.out, 'RESULTS.md')} and results.json ({elapsed:.1f} s)")


if __name__ == "__main__":
    main()
