"""End-to-end training, determinism, fusion of output activations, weights API."""
import numpy as np
import pytest

import fastbp
from fastbp import _reference

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


@pytest.mark.parametrize("hidden", ["sigmoid", "tanh"])
def test_xor_binary_cross_entropy(hidden):
    model = fastbp.Sequential([fastbp.Dense(4, hidden), fastbp.Dense(1, "sigmoid")],
                              loss="binary_cross_entropy", optimizer=fastbp.Adam(lr=0.1), seed=0)
    model.fit(XOR_X, XOR_Y, epochs=400, batch_size=4)
    probabilities = model.predict(XOR_X)[:, 0]
    np.testing.assert_array_equal(probabilities > 0.5, XOR_Y.astype(bool))
    assert model.evaluate(XOR_X, XOR_Y)["accuracy"] == 1.0
    assert model.history["loss"][-1] < 0.05 < model.history["loss"][0]


def test_xor_softmax_sgd_momentum():
    model = fastbp.Sequential([fastbp.Dense(8, "tanh"), fastbp.Dense(2, "softmax")],
                              loss="cross_entropy",
                              optimizer=fastbp.SGD(lr=0.5, momentum=0.9), seed=1)
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
    model = fastbp.Sequential([fastbp.Dense(32, "relu"), fastbp.Dense(1)], loss="mse",
                              optimizer=fastbp.Adam(lr=0.01), seed=0)
    model.fit(X[:2500], price[:2500], epochs=60, batch_size=32)
    result = model.evaluate(X_test, price_test)
    assert result["r2"] > 0.99
    # Noise has standard deviation 5 (0.05 after scaling): the error is within a few
    # times its variance, far below the variance of the prices.
    assert result["loss"] < 0.05 ** 2 * 4
    assert model.predict(X_test).shape == (500, 1)
    baseline = ((price_test - price_test.mean()) ** 2).mean()
    assert result["loss"] < baseline / 100


def blobs(n_per_class, n_classes, n_features, rng):
    centers = rng.normal(0, 3, size=(n_classes, n_features))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    X = centers[labels] + rng.normal(size=(labels.size, n_features))
    order = rng.permutation(labels.size)
    return X[order], labels[order]


def test_multiclass_classification():
    rng = np.random.default_rng(1)
    X, y = blobs(300, 5, 10, rng)
    model = fastbp.Sequential([fastbp.Dense(32, "relu"), fastbp.Dense(32, "relu"),
                               fastbp.Dense(5, "softmax")], optimizer=fastbp.Adam(lr=0.005),
                              seed=0)
    history = model.fit(X[:1200], y[:1200], epochs=30, batch_size=64,
                        validation_data=(X[1200:], y[1200:]))
    assert isinstance(model.loss, fastbp.CrossEntropy)  # inferred from the softmax output
    assert history["val_accuracy"][-1] > 0.95
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == 30 and history.epoch == list(range(30))
    probabilities = model.predict(X[1200:])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert probabilities.dtype == np.float32
    accuracy = (probabilities.argmax(axis=1) == y[1200:]).mean()
    assert accuracy == pytest.approx(history["val_accuracy"][-1])


def test_validation_loss_equals_evaluate():
    rng = np.random.default_rng(2)
    X, y = blobs(50, 3, 4, rng)
    model = fastbp.Sequential([fastbp.Dense(8, "tanh"), fastbp.Dense(3)], loss="cross_entropy",
                              seed=0, dtype="float64")
    history = model.fit(X, y, epochs=3, validation_data=(X[:40], y[:40]))
    result = model.evaluate(X[:40], y[:40])
    assert history["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-12)
    assert history["val_accuracy"][-1] == result["accuracy"]


def test_epoch_loss_is_mean_of_batch_losses_full_batch():
    """With one batch per epoch the reported loss is the loss before that epoch's step."""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    model = fastbp.Sequential([fastbp.Dense(1)], loss="mse", optimizer=fastbp.SGD(lr=0.1),
                              dtype="float64", seed=0)
    model.build(3)
    expected = []
    for _ in range(3):
        expected.append(model.loss_and_gradients(X, y)[0])
        model.fit(X, y, epochs=1, batch_size=20)
    np.testing.assert_allclose(model.history["loss"], expected, rtol=1e-13)


def test_minibatches_with_smaller_last_batch_match_numpy_reference():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(11, 3)), rng.normal(size=(11, 2))
    model = fastbp.Sequential([fastbp.Dense(5, "sigmoid"), fastbp.Dense(2)], loss="mse",
                              optimizer=fastbp.SGD(lr=0.2, momentum=0.5), dtype="float64",
                              seed=0)
    model.build(3)
    weights = model.get_weights()
    optimizer = _reference.Optimizer("sgd", lr=0.2, momentum=0.5)
    for _ in range(2):  # minibatches of 4, 4 and 3 rows
        _reference.train_epoch(weights, X, y, 4, optimizer,
                               activations=["sigmoid", "identity"], loss="mse")
    model.fit(X, y, epochs=2, batch_size=4, shuffle=False)
    for (got_w, got_b), (want_w, want_b) in zip(model.get_weights(), weights):
        np.testing.assert_allclose(got_w, want_w, rtol=1e-12)
        np.testing.assert_allclose(got_b, want_b, rtol=1e-12)


def test_shuffle_does_not_change_full_batch_training():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    results = []
    for shuffle in (True, False):
        model = fastbp.Sequential([fastbp.Dense(6, "relu"), fastbp.Dense(3)],
                                  loss="cross_entropy", optimizer=fastbp.SGD(lr=0.1),
                                  dtype="float64", seed=7)
        model.fit(X, y, epochs=5, batch_size=30, shuffle=shuffle)
        results.append(model.flat_params.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_same_seed_gives_identical_weights(dtype):
    rng = np.random.default_rng(6)
    X, y = blobs(40, 3, 5, rng)

    def train(seed):
        model = fastbp.Sequential([fastbp.Dense(16, "relu"), fastbp.Dense(3, "softmax")],
                                  optimizer=fastbp.Adam(lr=0.01), seed=seed, dtype=dtype)
        model.fit(X, y, epochs=5, batch_size=7)
        return model.flat_params.copy()

    first, second, other = train(42), train(42), train(43)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.dtype(dtype)
    assert not np.array_equal(first, other)


def test_shuffling_changes_the_minibatches():
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)

    def train(shuffle):
        model = fastbp.Sequential([fastbp.Dense(1)], loss="mse", optimizer=fastbp.SGD(lr=0.05),
                                  dtype="float64", seed=0)
        model.fit(X, y, epochs=2, batch_size=8, shuffle=shuffle)
        return model.flat_params.copy()

    assert not np.allclose(train(True), train(False))


@pytest.mark.parametrize("loss,activation,fused", [
    ("cross_entropy", "softmax", "softmax"),
    ("binary_cross_entropy", "sigmoid", "sigmoid"),
])
def test_final_activation_fused_not_applied_twice(loss, activation, fused):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(6, 3))
    y = rng.integers(0, 2, 6) if loss == "cross_entropy" else rng.uniform(0, 1, (6, 2))
    with_act = fastbp.Sequential([fastbp.Dense(2, activation)], loss=loss, dtype="float64",
                                 input_dim=3, seed=0)
    logits_model = fastbp.Sequential([fastbp.Dense(2)], loss=loss, dtype="float64",
                                     input_dim=3, seed=0)
    logits_model.set_weights(with_act.get_weights())
    expected = _reference.forward(with_act.get_weights(), [fused], X)[-1]
    np.testing.assert_allclose(with_act.predict(X), expected, rtol=1e-12)
    np.testing.assert_allclose(logits_model.predict(X), expected, rtol=1e-12)
    loss_a, grads_a = with_act.loss_and_gradients(X, y)
    loss_b, grads_b = logits_model.loss_and_gradients(X, y)
    assert loss_a == loss_b
    np.testing.assert_array_equal(grads_a[0][0], grads_b[0][0])


def test_softmax_with_mse_is_not_fused():
    """softmax before MSE stays a real softmax layer: predictions are probabilities."""
    model = fastbp.Sequential([fastbp.Dense(3, "softmax")], loss="mse", dtype="float64",
                              input_dim=2, seed=0)
    X = np.array([[1.0, -2.0], [0.5, 0.1]])
    expected = _reference.forward(model.get_weights(), ["softmax"], X)[-1]
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12)


def test_get_set_weights_round_trip():
    model = fastbp.Sequential([fastbp.Dense(4, "relu"), fastbp.Dense(2)], input_dim=3, seed=0)
    weights = model.get_weights()
    assert [w.shape for w, _ in weights] == [(3, 4), (4, 2)]
    assert [b.shape for _, b in weights] == [(4,), (2,)]
    other = fastbp.Sequential([fastbp.Dense(4, "relu"), fastbp.Dense(2)], seed=1)
    other.set_weights(weights)  # builds from the shapes
    X = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(model.predict(X), other.predict(X))
    weights[0][0][...] = 0  # a copy: the model is unaffected
    assert np.any(model.get_weights()[0][0] != 0)


def test_layer_weights_are_views_of_flat_buffer():
    model = fastbp.Sequential([fastbp.Dense(4, "relu"), fastbp.Dense(2)], input_dim=3, seed=0)
    assert model.flat_params.size == 3 * 4 + 4 + 4 * 2 + 2 == model.count_params()
    model.flat_params[:] = np.arange(model.flat_params.size)
    assert model.layers[0].weight[0, 1] == 1 and model.layers[0].bias[0] == 12
    assert model.layers[1].weight[0, 0] == 16 and model.layers[1].bias[1] == 25
    assert np.shares_memory(model.layers[1].grad_weight, model.flat_grads)


def test_float64_model_and_float32_default():
    X = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    y = np.arange(8) % 2
    m64 = fastbp.Sequential([fastbp.Dense(2)], loss="cross_entropy", dtype="float64", seed=0)
    m64.fit(X, y, epochs=1)
    assert m64.flat_params.dtype == np.float64 and m64.predict(X).dtype == np.float64
    m32 = fastbp.Sequential([fastbp.Dense(2)], loss="cross_entropy", seed=0)
    m32.fit(X.astype(np.float64), y, epochs=1)
    assert m32.flat_params.dtype == np.float32 and m32.predict(X).dtype == np.float32


def test_predict_large_input_in_chunks_matches_numpy():
    rng = np.random.default_rng(9)
    model = fastbp.Sequential([fastbp.Dense(7, "tanh"), fastbp.Dense(3)], loss="mse",
                              dtype="float64", input_dim=5, seed=0)
    X = rng.normal(size=(1300, 5))  # more than one inference chunk, last chunk partial
    expected = _reference.forward(model.get_weights(), ["tanh", "identity"], X)[-1]
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12)
    np.testing.assert_allclose(model.predict(X[:1]), model.predict(X)[:1], rtol=1e-14)


def test_regression_metrics():
    model = fastbp.Sequential([fastbp.Dense(1)], loss="mse", dtype="float64", input_dim=1)
    model.set_weights([(np.array([[2.0]]), np.array([1.0]))])
    X = np.array([[0.0], [1.0], [2.0]])
    y = np.array([1.0, 3.0, 6.0])  # predictions 1, 3, 5
    result = model.evaluate(X, y)
    assert result["loss"] == pytest.approx(1 / 3)
    assert result["mae"] == pytest.approx(1 / 3)
    assert result["r2"] == pytest.approx(1 - 1 / (((y - y.mean()) ** 2).sum()))


def test_verbose_prints_one_line_per_epoch(capsys):
    model = fastbp.Sequential([fastbp.Dense(2)], loss="cross_entropy", seed=0)
    model.fit(XOR_X, XOR_Y, epochs=3, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3:") and "accuracy" in lines[0]
    model.fit(XOR_X, XOR_Y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def test_summary_and_repr():
    model = fastbp.Sequential([fastbp.Dense(4, "leaky_relu", negative_slope=0.1),
                               fastbp.Dense(1)], input_dim=2)
    text = model.summary()
    assert "Dense(4, activation='leaky_relu', negative_slope=0.1)" in text
    assert "total parameters: 17" in text


@pytest.mark.parametrize("where", ["X", "y"])
def test_nan_found_mid_epoch_restores_weights(where):
    """NaN in the data is found when its minibatch's loss turns NaN: the error names
    it and the weights are those from before the epoch, not half-trained ones."""
    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(64, 3)), rng.normal(size=64)
    (X if where == "X" else y)[60] = np.nan
    model = fastbp.Sequential([fastbp.Dense(4, "tanh"), fastbp.Dense(1)], loss="mse",
                              optimizer=fastbp.SGD(lr=0.1), seed=0, input_dim=3)
    before = model.flat_params.copy()
    with pytest.raises(ValueError, match=f"{where} contains NaN"):
        model.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    np.testing.assert_array_equal(model.flat_params, before)
    assert model.optimizer.iterations == 0 and len(model.history) == 0
