"""The demo (``fastbp demo``, ``fastbp-demo``): two small networks on generated
data, told as a short story: the network, the data, a progress bar (on a
terminal), the final accuracy and speed, and how many times faster than
scikit-learn's MLP on the same network, data and epochs when scikit-learn is
installed.
"""

from __future__ import annotations

import sys
import time
import warnings

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
    return (train - mean) / std, (test - mean) / std


def split(X, y, test_fraction, seed):
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(len(X) * test_fraction)
    return X[order[n_test:]], X[order[:n_test]], y[order[n_test:]], y[order[:n_test]]


def _sklearn_seconds(kind, hidden, activation, lr, epochs, batch_size, X, y, **extra):
    """scikit-learn's fit time for the same network, data, epochs and batch size (no
    early stop), or None when scikit-learn is not installed."""
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier, MLPRegressor
    except ImportError:
        return None
    estimator = (MLPClassifier if kind == "classifier" else MLPRegressor)(
        hidden_layer_sizes=hidden,
        activation=activation,
        learning_rate_init=lr,
        batch_size=batch_size,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        random_state=0,
        **extra,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X, y)
    return time.perf_counter() - started


def _speed_lines(samples, seconds, sklearn_seconds):
    text = f"   trained in {seconds:.2f}s: {samples / seconds:,.0f} samples/s"
    if sklearn_seconds is None:
        return text + " (install scikit-learn to compare)"
    return (
        text + f"\n   scikit-learn's MLP, same network, data and epochs: {sklearn_seconds:.2f}s;"
        f" fastbp is {sklearn_seconds / seconds:.1f}x faster"
    )


def run(epochs=30, samples=1000, quiet=False, out=None):
    """Tell the demo's story on ``out`` (default stdout). Returns 0."""
    out = out or sys.stdout
    verbose = 0 if quiet or not out.isatty() else 1

    def say(text=""):
        print(text, file=out, flush=True)

    say(f"fastbp {fastbp.__version__}: backpropagation for dense networks, on this CPU")

    X, y = spirals(samples)
    X_train, X_test, y_train, y_test = split(X, y, 0.25, seed=1)
    say()
    say(f"1. Which of three interleaved spirals is a point on? {len(X):,} points, 2 features")
    model = fastbp.Sequential(
        [fastbp.Dense(64, "relu"), fastbp.Dense(64, "relu"), fastbp.Dense(3, "softmax")],
        loss="cross_entropy",
        optimizer=fastbp.Adam(lr=0.01),
        seed=0,
        input_dim=2,
    )
    say(
        f"   network 2-64-64-3 (ReLU, softmax), {model.count_params():,} parameters;"
        f" Adam, {epochs} epochs of minibatches of 32"
    )
    started = time.perf_counter()
    model.fit(X_train, y_train, epochs=epochs, batch_size=32, verbose=verbose)
    seconds = time.perf_counter() - started
    accuracy = model.evaluate(X_test, y_test)["accuracy"]
    say(f"   test accuracy {accuracy:.1%} on {len(X_test):,} points it never saw")
    reference = _sklearn_seconds("classifier", (64, 64), "relu", 0.01, epochs, 32, X_train, y_train)
    say(_speed_lines(len(X_train) * epochs, seconds, reference))

    X, price = house_prices(4 * samples)
    X_train, X_test, p_train, p_test = split(X, price, 0.25, seed=2)
    X_train, X_test = standardize(X_train, X_test)
    scale = p_train.std()
    say()
    say(f"2. What is a house worth? {len(X):,} houses: size, location, bedrooms, age")
    model = fastbp.Sequential(
        [fastbp.Dense(32, "tanh"), fastbp.Dense(1)],
        loss="mse",
        optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
        seed=0,
        input_dim=4,
    )
    say(
        f"   network 4-32-1 (tanh), {model.count_params():,} parameters; SGD with momentum,"
        f" {epochs} epochs of minibatches of 64"
    )
    started = time.perf_counter()
    model.fit(X_train, p_train / scale, epochs=epochs, batch_size=64, verbose=verbose)
    seconds = time.perf_counter() - started
    result = model.evaluate(X_test, p_test / scale)
    say(
        f"   test R^2 {result['r2']:.3f}; typical error ${result['mae'] * scale * 1000:,.0f}"
        f" on prices around ${np.median(p_test) * 1000:,.0f}"
    )
    reference = _sklearn_seconds(
        "regressor",
        (32,),
        "tanh",
        0.05,
        epochs,
        64,
        X_train,
        p_train / scale,
        solver="sgd",
        momentum=0.9,
        nesterovs_momentum=False,
    )
    say(_speed_lines(len(X_train) * epochs, seconds, reference))
    say()
    say("Next: fastbp train DATA.csv --target COLUMN --out model.npz (fastbp --help)")
    return 0
