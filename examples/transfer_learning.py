"""Transfer learning: reuse a trained network's layers on a new task, frozen.

A network learns task A (which quadrant a point is in). Its hidden layers are then
frozen (layer.trainable = False) and only a new output layer is trained on task B
(is the point in the upper-right quadrant) from 12 examples; the frozen layers do
not change, and their learned features make task B easy, where a network trained
from scratch on those 12 examples does worse.

Run: python examples/transfer_learning.py
"""

import argparse

import numpy as np

import fastbp
from fastbp import Dense


def points(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, size=(n, 2))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)
    X_a = points(4000, 0)
    y_a = (X_a[:, 0] > 0).astype(int) + 2 * (X_a[:, 1] > 0)  # 4 quadrants
    base = fastbp.Sequential(
        [Dense(32, "tanh"), Dense(32, "tanh"), Dense(4, "softmax")],
        optimizer=fastbp.Adam(lr=0.01),
        seed=0,
    )
    base.fit(X_a, y_a, epochs=args.epochs // 2, batch_size=64)
    print(f"task A (quadrants): accuracy {base.evaluate(X_a, y_a)['accuracy']:.1%}")

    X_b, X_b_test = points(12, 1), points(2000, 2)
    y_b = ((X_b[:, 0] > 0) & (X_b[:, 1] > 0)).astype(int)
    y_b_test = ((X_b_test[:, 0] > 0) & (X_b_test[:, 1] > 0)).astype(int)
    hidden = base.layers[:2]
    for layer in hidden:
        layer.trainable = False  # freeze the learned features
    # The layers move to the new model with their weights (a layer belongs to one
    # model at a time).
    transfer = fastbp.Sequential(
        hidden + [Dense(2, "softmax")], optimizer=fastbp.Adam(lr=0.05), seed=1, input_dim=2
    )
    before = [w.copy() for w, _ in transfer.get_weights()[:2]]
    transfer.fit(X_b, y_b, epochs=args.epochs, batch_size=8)
    frozen = all(np.array_equal(w, b) for (w, _), b in zip(transfer.get_weights()[:2], before))
    scratch = fastbp.Sequential(
        [Dense(32, "tanh"), Dense(32, "tanh"), Dense(2, "softmax")],
        optimizer=fastbp.Adam(lr=0.05),
        seed=1,
    )
    scratch.fit(X_b, y_b, epochs=args.epochs, batch_size=8)
    accuracy = transfer.evaluate(X_b_test, y_b_test)["accuracy"]
    from_scratch = scratch.evaluate(X_b_test, y_b_test)["accuracy"]
    print(
        f"task B from 12 examples: transferred {accuracy:.1%}, from scratch"
        f" {from_scratch:.1%}; frozen layers unchanged: {frozen}"
    )
    return accuracy, from_scratch, frozen


if __name__ == "__main__":
    main()
