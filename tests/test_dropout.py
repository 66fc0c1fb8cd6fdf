"""Dropout: exact gradients for its masks, the right statistics, off in inference,
independent of the thread count."""

import numpy as np
import pytest

import fastbp
from fastbp import _threads

from _gradcheck import flatten, numerical_gradient, relative_error


@pytest.mark.parametrize(
    "activation", ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "softplus"]
)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gradient_with_dropout_masks(activation, loss):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(11, 6))
    y = rng.normal(size=(11, 3)) if loss == "mse" else rng.integers(0, 3, 11)
    model = fastbp.Sequential(
        [
            fastbp.Dropout(0.2),
            fastbp.Dense(7, activation),
            fastbp.Dropout(0.3),
            fastbp.Dropout(0.1),
            fastbp.Dense(5, activation),
            fastbp.Dropout(0.5),
            fastbp.Dense(3),
        ],
        loss=loss,
        dtype="float64",
        seed=4,
        input_dim=6,
    )
    loss_train, grads = model.loss_and_gradients(X, y, training=True)
    assert model.loss_and_gradients(X, y, training=True)[0] == loss_train  # same masks
    assert loss_train != model.loss_and_gradients(X, y)[0]  # masks do something
    numeric = numerical_gradient(model, X, y, training=True)
    assert relative_error(flatten(grads), numeric) < 1e-6
    # Dropped units get no gradient: some weight rows or columns are exactly zero.
    assert (np.abs(grads[1][0]).sum(axis=1) == 0).any() or (grads[1][0] == 0).any()


def test_mask_statistics():
    """E[output] is unchanged and the share of dropped inputs is the rate."""
    d, n, rate = 50, 4000, 0.3
    model = fastbp.Sequential(
        [fastbp.Dropout(rate), fastbp.Dense(1)], loss="mse", dtype="float64", seed=0, input_dim=d
    )
    model.set_weights([(np.full((d, 1), 1.0 / d), np.zeros(1))])
    X, y = np.ones((n, d)), np.zeros(n)
    loss, [(gw, _)] = model.loss_and_gradients(X, y, training=True)
    # out_i = mean_j m_ij / (1 - rate): E[out^2] = 1 + rate / ((1 - rate) d).
    expected = 1 + rate / ((1 - rate) * d)
    assert loss == pytest.approx(expected, rel=0.01)
    # grad_w_j = 2 mean_i out_i x_ij; with out_i near 1, about 2 (kept share) / (1 - rate).
    assert gw.mean() == pytest.approx(2.0, rel=0.02)


def test_dropout_is_off_in_inference():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 4))
    with_dropout = fastbp.Sequential(
        [
            fastbp.Dropout(0.5),
            fastbp.Dense(8, "relu"),
            fastbp.Dropout(0.5),
            fastbp.Dense(2, "softmax"),
        ],
        seed=0,
        input_dim=4,
    )
    plain = fastbp.Sequential([fastbp.Dense(8, "relu"), fastbp.Dense(2, "softmax")], input_dim=4)
    plain.set_weights(with_dropout.get_weights())
    np.testing.assert_array_equal(with_dropout.predict(X), plain.predict(X))
    y = rng.integers(0, 2, 20)
    assert with_dropout.evaluate(X, y) == plain.evaluate(X, y)
    assert with_dropout.loss_and_gradients(X, y)[0] == plain.loss_and_gradients(X, y)[0]


def test_training_with_dropout_does_not_depend_on_threads(monkeypatch):
    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(50, 5)), rng.integers(0, 3, 50)
    results = []
    for threads in (1, 2, 3):
        model = fastbp.Sequential(
            [fastbp.Dropout(0.1), fastbp.Dense(9, "tanh"), fastbp.Dropout(0.4), fastbp.Dense(3)],
            loss="cross_entropy",
            optimizer=fastbp.SGD(lr=0.1),
            dtype="float64",
            seed=5,
            threads=threads,
        )
        model.fit(X, y, epochs=3, batch_size=8, shuffle=threads != 3)
        results.append(model.flat_params.copy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-10)
    assert not np.allclose(results[2], results[0])  # shuffle=False: other batches


def test_dropout_training_and_seed_reproducibility():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(60, 4)), rng.integers(0, 2, 60)

    def train(seed):
        model = fastbp.Sequential(
            [fastbp.Dense(16, "relu"), fastbp.Dropout(0.5), fastbp.Dense(2, "softmax")], seed=seed
        )
        model.fit(X, y, epochs=3, batch_size=10)
        return model.flat_params.copy()

    np.testing.assert_array_equal(train(7), train(7))
    assert not np.array_equal(train(7), train(8))


def test_dropout_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(30, 3)), rng.integers(0, 3, 30)
    model = fastbp.Sequential(
        [fastbp.Dense(6, "tanh"), fastbp.Dropout(0.3), fastbp.Dense(3)],
        loss="cross_entropy",
        seed=0,
    )
    model.fit(X, y, epochs=2, batch_size=5)
    loaded = fastbp.load(model.save(tmp_path / "m.npz"))
    assert [type(layer).__name__ for layer in loaded.layers] == ["Dense", "Dropout", "Dense"]
    model.fit(X, y, epochs=1, batch_size=5)
    loaded.fit(X, y, epochs=1, batch_size=5)
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)


@pytest.mark.parametrize(
    "layers,message",
    [
        ([fastbp.Dense(3), fastbp.Dropout(0.5)], "last layer"),
        ([fastbp.Dense(3, "softmax"), fastbp.Dropout(0.5), fastbp.Dense(2)], "softmax"),
    ],
)
def test_dropout_placement_checked(layers, message):
    with pytest.raises(ValueError, match=message):
        fastbp.Sequential(layers, loss="mse", input_dim=2)


@pytest.mark.parametrize("rate", [-0.1, 1.0, "0.5", True])
def test_dropout_rate_checked(rate):
    with pytest.raises(ValueError, match="rate"):
        fastbp.Dropout(rate)


def test_dropout_by_hand():
    layer = fastbp.Dropout(0.25)
    x = np.ones((200, 100))
    out = layer.forward(x, rng=np.random.default_rng(0))
    assert set(np.unique(out)) == {0.0, 1 / 0.75}
    assert (out == 0).mean() == pytest.approx(0.25, abs=0.01)
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), out)
    np.testing.assert_array_equal(layer.forward(x, training=False), x)
