"""The fastbp demo: ``python -m fastbp`` (or ``fastbp-demo``).

Trains two networks on generated data and prints progress, loss and accuracy:
a classifier of points into three interleaved spirals (cross-entropy, class
probabilities) and a house-price regression (MSE).
"""

import argparse
import time

import numpy as np

import fastbp


def spirals(n_per_class, n_classes=3, noise=0.2, seed=0):
    """Points on interleaved spiral arms, one arm per class."""
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.05, 1.0, n_per_class), n_classes)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    angle = 4.0 * radius + labels * (2 * np.pi / n_classes) + rng.normal(0, noise, radius.size)
    X = np.column_stack([radius * np.sin(angle), radius * np.cos(angle)])
    return X, labels


def house_prices(n, seed=0):
    """Prices from size, location, bedrooms and age, with noise (in $1000s)."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(50, 250, n)  # square metres
    location = rng.uniform(0, 1, n)  # 0 = remote, 1 = central
    bedrooms = rng.integers(1, 6, n).astype(float)
    age = rng.uniform(0, 60, n)  # years
    price = (
        2.0 * size * (0.6 + 0.8 * location)
        + 15.0 * bedrooms
        - 0.8 * age
        + 40.0 * location**2
        + rng.normal(0, 8, n)
    )
    X = np.column_stack([size, location, bedrooms, age])
    return X, price


def standardize(train, test):
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant column stays constant
    return (train - mean) / std, (test - mean) / std


def split(X, y, test_fraction, seed):
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(len(X) * test_fraction)
    return X[order[n_test:]], X[order[:n_test]], y[order[n_test:]], y[order[:n_test]]


# The smallest data that still leaves a test set and a spread in every feature, and
# the largest that fits a laptop's memory.
MIN_SAMPLES, MAX_SAMPLES = 10, 1_000_000


def count(low, high=None):
    """An argparse type: an integer in [low, high]; anything else is a usage error
    (a message and exit status 2), not a traceback."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high:,}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value

    return parse


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastbp", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=count(1), default=60, help="passes over the data (>= 1)")
    parser.add_argument(
        "--samples",
        type=count(MIN_SAMPLES, MAX_SAMPLES),
        default=1000,
        help=f"samples per spiral arm ({MIN_SAMPLES} to {MAX_SAMPLES:,})",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the results")
    parser.add_argument("--version", action="version", version=f"fastbp {fastbp.__version__}")
    args = parser.parse_args(argv)
    verbose = 0 if args.quiet else 1
    print(f"fastbp {fastbp.__version__}")

    print("\n1. Classification: three interleaved spirals, 2-64-64-3 network, ReLU, softmax")
    X, y = spirals(args.samples)
    X_train, X_test, y_train, y_test = split(X, y, 0.25, seed=1)
    model = fastbp.Sequential(
        [fastbp.Dense(64, "relu"), fastbp.Dense(64, "relu"), fastbp.Dense(3, "softmax")],
        loss="cross_entropy",
        optimizer=fastbp.Adam(lr=0.01),
        seed=0,
    )
    started = time.perf_counter()
    model.fit(
        X_train,
        y_train,
        epochs=args.epochs,
        batch_size=32,
        validation_data=(X_test, y_test),
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    result = model.evaluate(X_test, y_test)
    print(
        f"trained in {seconds:.2f}s; test loss {result['loss']:.4f},"
        f" test accuracy {result['accuracy']:.1%}"
    )
    probabilities = model.predict(X_test[:3])
    for point, p, label in zip(X_test[:3], probabilities, y_test[:3]):
        print(
            f"  point ({point[0]:+.2f}, {point[1]:+.2f}) class {label}:"
            f" probabilities {np.array2string(p, precision=3, suppress_small=True)}"
        )

    print("\n2. Regression: house prices from size, location, bedrooms and age, MSE")
    X, price = house_prices(4 * args.samples)
    X_train, X_test, p_train, p_test = split(X, price, 0.25, seed=2)
    X_train, X_test = standardize(X_train, X_test)
    scale = p_train.std()
    model = fastbp.Sequential(
        [fastbp.Dense(32, "tanh"), fastbp.Dense(1)],
        loss="mse",
        optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
        seed=0,
    )
    started = time.perf_counter()
    model.fit(X_train, p_train / scale, epochs=args.epochs, batch_size=64, verbose=verbose)
    seconds = time.perf_counter() - started
    result = model.evaluate(X_test, p_test / scale)
    predicted = model.predict(X_test[:3])[:, 0] * scale
    print(
        f"trained in {seconds:.2f}s; test R^2 {result['r2']:.4f},"
        f" mean absolute error ${result['mae'] * scale * 1000:,.0f}"
    )
    for guess, truth in zip(predicted, p_test[:3]):
        print(f"  predicted ${guess * 1000:,.0f}, actual ${truth * 1000:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
