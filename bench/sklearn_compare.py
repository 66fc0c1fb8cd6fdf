"""fastbp.sklearn against scikit-learn's MLPClassifier and MLPRegressor on its bundled
data sets: the same estimator parameters and random_state, the held-out score of
each and the fit time of each, side by side.

Usage (from the repository root)::

    python bench/sklearn_compare.py                 # 3 interleaved rounds
    python bench/sklearn_compare.py --quick         # 1 round, fewer solvers
    python bench/sklearn_compare.py --sparse        # adds the TF-IDF-like sparse case
    python bench/sklearn_compare.py --threads 2     # BLAS and fastbp threads (default 1)

Data: digits, iris, wine and breast cancer (classification), diabetes (regression,
target divided by its standard deviation); a fixed stratified 75/25 split
(``random_state=0``); features standardized with the training part's statistics
(``StandardScaler``), as scikit-learn's documentation advises for MLPs. Estimators:
the default network (one hidden layer of 100 ReLU units) with each solver and
schedule below, ``random_state=0``, ``max_iter=200``, scikit-learn's defaults for the
rest. Each round fits every (data set, solver) pair with both libraries in turn
(which one goes first alternates); the table gives the median fit time over the
rounds and the ratio of the medians. fastbp trains with scikit-learn's algorithm,
so the scores agree to rounding; the column shows the difference.

Online learning: ``partial_fit`` on digits in minibatches of 32 rows, five passes
(adam, one hidden layer of 100 ReLU units): the median time of a call for each
library and the held-out accuracy after the passes.

The sparse case (``--sparse``): a TF-IDF-like CSR matrix of 20,000 documents x
50,000 terms at 0.2% density (Zipf-distributed terms, log-scaled counts, rows
L2-normalized), 5 classes, MLPClassifier((64,), adam, max_iter=3): the fit time of
each library and the peak memory each adds (tracemalloc, in-process: NumPy's
allocations, the matrix densified would be 8 GB).

Writes ``bench/SKLEARN.md`` (and ``--json``).
"""

import argparse
import json
import os
import statistics
import sys
import time
import tracemalloc
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import load_fastbp, machine_info, machine_markdown, markdown_table  # noqa: E402

SOLVERS = {
    "adam": dict(solver="adam"),
    "sgd": dict(solver="sgd", momentum=0.0, learning_rate_init=0.01),
    "sgd momentum": dict(solver="sgd", nesterovs_momentum=False, learning_rate_init=0.01),
    "sgd nesterov": dict(solver="sgd", learning_rate_init=0.01),
    "sgd invscaling": dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.1),
    "sgd adaptive": dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.01),
    "lbfgs": dict(solver="lbfgs"),
}
QUICK_SOLVERS = ("adam", "sgd nesterov", "lbfgs")


def datasets():
    from sklearn import datasets as ds
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    out = {}
    for name, loader, task in (
        ("digits", ds.load_digits, "classification"),
        ("iris", ds.load_iris, "classification"),
        ("wine", ds.load_wine, "classification"),
        ("breast cancer", ds.load_breast_cancer, "classification"),
        ("diabetes", ds.load_diabetes, "regression"),
    ):
        X, y = loader(return_X_y=True)
        if task == "regression":
            y = y / y.std()
        split = train_test_split(
            X, y, test_size=0.25, random_state=0, stratify=y if task != "regression" else None
        )
        X_train, X_test, y_train, y_test = split
        scaler = StandardScaler().fit(X_train)
        out[name] = (task, scaler.transform(X_train), scaler.transform(X_test), y_train, y_test)
    return out


def estimator(library, task, params):
    if library == "fastbp":
        from fastbp.sklearn import MLPClassifier, MLPRegressor
    else:
        from sklearn.neural_network import MLPClassifier, MLPRegressor
    cls = MLPClassifier if task == "classification" else MLPRegressor
    return cls(**{"random_state": 0, "max_iter": 200, **params})


# Seconds of pause before each timed fit at more than one thread: the library timed
# before leaves its idle BLAS or OpenMP threads busy-waiting (OpenBLAS's for about
# 0.1 s after its last call), on the cores the next one needs.
SETTLE = 0.2


def fit_once(library, task, params, X_train, X_test, y_train, y_test, settle=0.0):
    est = estimator(library, task, params)
    time.sleep(settle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        est.fit(X_train, y_train)
        elapsed = time.perf_counter() - start
    return elapsed, est.score(X_test, y_test), est.n_iter_


def compare(rounds, solvers, settle=0.0):
    data = datasets()
    times = {}
    results = {}
    for r in range(rounds):
        for name, (task, X_train, X_test, y_train, y_test) in data.items():
            for solver in solvers:
                order = ("fastbp", "sklearn") if r % 2 == 0 else ("sklearn", "fastbp")
                for library in order:
                    elapsed, score, n_iter = fit_once(
                        library, task, SOLVERS[solver], X_train, X_test, y_train, y_test, settle
                    )
                    times.setdefault((name, solver, library), []).append(elapsed)
                    results[(name, solver, library)] = (score, n_iter)
    rows = []
    for name, (task, *_rest) in data.items():
        for solver in solvers:
            t_fb = statistics.median(times[(name, solver, "fastbp")])
            t_sk = statistics.median(times[(name, solver, "sklearn")])
            s_fb, it_fb = results[(name, solver, "fastbp")]
            s_sk, it_sk = results[(name, solver, "sklearn")]
            rows.append(
                dict(
                    data=name,
                    task=task,
                    solver=solver,
                    fastbp_s=t_fb,
                    sklearn_s=t_sk,
                    speedup=t_sk / t_fb,
                    fastbp_score=s_fb,
                    sklearn_score=s_sk,
                    fastbp_iter=it_fb,
                    sklearn_iter=it_sk,
                )
            )
    return rows


def online_case(rounds, batch=32, passes=5):
    """partial_fit on digits, ``batch`` rows a call, ``passes`` passes: each
    library's median seconds a call (over all calls of all rounds, the libraries
    alternating by round) and its held-out accuracy after the last round."""
    task, X_train, X_test, y_train, y_test = datasets()["digits"]
    classes = np.unique(y_train)
    calls = {"fastbp": [], "sklearn": []}
    scores = {}
    for r in range(rounds):
        for library in ("fastbp", "sklearn") if r % 2 == 0 else ("sklearn", "fastbp"):
            est = estimator(library, task, {})
            est.partial_fit(X_train[:batch], y_train[:batch], classes=classes)
            for _ in range(passes):
                for start in range(0, len(X_train), batch):
                    X, y = X_train[start : start + batch], y_train[start : start + batch]
                    begin = time.perf_counter()
                    est.partial_fit(X, y)
                    calls[library].append(time.perf_counter() - begin)
            scores[library] = est.score(X_test, y_test)
    out = {lib: dict(call_s=statistics.median(calls[lib]), score=scores[lib]) for lib in calls}
    out.update(
        batch=batch, passes=passes, speedup=out["sklearn"]["call_s"] / out["fastbp"]["call_s"]
    )
    return out


def tfidf_like(n_docs=20_000, n_terms=50_000, density=0.002, seed=0):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    per_doc = rng.poisson(density * n_terms, n_docs).clip(1)
    indptr = np.concatenate([[0], np.cumsum(per_doc)])
    # Zipf-like term frequencies (rank^-0.6): common terms and a long tail, mild
    # enough that few draws repeat within a document (the density stays near 0.2%).
    weights = 1.0 / np.arange(1, n_terms + 1) ** 0.6
    terms = rng.choice(n_terms, indptr[-1], p=weights / weights.sum())
    counts = rng.geometric(0.6, indptr[-1]).astype(np.float64)
    X = sp.csr_matrix((np.log1p(counts), terms, indptr), shape=(n_docs, n_terms))
    X.sum_duplicates()
    X = X.multiply(1 / np.sqrt(X.multiply(X).sum(axis=1))).tocsr()
    topic = rng.integers(0, 5, n_docs)
    return X, topic


def sparse_case():
    X, y = tfidf_like()
    out = {"shape": X.shape, "nnz": int(X.nnz), "dense_gb": X.shape[0] * X.shape[1] * 8 / 1e9}
    for library in ("fastbp", "sklearn"):
        est = estimator(library, "classification", dict(hidden_layer_sizes=(64,), max_iter=3))
        tracemalloc.start()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            est.fit(X, y)
            elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        out[library] = dict(fit_s=elapsed, peak_mb=peak / 2**20, loss=float(est.loss_))
    out["speedup"] = out["sklearn"]["fit_s"] / out["fastbp"]["fit_s"]
    return out


def write_markdown(path, info, rows, online, sparse, rounds, threads, blas_threads):
    lines = ["# fastbp.sklearn against scikit-learn", "", machine_markdown(info), ""]
    lines += [
        f"Held-out score (accuracy, or R^2 for diabetes) and fit time, median of {rounds}"
        " interleaved round(s); one hidden layer of 100 ReLU units, `random_state=0`,"
        f" `max_iter=200`; {threads} thread(s) for each library (BLAS's, and fastbp's"
        " own; the BLAS libraries at the end of the run: "
        + ", ".join(f"{name} {n}" for name, n in blas_threads.items())
        + ")"
        + (
            f", each fit timed after a pause of {SETTLE:g} s (the idle threads of the"
            " library timed before busy-wait for a while)"
            if threads > 1
            else ""
        )
        + ". `python bench/sklearn_compare.py`.",
        "",
    ]
    table = []
    for r in rows:
        table.append(
            [
                r["data"],
                r["solver"],
                f"{r['fastbp_score']:.4f}",
                f"{r['sklearn_score']:.4f}",
                f"{r['fastbp_iter']}/{r['sklearn_iter']}",
                f"{r['fastbp_s'] * 1e3:.1f}",
                f"{r['sklearn_s'] * 1e3:.1f}",
                f"{r['speedup']:.1f}x",
            ]
        )
    lines.append(
        markdown_table(
            [
                "data",
                "solver",
                "fastbp score",
                "sklearn score",
                "iterations",
                "fastbp ms",
                "sklearn ms",
                "sklearn ÷ fastbp",
            ],
            table,
            align="llrrrrrr",
        )
    )
    lines += [
        "",
        f"## Online learning: partial_fit on digits, {online['batch']} rows a call,"
        f" {online['passes']} passes (adam)",
        "",
        markdown_table(
            ["library", "µs a call (median)", "held-out accuracy"],
            [
                [lib, f"{online[lib]['call_s'] * 1e6:.0f}", f"{online[lib]['score']:.4f}"]
                for lib in ("fastbp", "sklearn")
            ],
            align="lrr",
        ),
        "",
        f"sklearn ÷ fastbp: {online['speedup']:.1f}x",
    ]
    if sparse:
        lines += [
            "",
            f"## Sparse: TF-IDF-like CSR {sparse['shape'][0]:,} x {sparse['shape'][1]:,},"
            f" {sparse['nnz']:,} values"
            f" ({100 * sparse['nnz'] / sparse['shape'][0] / sparse['shape'][1]:.2f}%;"
            f" {sparse['dense_gb']:.1f} GB dense),"
            " MLPClassifier((64,), adam, max_iter=3)",
            "",
            markdown_table(
                ["library", "fit s", "peak traced memory MiB", "final loss"],
                [
                    [
                        lib,
                        f"{sparse[lib]['fit_s']:.2f}",
                        f"{sparse[lib]['peak_mb']:.0f}",
                        f"{sparse[lib]['loss']:.6f}",
                    ]
                    for lib in ("fastbp", "sklearn")
                ],
                align="lrrr",
            ),
            "",
            f"sklearn ÷ fastbp: {sparse['speedup']:.1f}x",
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, three solvers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sparse", action="store_true", help="add the sparse TF-IDF case")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for BLAS and fastbp (threadpoolctl)"
    )
    parser.add_argument("--json", default=None)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "SKLEARN.md"))
    args = parser.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    solvers = QUICK_SOLVERS if args.quick else tuple(SOLVERS)
    info = machine_info(sys.argv)
    from threadpoolctl import threadpool_info, threadpool_limits

    # threadpool_limits limits the libraries loaded when it starts: load both
    # estimators' BLAS first (fastbp's compiled module brings SciPy's OpenBLAS), or
    # the one loaded later runs with every thread.
    load_fastbp()
    import sklearn.neural_network  # noqa: F401

    with threadpool_limits(args.threads):  # fastbp's budget follows BLAS's
        rows = compare(rounds, solvers, SETTLE if args.threads > 1 else 0.0)
        online = online_case(rounds)
        sparse = sparse_case() if args.sparse else None
        # What every BLAS library loaded by now ran with (a check of the above).
        blas_threads = {
            os.path.basename(lib["filepath"]): lib["num_threads"]
            for lib in threadpool_info()
            if lib["user_api"] == "blas"
        }
    write_markdown(args.out, info, rows, online, sparse, rounds, args.threads, blas_threads)
    for r in rows:
        print(
            f"{r['data']:14s} {r['solver']:15s} score {r['fastbp_score']:.4f}/"
            f"{r['sklearn_score']:.4f}  {r['fastbp_s'] * 1e3:8.1f} ms / "
            f"{r['sklearn_s'] * 1e3:8.1f} ms  {r['speedup']:5.1f}x"
        )
    print("online", json.dumps(online))
    if sparse:
        print("sparse", json.dumps(sparse, default=str))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": info,
                    "threads": args.threads,
                    "blas_threads": blas_threads,
                    "rows": rows,
                    "online": online,
                    "sparse": sparse,
                },
                f,
                indent=1,
                default=str,
            )


if __name__ == "__main__":
    main()
