"""Vanishing gradients: per-layer gradient norms of a deep network, three ways.

A 20-layer sigmoid network (Xavier/Glorot initialization) passes almost no gradient
back to its first layers; ReLU with He initialization does better; ReLU + He with
residual blocks (x + f(x)) keeps every layer's gradient alive, and trains.

Run: python examples/vanishing_gradients.py
"""

import argparse

import numpy as np

import fastbp
from fastbp import Dense, Residual


def deep(kind, depth, width, n_classes):
    if kind == "sigmoid + glorot":
        hidden = [Dense(width, "sigmoid", init="glorot_uniform") for _ in range(depth)]
    elif kind == "relu + he":
        hidden = [Dense(width, "relu", init="he_normal") for _ in range(depth)]
    else:
        # Each block adds its branch to the signal: He-scaled branches shrunk by
        # 1/sqrt(depth) keep the sum's variance from growing with depth.
        def branch_init(shape, rng):
            return rng.normal(0, np.sqrt(2 / shape[0] / depth), size=shape)

        hidden = [Dense(width, "relu", init="he_normal")] + [
            Residual(Dense(width, "relu", init=branch_init)) for _ in range(depth - 1)
        ]
    return hidden + [Dense(n_classes, "softmax")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 16))
    y = (X[:, :4].sum(axis=1) > 0).astype(int) + 2 * (X[:, 4:8].sum(axis=1) > 0)
    results = {}
    for kind in ("sigmoid + glorot", "relu + he", "relu + he + residual"):
        model = fastbp.Sequential(
            deep(kind, args.depth, 16, 4),
            optimizer=fastbp.Adam(lr=1e-3),
            seed=0,
            dtype="float64",
            input_dim=16,
        )
        _, grads = model.loss_and_gradients(X[:256], y[:256])
        norms = [np.linalg.norm(w) for w, _ in grads]
        model.fit(X, y, epochs=args.epochs, batch_size=32)
        accuracy = model.evaluate(X, y)["accuracy"]
        results[kind] = (norms, accuracy)
        shown = " ".join(f"{v:.0e}" for v in norms[:: max(1, len(norms) // 7)])
        print(f"{kind:<22} gradient norm, layer 1 -> {len(norms)}: {shown}")
        print(
            f"{'':<22} first / last layer: {norms[0] / norms[-1]:.1e};"
            f" accuracy after {args.epochs} epochs: {accuracy:.1%}"
        )
    return results


if __name__ == "__main__":
    main()
