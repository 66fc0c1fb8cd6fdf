"""model.input_gradient: saliency by the backward pass, checked by finite differences."""

import numpy as np
import pytest

import fastbp


def numeric_input_gradient(f, X, h=1e-6):
    grad = np.empty_like(X)
    for i in range(X.shape[0]):
        for j in range(X.shape[1]):
            up, down = X.copy(), X.copy()
            up[i, j] += h
            down[i, j] -= h
            grad[i, j] = (f(up, i) - f(down, i)) / (2 * h)
    return grad


@pytest.mark.parametrize(
    "loss,last",
    [
        ("cross_entropy", "softmax"),
        ("mse", "tanh"),
        ("binary_cross_entropy", "sigmoid"),
        ("mae", None),
        ("poisson", None),
        ("huber", "gelu"),
    ],
)
def test_loss_gradient_wrt_inputs(loss, last):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 4))
    y = {
        "cross_entropy": rng.integers(0, 3, 5),
        "binary_cross_entropy": rng.uniform(0, 1, (5, 3)),
        "poisson": rng.poisson(1.0, (5, 3)).astype(float),
    }.get(loss, rng.normal(size=(5, 3)))
    model = fastbp.Sequential(
        [fastbp.Dense(6, "tanh"), fastbp.Dense(5, "elu"), fastbp.Dense(3, last)],
        loss=loss,
        dtype="float64",
        seed=1,
        input_dim=4,
    )
    got = model.input_gradient(X, y)

    def sample_loss(Xp, i):
        return model.loss_and_gradients(Xp[i : i + 1], y[i : i + 1])[0]

    np.testing.assert_allclose(got, numeric_input_gradient(sample_loss, X), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    "loss,last,output",
    [
        ("cross_entropy", "softmax", 2),
        ("binary_cross_entropy", None, 1),
        ("mse", "relu", 0),
        ("poisson", "exponential", 2),
    ],
)
def test_output_gradient_wrt_inputs(loss, last, output):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4, 3))
    model = fastbp.Sequential(
        [fastbp.Dense(7, "sigmoid"), fastbp.Dense(3, last)],
        loss=loss,
        dtype="float64",
        seed=2,
        input_dim=3,
    )
    got = model.input_gradient(X, output=output)
    numeric = numeric_input_gradient(lambda Xp, i, output=output: model.predict(Xp)[i, output], X)
    np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-9)


ACTIVATIONS = [
    None,
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "elu",
    "gelu",
    "softplus",
    "exponential",
]


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy", "poisson"])
@pytest.mark.parametrize("last", [None, "fused"])
@pytest.mark.parametrize("residual", [False, True])
def test_output_gradient_when_the_last_layer_keeps_its_activation(loss, last, residual):
    # The loss's output activation (softmax, sigmoid, exp) on top of the last
    # layer's own one: inside a Residual block the layer keeps its activation
    # (softmax then the sum, then the loss's softmax: not fused). The backward pass
    # must read the layer's output, not the probabilities predict computes from it.
    rng = np.random.default_rng(3)
    X = rng.normal(size=(4, 3))
    if last == "fused":
        last = fastbp.losses.get_loss(loss).output_activation
    final = fastbp.Residual(fastbp.Dense(3, last)) if residual else fastbp.Dense(3, last)
    model = fastbp.Sequential(
        [fastbp.Dense(3, "tanh"), final],
        loss=loss,
        dtype="float64",
        seed=4,
        input_dim=3,
    )
    for output in range(3):
        got = model.input_gradient(X, output=output)
        numeric = numeric_input_gradient(
            lambda Xp, i, output=output: model.predict(Xp)[i, output], X
        )
        # Central differences with h = 1e-6 in float64 err by about h^2 |f'''| (1e-12)
        # plus rounding, eps |f| / h (1e-10), for these smooth outputs of order 1.
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-9)


def test_saliency_finds_the_feature_that_matters():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 5))
    y = (X[:, 3] > 0).astype(int)  # only feature 3 decides the class
    model = fastbp.Sequential(
        [fastbp.Dense(16, "tanh"), fastbp.Dense(2, "softmax")],
        optimizer=fastbp.Adam(lr=0.01),
        seed=0,
    )
    model.fit(X, y, epochs=20)
    saliency = np.abs(model.input_gradient(X[:50], output=1)).mean(axis=0)
    assert saliency.argmax() == 3 and saliency[3] > 5 * np.delete(saliency, 3).max()
    assert model.input_gradient(X[:3], output=1).dtype == np.float32


def test_input_gradient_arguments_checked():
    model = fastbp.Sequential([fastbp.Dense(2)], loss="cross_entropy", input_dim=3)
    with pytest.raises(ValueError, match="not both"):
        model.input_gradient(np.ones((1, 3)), y=[0], output=1)
    with pytest.raises(ValueError, match="below 2"):
        model.input_gradient(np.ones((1, 3)), output=2)
    with pytest.raises(ValueError, match="features"):
        model.input_gradient(np.ones((1, 4)))
    with pytest.raises(RuntimeError, match="no weights"):
        fastbp.Sequential([fastbp.Dense(2)]).input_gradient(np.ones((1, 3)))
