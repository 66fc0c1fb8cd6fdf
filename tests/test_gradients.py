"""Gradients of the fused compiled path against central finite differences (float64)."""

import zlib

import numpy as np
import pytest

import fastbp
from fastbp import _reference

from _gradcheck import flatten, numerical_gradient, relative_error
from _models import make_targets, suited_outputs

ACTIVATIONS = [
    "identity",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "elu",
    "gelu",
    "softplus",
]
LOSSES = ["mse", "cross_entropy", "binary_cross_entropy", "mae", "huber", "poisson"]


def build(widths, activation, output_activation, loss, n_features, seed):
    # Nonzero biases: with zero ones, a sample whose ReLU layer is all zero gives the
    # next layer z = 0 exactly, on the kink, where no finite difference applies.
    layers = [fastbp.Dense(w, activation, bias_init=0.05) for w in widths[:-1]]
    layers.append(fastbp.Dense(widths[-1], output_activation, bias_init=0.05))
    return fastbp.Sequential(layers, loss=loss, dtype="float64", seed=seed, input_dim=n_features)


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("activation,loss,output", suited_outputs(ACTIVATIONS, LOSSES))
def test_gradient_matches_finite_differences(activation, loss, n_layers, output):
    rng = np.random.default_rng(zlib.crc32(f"{activation}-{loss}-{n_layers}-{output}".encode()))
    n, d, k = 7, 5, 3
    widths = [6, 5][: n_layers - 1] + [k]
    output_activation = activation if output == "same" else "identity"
    model = build(widths, activation, output_activation, loss, d, seed=1)
    X = rng.normal(size=(n, d))
    y = make_targets(loss, n, k, rng)
    loss_value, grads = model.loss_and_gradients(X, y)
    assert np.isfinite(loss_value)
    numeric = numerical_gradient(model, X, y)
    analytic = flatten(grads)
    assert np.abs(analytic).max() > 0
    assert relative_error(analytic, numeric) < 1e-6


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_cross_entropy_probability_targets(activation):
    rng = np.random.default_rng(3)
    model = build([4, 3], activation, "softmax", "cross_entropy", 2, seed=2)
    X = rng.normal(size=(5, 2))
    y = make_targets("cross_entropy", 5, 3, rng, soft=True)
    _, grads = model.loss_and_gradients(X, y)
    assert relative_error(flatten(grads), numerical_gradient(model, X, y)) < 1e-6


def test_cross_entropy_one_hot_equals_labels():
    rng = np.random.default_rng(4)
    model = build([8, 4], "tanh", "softmax", "cross_entropy", 3, seed=3)
    X = rng.normal(size=(9, 3))
    labels = rng.integers(0, 4, size=9)
    loss_labels, grads_labels = model.loss_and_gradients(X, labels)
    loss_onehot, grads_onehot = model.loss_and_gradients(X, np.eye(4)[labels])
    assert loss_labels == pytest.approx(loss_onehot, rel=1e-13)
    np.testing.assert_allclose(flatten(grads_labels), flatten(grads_onehot), rtol=1e-12, atol=1e-15)


def test_gradient_batch_of_one_and_odd_widths():
    rng = np.random.default_rng(5)
    model = build([13, 9, 7], "tanh", "identity", "mse", 11, seed=4)
    X = rng.normal(size=(1, 11))
    y = rng.normal(size=(1, 7))
    _, grads = model.loss_and_gradients(X, y)
    assert relative_error(flatten(grads), numerical_gradient(model, X, y)) < 1e-6


def test_loss_and_gradients_leaves_weights_unchanged():
    rng = np.random.default_rng(6)
    model = build([5, 2], "relu", "softmax", "cross_entropy", 4, seed=5)
    before = model.flat_params.copy()
    X, y = rng.normal(size=(10, 4)), rng.integers(0, 2, size=10)
    first = model.loss_and_gradients(X, y)
    second = model.loss_and_gradients(X, y)
    np.testing.assert_array_equal(model.flat_params, before)
    assert first[0] == second[0]


def test_loss_value_matches_numpy_reference():
    """The loss reported by the fused path equals the NumPy reference's forward pass
    and loss (fastbp._reference)."""
    rng = np.random.default_rng(7)
    model = build([6, 3], "sigmoid", "softmax", "cross_entropy", 4, seed=6)
    X, y = rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    weights = model.get_weights()
    logits = _reference.forward(weights, ["sigmoid", "identity"], X)[-1]
    expected, _ = _reference.loss_and_delta("cross_entropy", logits, y)
    loss, _ = model.loss_and_gradients(X, y)
    assert loss == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(
        model.predict(X), _reference.forward(weights, ["sigmoid", "softmax"], X)[-1], rtol=1e-12
    )
