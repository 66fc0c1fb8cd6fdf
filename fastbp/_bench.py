"""``fastbp bench``: fastbp's training step against NumPy by hand (always), PyTorch
and scikit-learn (where installed), on the user's own machine.

A compact, self-contained version of the repository's ``bench/run.py`` (which is
not installed with the package). A training step is forward, softmax
cross-entropy, backward and a plain SGD update on one minibatch, in float32.
Each measurement times one epoch of ``steps`` minibatches (``fit`` for fastbp,
``partial_fit`` for scikit-learn, a Python loop for NumPy and PyTorch) and divides
by ``steps``; every implementation is warmed up by one epoch, then they run
interleaved, the first one rotating each repeat, and the table gives the median
time per step and how many times fastbp's median each one takes.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

import fastbp


@dataclasses.dataclass(frozen=True)
class Network:
    name: str
    sizes: tuple
    batch: int
    steps: int

    @property
    def label(self):
        return f"{self.name} {'-'.join(str(s) for s in self.sizes)}"


NETWORKS = (
    Network("tiny", (64, 32, 10), 32, 300),
    Network("small", (784, 128, 10), 64, 150),
    Network("medium", (784, 512, 512, 10), 256, 40),
    Network("wide", (1024, 2048, 2048, 10), 512, 10),
)
QUICK = (
    Network("tiny", (64, 32, 10), 32, 60),
    Network("small", (784, 128, 10), 64, 30),
    Network("medium", (784, 256, 256, 10), 128, 15),
)
LR = 0.01


def _data(network, seed=0):
    rng = np.random.default_rng(seed)
    n = network.batch * network.steps
    X = rng.standard_normal((n, network.sizes[0]), dtype=np.float32)
    y = rng.integers(0, network.sizes[-1], n)
    return X, y


class FastBP:
    name = "fastbp"

    def __init__(self, network, X, y, threads):
        layers = [fastbp.Dense(s, "relu") for s in network.sizes[1:-1]]
        layers.append(fastbp.Dense(network.sizes[-1], "softmax"))
        self.model = fastbp.Sequential(layers, optimizer=fastbp.SGD(lr=LR), seed=0, threads=threads)
        self.X, self.y, self.batch = X, y, network.batch

    def epoch(self):
        self.model.fit(self.X, self.y, epochs=1, batch_size=self.batch, shuffle=False)


class NumPyByHand:
    """The same step written directly in NumPy (float32, BLAS through ``@``)."""

    name = "numpy"

    def __init__(self, network, X, y, threads):
        rng = np.random.default_rng(0)
        self.weights = [
            (
                (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(np.float32),
                np.zeros(b, dtype=np.float32),
            )
            for a, b in zip(network.sizes[:-1], network.sizes[1:])
        ]
        self.X, self.y, self.batch = X, y, network.batch

    def step(self, X, y):
        outputs = [X]
        for i, (w, b) in enumerate(self.weights):
            z = outputs[-1] @ w + b
            outputs.append(np.maximum(z, 0, out=z) if i < len(self.weights) - 1 else z)
        logits = outputs[-1]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        delta = p / np.float32(len(y))
        for i in range(len(self.weights) - 1, -1, -1):
            w, b = self.weights[i]
            grad_w, grad_b = outputs[i].T @ delta, delta.sum(axis=0)
            if i:
                delta = delta @ w.T
                delta *= outputs[i] > 0
            w -= np.float32(LR) * grad_w
            b -= np.float32(LR) * grad_b

    def epoch(self):
        for start in range(0, len(self.X), self.batch):
            self.step(self.X[start : start + self.batch], self.y[start : start + self.batch])


class Torch:
    name = "torch"

    def __init__(self, network, X, y, threads):
        import torch

        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(0)
        layers = []
        for a, b in zip(network.sizes[:-1], network.sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        self.torch = torch
        self.model = torch.nn.Sequential(*layers[:-1])
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.loss = torch.nn.CrossEntropyLoss()
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        self.batch = network.batch

    def epoch(self):
        for start in range(0, len(self.X), self.batch):
            self.optimizer.zero_grad()
            end = start + self.batch
            self.loss(self.model(self.X[start:end]), self.y[start:end]).backward()
            self.optimizer.step()


class ScikitLearn:
    name = "sklearn"

    def __init__(self, network, X, y, threads):
        from sklearn.neural_network import MLPClassifier

        self.model = MLPClassifier(
            hidden_layer_sizes=network.sizes[1:-1],
            solver="sgd",
            momentum=0.0,
            learning_rate_init=LR,
            batch_size=network.batch,
            shuffle=False,
            random_state=0,
        )
        self.X, self.y = X, y
        self.classes = np.arange(network.sizes[-1])

    def epoch(self):
        self.model.partial_fit(self.X, self.y, classes=self.classes)


def implementations():
    """The implementations whose libraries are installed, fastbp first."""
    import importlib.util

    found = [FastBP, NumPyByHand]
    for module, implementation in (("torch", Torch), ("sklearn", ScikitLearn)):
        if importlib.util.find_spec(module) is not None:
            found.append(implementation)
    return found


def measure(network, classes, repeats, threads):
    """{name: [seconds per step, one per repeat]} for one network."""
    from threadpoolctl import threadpool_limits

    X, y = _data(network)
    with threadpool_limits(limits=threads, user_api="blas"):
        runners = [cls(network, X, y, threads) for cls in classes]
        for runner in runners:  # warm up: first calls, allocations, caches
            runner.epoch()
        times = {runner.name: [] for runner in runners}
        for repeat in range(repeats):
            shift = repeat % len(runners)
            for runner in runners[shift:] + runners[:shift]:
                started = time.perf_counter()
                runner.epoch()
                times[runner.name].append((time.perf_counter() - started) / network.steps)
    return times


def _fmt(seconds):
    for unit, scale in (("s", 1), ("ms", 1e3), ("us", 1e6)):
        if seconds * scale >= 1:
            return f"{seconds * scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def table(results, names):
    """The Markdown table of median times per step and ratios to fastbp."""
    header = "| network | batch | " + " | ".join(names) + " |"
    lines = [header, "|" + " --- |" * (len(names) + 2)]
    for network, times in results:
        ours = statistics.median(times["fastbp"])
        cells = []
        for name in names:
            median = statistics.median(times[name])
            cells.append(_fmt(median) + ("" if name == "fastbp" else f" ({median / ours:.1f}x)"))
        lines.append(f"| {network.label} | {network.batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def draw_chart(results, names, path):
    """A bar chart of each implementation's time per step relative to fastbp."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [network.label for network, _ in results]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(labels) + 2), 4.2))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ratios = [
            statistics.median(times[name]) / statistics.median(times["fastbp"])
            for _, times in results
        ]
        positions = np.arange(len(labels)) + (i - (len(names) - 1) / 2) * width
        ax.bar(positions, ratios, width, label=name)
    ax.set_xticks(np.arange(len(labels)), labels, rotation=15, ha="right")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("time per training step / fastbp's")
    ax.set_title("Training step time relative to fastbp (lower is faster)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(quick=False, repeats=None, threads=None, chart=None, out=None):
    """Measure, print the table on ``out`` (default stdout), write the chart to the
    path ``chart`` (needs matplotlib). Returns 0."""
    import sys

    out = out or sys.stdout
    chart_path = chart
    if chart_path is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ValueError("--chart needs matplotlib: pip install matplotlib") from None
    classes = implementations()
    names = [cls.name for cls in classes]
    networks = QUICK if quick else NETWORKS
    repeats = repeats or (3 if quick else 7)
    missing = {"torch", "sklearn"} - set(names)
    print(
        f"fastbp {fastbp.__version__} against {', '.join(names[1:])}"
        + (f" ({' and '.join(sorted(missing))} not installed)" if missing else "")
        + f"; float32, SGD, {repeats} interleaved repeats after a warm-up;"
        f" BLAS threads: {threads or 'default'}",
        file=out,
        flush=True,
    )
    results = []
    for network in networks:
        results.append((network, measure(network, classes, repeats, threads)))
        print(f"  measured {network.label}", file=out, flush=True)
    print(file=out)
    print("Median time per training step (and how many times fastbp's time):", file=out)
    print(table(results, names), file=out)
    if chart_path is not None:
        draw_chart(results, names, chart_path)
        print(f"chart: {chart_path}", file=out)
    return 0
