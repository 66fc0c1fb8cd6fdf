"""Residual blocks: exact gradients through skip connections, and deep networks whose
gradients do not vanish."""

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Dropout, Residual, _reference, _threads

from _gradcheck import flatten, numerical_gradient, relative_error


def networks():
    return {
        "block-of-one": [Dense(5, "tanh"), Residual(Dense(5, "relu")), Dense(3)],
        "block-of-two": [
            Dense(5, "sigmoid"),
            Residual([Dense(4, "elu"), Dense(5, "tanh")]),
            Dense(3),
        ],
        "from-input": [Residual([Dense(6, "gelu"), Dense(4)]), Dense(6, "softplus"), Dense(3)],
        "consecutive": [
            Dense(5, "tanh"),
            Residual(Dense(5, "tanh")),
            Residual([Dense(3, "relu"), Dense(5, "leaky_relu")]),
            Dense(3),
        ],
        "last": [Dense(3, "tanh"), Residual(Dense(3))],
    }


@pytest.mark.parametrize("name", list(networks()))
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_gradient_through_skip_connections(name, loss):
    rng = np.random.default_rng(0)
    n_in = 4 if name == "from-input" else 3
    X = rng.normal(size=(7, n_in))
    y = rng.normal(size=(7, 3)) if loss == "mse" else rng.integers(0, 3, 7)
    model = fastbp.Sequential(networks()[name], loss=loss, dtype="float64", seed=1, input_dim=n_in)
    for layer in model._network.dense:
        layer.bias[:] = rng.normal(0, 0.1, layer.bias.shape)  # off the ReLU kink
    _, grads = model.loss_and_gradients(X, y)
    assert relative_error(flatten(grads), numerical_gradient(model, X, y)) < 1e-6


def test_gradient_with_dropout_inside_a_block():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(9, 4)), rng.normal(size=(9, 2))
    model = fastbp.Sequential(
        [Dense(4, "tanh"), Residual([Dense(6, "tanh"), Dropout(0.3), Dense(4, "tanh")]), Dense(2)],
        loss="mse",
        dtype="float64",
        seed=2,
        input_dim=4,
    )
    _, grads = model.loss_and_gradients(X, y, training=True)
    numeric = numerical_gradient(model, X, y, training=True)
    assert relative_error(flatten(grads), numeric) < 1e-6


def test_forward_is_x_plus_f_of_x():
    rng = np.random.default_rng(2)
    model = fastbp.Sequential(
        [Residual([Dense(5, "relu"), Dense(3)])], loss="mse", dtype="float64", input_dim=3, seed=0
    )
    X = rng.normal(size=(4, 3))
    # The reference's residual connection: layer 1's output f(z) plus the input (-1).
    expected = _reference.forward(model.get_weights(), ["relu", "identity"], X, skips=[None, -1])[
        -1
    ]
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12)


def test_input_gradient_through_a_skip_from_the_input():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(3, 4))
    model = fastbp.Sequential(
        [Residual(Dense(4, "tanh")), Dense(2, "softmax")], dtype="float64", input_dim=4, seed=0
    )
    got = model.input_gradient(X, output=1)
    numeric = np.empty_like(X)
    for i in range(3):
        for j in range(4):
            up, down = X.copy(), X.copy()
            up[i, j] += 1e-6
            down[i, j] -= 1e-6
            numeric[i, j] = (model.predict(up)[i, 1] - model.predict(down)[i, 1]) / 2e-6
    np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-10)


def test_residual_training_over_threads_and_round_trip(monkeypatch, tmp_path):
    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(40, 6)), rng.integers(0, 3, 40)
    results = []
    for threads in (1, 2):
        model = fastbp.Sequential(
            [
                Dense(8, "relu"),
                Residual([Dense(8, "relu"), Dense(8)]),
                Residual(Dense(8, "tanh")),
                Dense(3),
            ],
            loss="cross_entropy",
            optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
            dtype="float64",
            seed=0,
            threads=threads,
        )
        model.fit(X, y, epochs=3, batch_size=8)
        results.append(model)
    np.testing.assert_allclose(results[1].flat_params, results[0].flat_params, rtol=1e-10)
    loaded = fastbp.load(results[0].save(tmp_path / "m.npz"))
    assert isinstance(loaded.layers[1], Residual) and len(loaded.layers[1].layers) == 2
    np.testing.assert_array_equal(loaded.predict(X), results[0].predict(X))
    assert "Residual: x + f(x)" in loaded.summary()


def first_layer_gradient_norm(layers, X, y):
    model = fastbp.Sequential(
        layers, loss="cross_entropy", dtype="float64", seed=0, input_dim=X.shape[1]
    )
    _, grads = model.loss_and_gradients(X, y)
    return np.linalg.norm(grads[0][0]), np.linalg.norm(grads[-1][0])


def test_vanishing_gradients_and_the_cure():
    """20 sigmoid layers: the first layer's gradient is a vanishing fraction of the
    last one's. ReLU with He initialization and residual blocks keep it alive."""
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(64, 16)), rng.integers(0, 4, 64)
    sigmoid = [Dense(16, "sigmoid", init="glorot_uniform") for _ in range(20)] + [Dense(4)]
    first, last = first_layer_gradient_norm(sigmoid, X, y)
    assert first < 1e-6 * last
    residual = (
        [Dense(16, "relu", init="he_normal")]
        + [Residual(Dense(16, "relu", init="he_normal")) for _ in range(19)]
        + [Dense(4)]
    )
    first_r, last_r = first_layer_gradient_norm(residual, X, y)
    assert first_r > 1e-2 * last_r


@pytest.mark.parametrize(
    "layers,message",
    [
        ([Dense(4), Residual(Dense(3))], "must match"),
        ([Dense(4), Residual(Dense(4)), Dropout(0.5), Dense(2)], "inside the block"),
    ],
)
def test_residual_misuse_is_refused(layers, message):
    with pytest.raises(ValueError, match=message):
        fastbp.Sequential(layers, loss="mse", input_dim=3)


def test_residual_contents_checked():
    with pytest.raises(ValueError, match="end with a Dense"):
        Residual([Dense(3), Dropout(0.2)])
    with pytest.raises(TypeError, match="Dense and Dropout"):
        Residual([Residual(Dense(3))])
    with pytest.raises(ValueError, match="at least one"):
        Residual([])
