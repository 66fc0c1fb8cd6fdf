"""Regression: predict house prices from size, location, bedrooms and age (MSE).

Run: python examples/house_prices.py
"""

import argparse

import numpy as np

import fastbp


def make_houses(n, seed=0):
    rng = np.random.default_rng(seed)
    size = rng.uniform(50, 250, n)  # square metres
    location = rng.uniform(0, 1, n)  # 0 remote .. 1 central
    bedrooms = rng.integers(1, 6, n).astype(float)
    age = rng.uniform(0, 60, n)  # years
    price = (
        2.0 * size * (0.6 + 0.8 * location)
        + 15 * bedrooms
        - 0.8 * age
        + 40 * location**2
        + rng.normal(0, 8, n)
    )  # in $1000s
    return np.column_stack([size, location, bedrooms, age]), price


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args(argv)

    X, price = make_houses(args.samples)
    n_train = int(0.8 * len(X))
    mean, std = X[:n_train].mean(axis=0), X[:n_train].std(axis=0)
    X = (X - mean) / std  # standardized features train better
    scale = price[:n_train].std()
    model = fastbp.Sequential(
        [fastbp.Dense(32, "relu"), fastbp.Dense(16, "relu"), fastbp.Dense(1)],
        loss="mse",
        optimizer=fastbp.Adam(lr=0.005),
        seed=0,
    )
    model.fit(
        X[:n_train],
        price[:n_train] / scale,
        epochs=args.epochs,
        batch_size=64,
        validation_split=0.1,
        callbacks=[fastbp.callbacks.EarlyStopping(patience=10, restore_best_weights=True)],
    )
    result = model.evaluate(X[n_train:], price[n_train:] / scale)
    print(
        f"test R^2 {result['r2']:.4f}, mean absolute error ${result['mae'] * scale * 1000:,.0f}"
        f" ({len(model.history)} epochs)"
    )
    house = (np.array([[120.0, 0.9, 3, 10]]) - mean) / std
    print(
        f"a 120 m2, 3-bedroom, 10-year-old central house: "
        f"${model.predict(house)[0, 0] * scale * 1000:,.0f}"
    )
    return model, result


if __name__ == "__main__":
    main()
