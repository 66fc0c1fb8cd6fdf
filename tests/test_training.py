"""End-to-end learning of whole models: XOR, house prices, multiclass blobs; the
same seed gives the same weights."""

import numpy as np
import pytest

import fastbp

from _models import XOR_X, XOR_Y, class_blobs


@pytest.mark.parametrize("hidden", ["sigmoid", "tanh"])
def test_xor_binary_cross_entropy(hidden):
    model = fastbp.Sequential(
        [fastbp.Dense(4, hidden), fastbp.Dense(1, "sigmoid")],
        loss="binary_cross_entropy",
        optimizer=fastbp.Adam(lr=0.1),
        seed=0,
    )
    model.fit(XOR_X, XOR_Y, epochs=400, batch_size=4)
    probabilities = model.predict(XOR_X)[:, 0]
    np.testing.assert_array_equal(probabilities > 0.5, XOR_Y.astype(bool))
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0
    assert model.history["loss"][-1] < 0.05 < model.history["loss"][0]


def test_xor_softmax_sgd_momentum():
    model = fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(2, "softmax")],
        loss="cross_entropy",
        optimizer=fastbp.SGD(lr=0.5, momentum=0.9),
        seed=1,
    )
    model.fit(XOR_X, XOR_Y, epochs=300, batch_size=2)
    np.testing.assert_array_equal(model.predict_classes(XOR_X), XOR_Y)
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0


def house_prices(n, rng):
    size = rng.uniform(50, 250, n)
    location = rng.uniform(0, 1, n)
    bedrooms = rng.integers(1, 6, n).astype(float)
    price = 2.0 * size * (0.6 + 0.8 * location) + 15.0 * bedrooms + rng.normal(0, 5, n)
    X = np.column_stack([size, location, bedrooms])
    return (X - X.mean(axis=0)) / X.std(axis=0), price / 100.0


def test_house_price_regression():
    rng = np.random.default_rng(0)
    X, price = house_prices(3000, rng)
    X_test, price_test = X[2500:], price[2500:]
    model = fastbp.Sequential(
        [fastbp.Dense(32, "relu"), fastbp.Dense(1)],
        loss="mse",
        optimizer=fastbp.Adam(lr=0.01),
        seed=0,
    )
    model.fit(X[:2500], price[:2500], epochs=60, batch_size=32)
    result = model.evaluate(X_test, price_test)
    assert result["r2"] > 0.99
    # Noise has standard deviation 5 (0.05 after scaling): the error is within a few
    # times its variance, far below the variance of the prices.
    assert result["loss"] < 0.05**2 * 4
    assert model.predict(X_test).shape == (500, 1)
    baseline = ((price_test - price_test.mean()) ** 2).mean()
    assert result["loss"] < baseline / 100


def test_multiclass_classification():
    rng = np.random.default_rng(1)
    X, y = class_blobs(300, 5, 10, rng)
    model = fastbp.Sequential(
        [fastbp.Dense(32, "relu"), fastbp.Dense(32, "relu"), fastbp.Dense(5, "softmax")],
        optimizer=fastbp.Adam(lr=0.005),
        seed=0,
    )
    history = model.fit(
        X[:1200], y[:1200], epochs=30, batch_size=64, validation_data=(X[1200:], y[1200:])
    )
    assert isinstance(model.loss, fastbp.CrossEntropy)  # inferred from the softmax output
    assert history["val_accuracy"][-1] > 0.95
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == 30 and history.epoch == list(range(30))
    probabilities = model.predict(X[1200:])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert probabilities.dtype == np.float32
    accuracy = (probabilities.argmax(axis=1) == y[1200:]).mean()
    assert accuracy == pytest.approx(history["val_accuracy"][-1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_gives_identical_weights(dtype):
    rng = np.random.default_rng(6)
    X, y = class_blobs(40, 3, 5, rng)

    def train(seed):
        model = fastbp.Sequential(
            [fastbp.Dense(16, "relu"), fastbp.Dense(3, "softmax")],
            optimizer=fastbp.Adam(lr=0.01),
            seed=seed,
            dtype=dtype,
        )
        model.fit(X, y, epochs=5, batch_size=7)
        return model.flat_params.copy()

    first, second, other = train(42), train(42), train(43)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.dtype(dtype)
    assert not np.array_equal(first, other)
