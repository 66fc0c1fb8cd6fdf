"""Online learning: the model keeps learning as new batches of data arrive
(partial_fit), without starting over.

Run: python examples/online_learning.py
"""

import argparse

import numpy as np

import fastbp


def stream(n_batches, batch, seed=0):
    """Batches of a 3-class problem, arriving one at a time."""
    rng = np.random.default_rng(seed)
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    for _ in range(n_batches):
        y = rng.integers(0, 3, batch)
        yield centers[y] + rng.normal(scale=0.8, size=(batch, 2)), y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args(argv)

    X_test, y_test = next(stream(1, 2000, seed=99))
    model = fastbp.Sequential(
        [fastbp.Dense(16, "tanh"), fastbp.Dense(3, "softmax")],
        optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
        seed=0,
    )
    accuracies = []
    for i, (X, y) in enumerate(stream(args.batches, 50)):
        # The first call names every class the stream will ever show.
        model.partial_fit(X, y, classes=[0, 1, 2] if i == 0 else None, batch_size=10)
        accuracies.append(model.evaluate(X_test, y_test)["accuracy"])
        if i % 5 == 0 or i == args.batches - 1:
            print(f"after batch {i + 1:3d}: held-out accuracy {accuracies[-1]:.1%}")
    return accuracies


if __name__ == "__main__":
    main()
