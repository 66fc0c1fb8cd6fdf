"""Backpropagation against a simple genetic algorithm on the same small network.

Both search the same flat parameter vector (model.flat_params). Backpropagation
follows the gradient; the genetic algorithm only compares losses of mutated
candidates. Printed: loss against wall time and against loss evaluations.

Run: python examples/backprop_vs_genetic.py
"""

import argparse
import time

import numpy as np

import fastbp


def make_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(n, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)  # XOR-like quadrants
    return X, y


def network(seed):
    return fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(2, "softmax")],
        optimizer=fastbp.Adam(lr=0.05),
        dtype="float64",
        seed=seed,
    )


def backprop(X, y, epochs):
    model = network(0)
    model.build(X.shape[1])
    log, start = [], time.perf_counter()
    for epoch in range(epochs):
        model.fit(X, y, epochs=1, batch_size=len(X))  # one full-batch gradient step
        log.append((time.perf_counter() - start, epoch + 1, model.evaluate(X, y)["loss"]))
    return log


def genetic(X, y, generations, population=30, elite=5, sigma=0.3, seed=0):
    rng = np.random.default_rng(seed)
    model = network(0)
    model.build(X.shape[1])
    size = model.flat_params.size

    def loss_of(vector):
        model.flat_params[:] = vector
        return model.evaluate(X, y)["loss"]

    pool = [model.flat_params.copy() + rng.normal(0, sigma, size) for _ in range(population)]
    log, evaluations, start = [], 0, time.perf_counter()
    for _ in range(generations):
        scores = [loss_of(v) for v in pool]
        evaluations += len(pool)
        ranked = [pool[i] for i in np.argsort(scores)]
        log.append((time.perf_counter() - start, evaluations, min(scores)))
        parents = ranked[:elite]
        children = []
        for _ in range(population - elite):
            a, b = rng.choice(elite, 2, replace=False)
            mask = rng.random(size) < 0.5  # uniform crossover
            child = np.where(mask, parents[a], parents[b]) + rng.normal(0, sigma, size)
            children.append(child)
        pool = parents + children
    return log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="gradient steps / generations")
    args = parser.parse_args(argv)
    X, y = make_data()
    bp, ga = backprop(X, y, args.steps), genetic(X, y, args.steps)
    print(f"{'method':<14}{'seconds':>10}{'loss evaluations':>18}{'loss':>10}")
    for name, log in (("backprop", bp), ("genetic", ga)):
        for seconds, evaluations, loss in (log[len(log) // 10], log[len(log) // 2], log[-1]):
            print(f"{name:<14}{seconds:>10.3f}{evaluations:>18d}{loss:>10.4f}")
    return bp, ga


if __name__ == "__main__":
    main()
