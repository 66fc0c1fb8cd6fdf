"""Overfitting, and two cures: dropout and early stopping on a validation set.

A wide network on a small noisy data set (20% of the labels flipped) memorizes the
training set: its training loss goes to zero while its loss on new data grows.
Dropout halves that test loss; early stopping on a validation set (best weights
restored) cuts it most, and both together do best.

Run: python examples/dropout_early_stopping.py
"""

import argparse

import numpy as np

import fastbp
from fastbp import Dense, Dropout
from fastbp.callbacks import EarlyStopping


def noisy_data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    flip = rng.random(n) < 0.2  # 20% label noise
    return X, np.where(flip, 1 - y, y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args(argv)
    X, y = noisy_data(400)
    X_test, y_test = noisy_data(5000, seed=1)
    setups = {
        "plain": ([Dense(256, "relu"), Dense(256, "relu"), Dense(2, "softmax")], []),
        "dropout": (
            [
                Dense(256, "relu"),
                Dropout(0.5),
                Dense(256, "relu"),
                Dropout(0.5),
                Dense(2, "softmax"),
            ],
            [],
        ),
        "early stopping": (
            [Dense(256, "relu"), Dense(256, "relu"), Dense(2, "softmax")],
            [EarlyStopping(patience=20, restore_best_weights=True)],
        ),
        "both": (
            [
                Dense(256, "relu"),
                Dropout(0.5),
                Dense(256, "relu"),
                Dropout(0.5),
                Dense(2, "softmax"),
            ],
            [EarlyStopping(patience=20, restore_best_weights=True)],
        ),
    }
    results = {}
    for name, (layers, callbacks) in setups.items():
        model = fastbp.Sequential(layers, optimizer=fastbp.Adam(lr=1e-3), seed=0)
        history = model.fit(
            X, y, epochs=args.epochs, batch_size=20, validation_split=0.25, callbacks=callbacks
        )
        test = model.evaluate(X_test, y_test)
        results[name] = (history, test)
        print(
            f"{name:<15} epochs {len(history):>3}  train loss {history['loss'][-1]:.3f}"
            f"  best val loss {min(history['val_loss']):.3f}"
            f"  test loss {test['loss']:.3f}  test accuracy {test['accuracy']:.1%}"
        )
    return results


if __name__ == "__main__":
    main()
