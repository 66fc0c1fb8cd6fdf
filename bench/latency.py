"""One-row prediction latency: what a service that scores one request at a time
waits for, fastbp against NumPy by hand, PyTorch and scikit-learn, and fastbp's
scikit-learn drop-in (``fastbp.sklearn``) beside scikit-learn's.

Every implementation holds the same weights of the same classifier (64-128-10,
relu, softmax output) and is called as its users call it: a (1, 64) NumPy row in,
the class probabilities as a NumPy array out (PyTorch converts both ways, in
``inference_mode``). The calls are interleaved in rounds (each implementation
makes a run of calls in turn, the starting one rotating), every call timed on its
own; the report gives the median and the 99th and 99.9th percentiles over all of
them, and each median over fastbp's.

Run by ``bench/run.py`` (its "One-row prediction latency" section), or alone::

    python bench/latency.py --calls 10000 --threads 1
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import have, load_fastbp  # noqa: E402
from impls import Network, initial_weights  # noqa: E402

NETWORK = Network("predict", (64, 128, 10), "relu", "cross_entropy", 1)
ROUNDS = 10


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_predictors(names, dtype, weights, seed=0):
    """{name: function of a (1, d) row returning its probabilities} for the
    implementations in ``names`` that are installed."""
    (w1, b1), (w2, b2) = weights
    predictors = {}
    if "fastbp" in names:
        fastbp = load_fastbp()
        model = fastbp.Sequential(
            [fastbp.Dense(w1.shape[1], "relu"), fastbp.Dense(w2.shape[1], "softmax")],
            input_dim=w1.shape[0],
            dtype=np.dtype(dtype).name,
            seed=seed,
        )
        model.set_weights(weights)
        predictors["fastbp"] = model.predict
    if "numpy" in names:
        predictors["numpy"] = lambda x: _softmax(np.maximum(x @ w1 + b1, 0) @ w2 + b2)
    if "torch" in names and have("torch"):
        import torch

        tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
        net = torch.nn.Sequential(
            torch.nn.Linear(w1.shape[0], w1.shape[1], dtype=tdtype),
            torch.nn.ReLU(),
            torch.nn.Linear(w2.shape[0], w2.shape[1], dtype=tdtype),
            torch.nn.Softmax(dim=1),
        )
        with torch.no_grad():
            for linear, (w, b) in zip((net[0], net[2]), weights):
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                linear.bias.copy_(torch.from_numpy(b))
        net.eval()

        def torch_predict(x):
            with torch.inference_mode():
                return net(torch.from_numpy(x)).numpy()

        predictors["torch"] = torch_predict
    if "sklearn" in names and have("sklearn"):
        from sklearn.neural_network import MLPClassifier

        predictors["sklearn"] = _classifier(MLPClassifier, dtype, weights, seed).predict_proba
        if "fastbp" in names:  # the drop-in, as its users call it
            from fastbp.sklearn import MLPClassifier as DropIn

            predictors["fastbp.sklearn"] = _classifier(DropIn, dtype, weights, seed).predict_proba
    return predictors


def _classifier(cls, dtype, weights, seed):
    """A scikit-learn-style MLPClassifier fitted (one partial_fit) to random rows of
    ``dtype``, then given ``weights``."""
    import warnings

    (w1, b1), (w2, b2) = weights
    clf = cls(hidden_layer_sizes=(w1.shape[1],), max_iter=1)
    X = np.random.default_rng(seed).standard_normal((40, w1.shape[0])).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.partial_fit(X, np.arange(40) % w2.shape[1], classes=np.arange(w2.shape[1]))
    clf.coefs_ = [w1.copy(), w2.copy()]
    clf.intercepts_ = [b1.copy(), b2.copy()]
    return clf


def measure(names, dtype, calls, seed=0):
    """Per-call times (seconds) of each installed implementation's one-row
    predict, ``calls`` each, interleaved in rounds; and the largest difference of
    their outputs from NumPy's (float64) for the same row, as a check."""
    weights = initial_weights(NETWORK, dtype, seed)
    for _, b in weights:
        b[:] = np.random.default_rng(seed + 2).uniform(-0.1, 0.1, b.shape)
    predictors = make_predictors(names, dtype, weights, seed)
    x = np.random.default_rng(seed + 3).standard_normal((1, NETWORK.sizes[0])).astype(dtype)
    exact = _softmax(
        np.maximum(x.astype(np.float64) @ weights[0][0] + weights[0][1], 0) @ weights[1][0]
        + weights[1][1]
    )
    errors = {name: float(np.abs(f(x) - exact).max()) for name, f in predictors.items()}
    for f in predictors.values():  # warm up
        for _ in range(max(100, calls // 20)):
            f(x)
    per_round = max(1, calls // ROUNDS)
    times = {name: np.empty(per_round * ROUNDS) for name in predictors}
    order = list(predictors)
    clock = time.perf_counter_ns
    for r in range(ROUNDS):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            f, out = predictors[name], times[name]
            for i in range(r * per_round, (r + 1) * per_round):
                start = clock()
                f(x)
                out[i] = clock() - start
    return {name: t * 1e-9 for name, t in times.items()}, errors


def summarize(times, errors, dtype, threads):
    """Records of the median and tail per implementation (seconds), with the
    median's ratio to fastbp's."""
    base = float(np.median(times["fastbp"])) if "fastbp" in times else None
    records = []
    for name, t in times.items():
        median = float(np.median(t))
        records.append(
            {
                "implementation": name,
                "dtype": np.dtype(dtype).name,
                "threads": threads,
                "calls": int(t.size),
                "median": median,
                "p99": float(np.percentile(t, 99)),
                "p999": float(np.percentile(t, 99.9)),
                "ratio": median / base if base else None,
                "max_error": errors[name],
            }
        )
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--implementations", default="fastbp,numpy,torch,sklearn")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits

    names = args.implementations.split(",")
    if "torch" in names and have("torch"):
        import torch

        torch.set_num_threads(args.threads)
    # threadpool_limits limits the libraries loaded when it starts.
    load_fastbp()  # with SciPy's OpenBLAS
    if "sklearn" in names and have("sklearn"):
        import sklearn.neural_network  # noqa: F401
    with threadpool_limits(limits=args.threads):
        times, errors = measure(names, args.dtype, args.calls)
    for r in summarize(times, errors, args.dtype, args.threads):
        print(
            f"{r['implementation']:14s} median {r['median'] * 1e6:7.2f} µs  p99"
            f" {r['p99'] * 1e6:7.2f} µs  p99.9 {r['p999'] * 1e6:7.2f} µs  ÷ fastbp"
            f" {r['ratio']:.2f}  max error {r['max_error']:.1e}"
        )


if __name__ == "__main__":
    main()
