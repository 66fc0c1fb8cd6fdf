"""Multi-class classification with class probabilities (softmax + cross-entropy).

Run: python examples/classification.py
"""

import argparse

import numpy as np

import fastbp


def make_blobs(n_per_class, n_classes=4, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.5, size=(n_classes, n_features))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = centers[y] + rng.normal(size=(y.size, n_features))
    order = rng.permutation(y.size)
    return X[order], y[order]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="samples per class")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)

    X, y = make_blobs(args.samples)
    n_train = int(0.8 * len(X))
    model = fastbp.Sequential(
        [fastbp.Dense(32, "relu"), fastbp.Dense(4, "softmax")],
        optimizer=fastbp.Adam(lr=0.01),
        seed=0,
    )
    model.fit(
        X[:n_train],
        y[:n_train],
        epochs=args.epochs,
        batch_size=32,
        validation_data=(X[n_train:], y[n_train:]),
    )
    print(f"test accuracy {model.evaluate(X[n_train:], y[n_train:])['accuracy']:.1%}")
    probabilities = model.predict(X[n_train : n_train + 3])
    for p, label in zip(probabilities, y[n_train : n_train + 3]):
        print(f"  true class {label}: probabilities {np.round(p, 3)} (sum {p.sum():.3f})")
    return model


if __name__ == "__main__":
    main()
