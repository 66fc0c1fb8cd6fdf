"""End-to-end numbers: fit time and test accuracy on scikit-learn's digits, peak
memory of training, and the time of ``import fastbp``.

Usage (from the repository root)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/digits.py
    python bench/digits.py --quick          # a few epochs, one repeat: seconds

1. Digits: scikit-learn's bundled 8x8 digits (``load_digits``, no download),
   1797 samples, a fixed stratified 75/25 split, features standardized with the
   training set's mean and deviation. A 64-128-10 ReLU network, Adam (lr 1e-3),
   batch 200 (scikit-learn's default ``min(200, n)``), the same number of epochs
   (137) for every implementation; scikit-learn's ``MLPClassifier`` with
   ``max_iter=137, tol=0, n_iter_no_change=1000`` (and ``alpha=0``: no L2 penalty,
   as the others have none). The fit is timed from a fresh model (fastbp, NumPy and
   PyTorch from the same initial weights), round-robin over the implementations,
   median of the repeats; test accuracy from the fitted weights.
2. Peak memory: the medium network (784-512-512-10, batch 256, SGD momentum 0.9)
   trained for 200 steps in a fresh process per implementation (the processes run
   concurrently: they measure memory, not time); the peak resident
   set size before training (after the imports and the data) and after the steps
   (Linux: ``VmHWM``, the peak of the process's own address space, since
   ``getrusage(RUSAGE_SELF).ru_maxrss`` inherits the parent's peak across
   fork/exec; it is recorded too, in the JSON).
3. ``import fastbp`` in a fresh interpreter, median of several runs, beside
   ``import numpy`` (which fastbp imports) and the first model build (which loads
   the compiled core and ``scipy.linalg``).
"""

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import (  # noqa: E402
    fmt_time,
    have,
    load_fastbp,
    machine_info,
    markdown_table,
    openblas_report,
    summarize,
)
from impls import (  # noqa: E402
    ADAPTERS,
    IMPLEMENTATIONS,
    Network,
    OptimizerSpec,
    available,
    initial_weights,
    make_data,
    reference_accuracy,
)

HERE = os.path.dirname(os.path.abspath(__file__))

DIGITS_NET = Network("digits", (64, 128, 10), "relu", "cross_entropy", 200)
MEMORY_NET = Network("medium", (784, 512, 512, 10), "relu", "cross_entropy", 256)
MEMORY_STEPS_PER_EPOCH = 25


def log(message):
    """Progress goes to stderr, so that stdout holds only the Markdown report."""
    print(message, file=sys.stderr, flush=True)


def parse_args(argv=None):
    """Parse the command line and fill in the defaults of the chosen mode."""
    parser = argparse.ArgumentParser(
        description="Digits fit time and accuracy, peak memory, import time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="10 epochs, 1 repeat, 20 memory steps, 3 import runs"
    )
    parser.add_argument("--epochs", type=int, default=None, help="digits epochs (137)")
    parser.add_argument("--repeats", type=int, default=None, help="timed fits (5)")
    parser.add_argument(
        "--memory-steps",
        type=int,
        default=None,
        help="training steps for the peak-memory runs (200)",
    )
    parser.add_argument(
        "--memory-batches",
        type=int,
        default=MEMORY_STEPS_PER_EPOCH,
        help="distinct minibatches of data the memory run cycles through"
        f" ({MEMORY_STEPS_PER_EPOCH}; 1 reuses one batch, so that the"
        " data hardly counts)",
    )
    parser.add_argument(
        "--import-runs", type=int, default=None, help="fresh interpreters per import timing (7)"
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads")
    parser.add_argument(
        "--implementations",
        default=",".join(IMPLEMENTATIONS),
        help="subset of fastbp,numpy,torch,sklearn",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: digits,memory,import"
    )
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.epochs = args.epochs or (10 if args.quick else 137)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.memory_steps = args.memory_steps or (20 if args.quick else 200)
    args.import_runs = args.import_runs or (3 if args.quick else 7)
    args.implementations = [s.strip() for s in args.implementations.split(",") if s.strip()]
    wrong = [n for n in args.implementations if n not in IMPLEMENTATIONS]
    if wrong:
        parser.error(f"unknown implementation(s) {wrong}")
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


def import_library(name):
    """Import what implementation ``name`` needs (so that it is not timed)."""
    if name == "fastbp":
        load_fastbp()
    elif name == "torch":
        import torch  # noqa: F401
    elif name == "sklearn":
        import sklearn.neural_network  # noqa: F401


def set_threads(threads):
    """Limit the BLAS (and torch's) thread pools; return the threadpoolctl limiter."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


# -- 1. digits ------------------------------------------------------------------------
def load_split(dtype, seed):
    """The digits, split 75/25 (stratified, fixed seed) and standardized with the
    training set's statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, random_state=seed, stratify=y
    )
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    std[std == 0] = 1.0
    prep = lambda a: np.ascontiguousarray((a - mean) / std, dtype=dtype)  # noqa: E731
    return prep(X_train), prep(X_test), y_train.astype(np.int64), y_test.astype(np.int64)


def bench_digits(names, args):
    """Time ``fit`` for ``args.epochs`` epochs from a fresh model, per implementation,
    round-robin; return the records."""
    X_train, X_test, y_train, y_test = load_split(args.dtype, args.seed)
    opt = OptimizerSpec("adam", 1e-3)
    weights = initial_weights(DIGITS_NET, args.dtype, args.seed)

    def fresh(name):
        impl = ADAPTERS[name](DIGITS_NET, opt, args.dtype, weights, args.seed)
        return impl, impl.prepare(X_train, y_train)

    for name in names:  # warm-up: imports, lazy loads, first allocations
        impl, data = fresh(name)
        impl.fit(data, 2)
    times = {n: [] for n in names}
    accuracy = {n: [] for n in names}
    for r in range(args.repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            impl, data = fresh(name)
            gc.collect()
            start = time.perf_counter()
            impl.fit(data, args.epochs)
            times[name].append(time.perf_counter() - start)
            accuracy[name].append(
                reference_accuracy(impl.get_weights(), DIGITS_NET, X_test, y_test)
            )
    steps = args.epochs * -(-X_train.shape[0] // DIGITS_NET.batch)
    records = []
    for name in names:
        s = summarize(times[name])
        records.append(
            dict(
                s,
                implementation=name,
                times=times[name],
                accuracy=float(np.median(accuracy[name])),
                accuracies=accuracy[name],
                steps=steps,
                n_train=int(X_train.shape[0]),
                n_test=int(X_test.shape[0]),
            )
        )
    base = next((r["median"] for r in records if r["implementation"] == "fastbp"), None)
    for r in records:
        r["ratio_to_fastbp"] = r["median"] / base if base else None
    return records


def digits_table(records):
    """Markdown table of the digits fits."""
    rows = [
        [
            r["implementation"],
            f"{r['median']:.3f}",
            f"{r['min']:.3f}–{r['max']:.3f}",
            fmt_time(r["median"] / r["steps"]),
            f"{100 * r['accuracy']:.2f}",
            "–" if r["ratio_to_fastbp"] is None else f"{r['ratio_to_fastbp']:.2f}",
        ]
        for r in records
    ]
    return markdown_table(
        [
            "implementation",
            "fit s (median)",
            "spread (min–max) s",
            "time/step",
            "test accuracy %",
            "time ÷ fastbp",
        ],
        rows,
        "lrrrrr",
    )


# -- 2. peak memory -------------------------------------------------------------------
def peak_rss_mib():
    """This process's peak resident set size in MiB.

    On Linux, the high-water mark of the current address space (``VmHWM`` in
    /proc/self/status): ``getrusage(RUSAGE_SELF).ru_maxrss`` there carries the
    parent's peak over ``fork`` and ``exec``, so a child of a large process would
    report the parent's size. Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return ru_maxrss_mib()


def ru_maxrss_mib():
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in MiB (KiB on Linux, bytes on macOS)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def memory_child(args):
    """In a fresh process: import, make the data, train ``memory_steps`` steps of
    the medium network with SGD momentum; print the peak RSS before and after."""
    name = args.memory_child
    import_library(name)
    steps_per_epoch = max(1, min(args.memory_batches, args.memory_steps))
    epochs = -(-args.memory_steps // steps_per_epoch)
    with set_threads(args.threads):
        X, y = make_data(MEMORY_NET, MEMORY_NET.batch * steps_per_epoch, args.dtype, args.seed)
        weights = initial_weights(MEMORY_NET, args.dtype, args.seed)
        before = peak_rss_mib()
        impl = ADAPTERS[name](
            MEMORY_NET, OptimizerSpec("sgd", 0.01, 0.9), args.dtype, weights, args.seed
        )
        data = impl.prepare(X, y)
        for _ in range(epochs):
            impl.epoch(data)
        after = peak_rss_mib()
    print(
        json.dumps(
            {
                "implementation": name,
                "before_mib": before,
                "peak_mib": after,
                "ru_maxrss_mib": ru_maxrss_mib(),
                "steps": epochs * steps_per_epoch,
            }
        )
    )


def bench_memory(names, args):
    """Run ``memory_child`` in a fresh interpreter per implementation. The children
    run concurrently: each measures only its own peak memory, not time."""
    procs = {}
    for name in names:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--memory-child",
            name,
            "--memory-steps",
            str(args.memory_steps),
            "--dtype",
            args.dtype,
            "--memory-batches",
            str(args.memory_batches),
            "--threads",
            str(args.threads),
            "--seed",
            str(args.seed),
        ]
        procs[name] = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tempfile.gettempdir(),
        )
    records = []
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            log(f"memory run for {name} failed:\n{stderr[-2000:]}")
            continue
        records.append(json.loads(stdout.strip().splitlines()[-1]))
    return records


def memory_table(records):
    """Markdown table of the peak-memory runs."""
    rows = [
        [
            r["implementation"],
            f"{r['peak_mib']:.1f}",
            f"{r['before_mib']:.1f}",
            f"{r['peak_mib'] - r['before_mib']:.1f}",
        ]
        for r in records
    ]
    return markdown_table(
        ["implementation", "peak RSS MiB", "before training MiB", "training adds MiB"], rows, "lrrr"
    )


# -- 3. import time -------------------------------------------------------------------
IMPORT_SNIPPETS = {
    "import numpy": "import numpy",
    "import fastbp": "import fastbp",
    "import fastbp + first model": (
        "import fastbp\nfastbp.Sequential([fastbp.Dense(4, 'relu'), fastbp.Dense(2)], input_dim=3)"
    ),
    "import torch": "import torch",
    "import sklearn.neural_network": "import sklearn.neural_network",
}


def time_snippet(code, runs):
    """Median wall time of ``code`` (timed with perf_counter inside) over ``runs``
    fresh interpreters."""
    program = (
        "import time\n_t = time.perf_counter()\n" + code + "\nprint(repr(time.perf_counter() - _t))"
    )
    times = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            text=True,
            cwd=tempfile.gettempdir(),
            check=True,
        )
        times.append(float(proc.stdout.strip().splitlines()[-1]))
    return times


def bench_imports(args):
    """Time the import statements, each in fresh interpreters."""
    wanted = ["import numpy", "import fastbp", "import fastbp + first model"]
    if not args.quick:
        wanted += [
            k
            for k, mod in (("import torch", "torch"), ("import sklearn.neural_network", "sklearn"))
            if mod in args.implementations and have(mod)
        ]
    time_snippet("pass", 1)  # warm the file cache for the interpreter itself
    records = []
    for label in wanted:
        times = time_snippet(IMPORT_SNIPPETS[label], args.import_runs)
        records.append(dict(summarize(times), what=label, times=times))
    return records


def import_table(records):
    """Markdown table of the import timings."""
    rows = [
        [
            f"`{r['what']}`",
            fmt_time(r["median"]),
            f"{fmt_time(r['min'])}–{fmt_time(r['max'])}",
            r["n"],
        ]
        for r in records
    ]
    return markdown_table(["statement", "time (median)", "spread (min–max)", "runs"], rows, "lrrr")


def main(argv=None):
    """Run the three parts (see the module docstring); ``argv`` as on the command
    line."""
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return
    started = time.perf_counter()
    names = available(args.implementations)
    missing = [n for n in args.implementations if n not in names]
    if missing:
        log(f"not installed, left out: {', '.join(missing)}")
    for name in names:
        import_library(name)
    import scipy.linalg  # noqa: F401

    for line in openblas_report():
        log(line)
    meta = machine_info(["bench/digits.py"] + (sys.argv[1:] if argv is None else list(argv)))
    out = [
        "# fastbp end-to-end benchmark",
        "",
        f"{meta['cpu']}, {meta['usable_cpus']} CPUs; {args.dtype}, {args.threads} BLAS"
        f" thread(s); {meta['date']}; `{meta['command']}`",
        "",
    ]
    out += [f"- {line}" for line in openblas_report()] + [""]
    payload = {"meta": meta}

    if "digits" not in args.skip:
        if have("sklearn"):
            with set_threads(args.threads):
                records = bench_digits(names, args)
            payload["digits"] = records
            r0 = records[0]
            out += [
                f"## Digits: 64-128-10 ReLU, Adam lr 1e-3, batch 200, {args.epochs}"
                f" epochs ({r0['steps']} steps), {r0['n_train']} train / {r0['n_test']}"
                f" test samples, median of {args.repeats}",
                "",
                digits_table(records),
                "",
            ]
        else:
            log("scikit-learn is not installed: no digits data; skipping the digits part")
    if "memory" not in args.skip:
        records = bench_memory(names, args)
        payload["memory"] = records
        steps = records[0]["steps"] if records else args.memory_steps
        batches = max(1, min(args.memory_batches, args.memory_steps))
        data_mib = (
            MEMORY_NET.batch * batches * MEMORY_NET.sizes[0] * np.dtype(args.dtype).itemsize / 2**20
        )
        out += [
            f"## Peak memory: {MEMORY_NET.arch}, batch {MEMORY_NET.batch}, SGD"
            f" momentum, {steps} steps over {batches} distinct minibatch(es)"
            f" ({data_mib:.1f} MiB of inputs), fresh process each",
            "",
            memory_table(records),
            "",
        ]
    if "import" not in args.skip:
        records = bench_imports(args)
        payload["imports"] = records
        out += [
            f"## Import time (fresh interpreter, median of {args.import_runs})",
            "",
            import_table(records),
            "",
        ]
    payload["meta"]["elapsed_s"] = time.perf_counter() - started
    print("\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, default=str)
    log(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
