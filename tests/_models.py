"""Small data sets and models shared by several test files.

Imported by name (``from _models import ...``), as ``_gradcheck`` is: conftest.py puts
tests/ on sys.path, since the tests run with --import-mode=importlib.
"""

import numpy as np

import fastbp

# ---------------------------------------------------------------------------
# N samples of D features; regression targets or K classes; small models
# ---------------------------------------------------------------------------

N, D, K = 24, 3, 3


def reg_data(n=N, d=D, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    return X, y


def clf_data(n=N, d=D, k=K, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.arange(n) % k
    return X, y


def mse_model(**kwargs):
    kwargs.setdefault("optimizer", "sgd")
    kwargs.setdefault("seed", 0)
    return fastbp.Sequential([fastbp.Dense(4, "tanh"), fastbp.Dense(1)], loss="mse", **kwargs)


def ce_model(k=K, **kwargs):
    kwargs.setdefault("seed", 0)
    return fastbp.Sequential(
        [fastbp.Dense(4, "relu"), fastbp.Dense(k, "softmax")], loss="cross_entropy", **kwargs
    )


def bce_model(**kwargs):
    kwargs.setdefault("seed", 0)
    return fastbp.Sequential(
        [fastbp.Dense(4, "tanh"), fastbp.Dense(1, "sigmoid")], loss="binary_cross_entropy", **kwargs
    )


def fitted_mse():
    X, y = reg_data()
    model = mse_model()
    model.fit(X, y, epochs=1, batch_size=8)
    return model, X, y


def fitted_ce():
    X, y = clf_data()
    model = ce_model()
    model.fit(X, y, epochs=1, batch_size=8)
    return model, X, y


def same_weights(a, b):
    return all(
        np.array_equal(wa, wb) and np.array_equal(ba, bb) for (wa, ba), (wb, bb) in zip(a, b)
    )


# ---------------------------------------------------------------------------
# bad inputs shared by the fit-time and the predict-time checks
# ---------------------------------------------------------------------------

BAD_NDIM = {
    "1-D": lambda X: X[:, 0],
    "3-D": lambda X: X[:, :, None],
}


NONFINITE = [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")]


NON_NUMERIC = {
    "strings": lambda X: X.astype(str),
    "object": lambda X: X.astype(object),
    "None": lambda X: None,
    "datetime": lambda X: np.zeros(X.shape, dtype="datetime64[s]"),
}


# ---------------------------------------------------------------------------
# three well-separated classes and a small classifier trained by SGD
# ---------------------------------------------------------------------------


def blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = np.eye(3)[y] * 3 + rng.normal(size=(n, 3))
    return X, y


def classifier(optimizer=None, seed=0):
    return fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(3, "softmax")],
        optimizer=optimizer or fastbp.SGD(lr=0.1),
        seed=seed,
    )


# ---------------------------------------------------------------------------
# XOR, and Gaussian blobs around random centres
# ---------------------------------------------------------------------------

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


def class_blobs(n_per_class, n_classes, n_features, rng):
    centers = rng.normal(0, 3, size=(n_classes, n_features))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    X = centers[labels] + rng.normal(size=(labels.size, n_features))
    order = rng.permutation(labels.size)
    return X[order], labels[order]


def make_targets(loss, n, k, rng, soft=False):
    """Targets of n samples for a loss with k outputs (labels for cross-entropy,
    probabilities with soft=True)."""
    if loss in ("mse", "mae", "huber"):
        return rng.normal(size=(n, k)) * 2
    if loss == "poisson":
        return rng.poisson(2.0, size=(n, k)).astype(float)
    if loss == "cross_entropy":
        if soft:
            t = rng.uniform(0.1, 1.0, size=(n, k))
            return t / t.sum(axis=1, keepdims=True)
        return rng.integers(0, k, size=n)
    return rng.uniform(0, 1, size=(n, k))


def suits(activation, loss):
    """Whether a final ``activation`` suits ``loss`` (fastbp refuses the pairs that
    do not: Loss.check_output_activation)."""
    try:
        fastbp.losses.get_loss(loss).check_output_activation(activation)
    except ValueError:
        return False
    return True


def suited_outputs(activations, losses):
    """(activation, loss, output) triples: every pair with a linear output layer
    ("identity"), and with the hidden activation at the output ("same") where the
    pair suits the loss."""
    return [
        (activation, loss, output)
        for output in ("same", "identity")
        for loss in losses
        for activation in activations
        if output == "identity" or suits(activation, loss)
    ]
