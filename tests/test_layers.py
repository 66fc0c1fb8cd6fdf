"""Dense (fastbp/layers.py): its arguments, and the hand-written forward and backward
passes.

Every bad argument gets a clear Python exception naming the problem.
"""

import numpy as np
import pytest

import fastbp
from fastbp import _reference

from _models import D, reg_data

# ---------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("units", [0, -1])
def test_units_must_be_positive(units):
    with pytest.raises(ValueError, match=r"units must be >= 1"):
        fastbp.Dense(units)


@pytest.mark.parametrize("units", [2.0, 2.5, True, "3", None])
def test_units_must_be_an_integer(units):
    with pytest.raises(TypeError, match=r"units must be an integer"):
        fastbp.Dense(units)


def test_layer_input_dim_disagrees_with_data():
    X, y = reg_data()
    model = fastbp.Sequential([fastbp.Dense(4, input_dim=D + 1), fastbp.Dense(1)], seed=0)
    with pytest.raises(ValueError, match=r"declared with input_dim=4 but receives 3 inputs"):
        model.fit(X, y, epochs=1)
    assert not model.built


# ---------------------------------------------------------------------------
# forward and backward by hand
# ---------------------------------------------------------------------------


def test_dense_forward_backward_by_hand():
    rng = np.random.default_rng(0)
    layer = fastbp.Dense(3, "tanh")
    x = rng.normal(size=(4, 5))
    out = layer.forward(x)  # builds with float64 from x
    assert layer.weight.shape == (5, 3) and layer.bias.shape == (3,)
    assert layer.weight.dtype == np.float64
    weights = [(layer.weight.copy(), layer.bias.copy())]
    np.testing.assert_allclose(out, _reference.forward(weights, ["tanh"], x)[0], rtol=1e-13)
    grad_out = rng.normal(size=(4, 3))
    grad_in = layer.backward(grad_out)
    [(grad_weight, grad_bias)], expected_in = _reference.backward(weights, ["tanh"], x, grad_out)
    np.testing.assert_allclose(layer.grad_weight, grad_weight, rtol=1e-12)
    np.testing.assert_allclose(layer.grad_bias, grad_bias, rtol=1e-12)
    np.testing.assert_allclose(grad_in, expected_in, rtol=1e-12)
    assert layer.params[0] is layer.weight and layer.grads[1] is layer.grad_bias


def test_dense_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="forward"):
        fastbp.Dense(2).backward(np.ones((1, 2)))


def test_dense_float32_input_builds_float32():
    layer = fastbp.Dense(2, "relu")
    out = layer.forward(np.ones((3, 4), dtype=np.float32))
    assert out.dtype == np.float32 and layer.weight.dtype == np.float32


@pytest.mark.parametrize("value", ["no", "yes", 0, 1, None, np.array([True])])
def test_trainable_must_be_a_bool(value):
    # "no" is truthy: layer.trainable = "no" left the layer training.
    layer = fastbp.Dense(3)
    with pytest.raises(TypeError, match=r"trainable must be True or False, got"):
        layer.trainable = value
    assert layer.trainable is True
    with pytest.raises(TypeError, match=r"trainable must be True or False"):
        fastbp.Dense(3, trainable=value)
    block = fastbp.Residual([fastbp.Dense(3)])
    with pytest.raises(TypeError, match=r"trainable must be True or False"):
        block.trainable = value
    assert block.layers[0].trainable is True


def test_trainable_as_an_argument_and_a_numpy_bool():
    frozen = fastbp.Dense(4, trainable=False)
    assert frozen.trainable is False
    frozen.trainable = np.True_
    assert frozen.trainable is True
    X, y = reg_data()
    model = fastbp.Sequential([fastbp.Dense(4, "tanh", trainable=False), fastbp.Dense(1)], seed=0)
    model.build(D)
    before = model.layers[0].weight.copy()
    model.fit(X, y, epochs=2)
    np.testing.assert_array_equal(model.layers[0].weight, before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_residual_forward_and_backward_by_hand(dtype):
    # Residual.forward raised NotImplementedError.
    rng = np.random.default_rng(0)
    first, second = fastbp.Dense(5, "tanh"), fastbp.Dense(3, "relu")
    block = fastbp.Residual([first, fastbp.Dropout(0.0), second])
    x = rng.normal(size=(4, 3)).astype(dtype)
    out = block(x)
    assert out.dtype == dtype and out.shape == (4, 3)
    weights = [(first.weight, first.bias), (second.weight, second.bias)]
    expected = _reference.forward(weights, ["tanh", "relu"], x, skips=[None, -1])[-1]
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    # Backward: the gradient through the layers plus the skip's.
    upstream = rng.normal(size=(4, 3))
    grads, d_x = _reference.backward(weights, ["tanh", "relu"], x, upstream, skips=[None, -1])
    np.testing.assert_allclose(block.backward(upstream), d_x, rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(first.grad_weight, grads[0][0], rtol=tol * 10, atol=tol * 10)
    np.testing.assert_allclose(second.grad_bias, grads[1][1], rtol=tol * 10, atol=tol * 10)
    # A block whose output width differs from its input says so.
    with pytest.raises(ValueError, match=r"adds its input \(3 features\) to its output \(2"):
        fastbp.Residual([fastbp.Dense(2)])(x)
    # By hand and in a model: the same output from the same weights.
    model = fastbp.Sequential([fastbp.Residual([fastbp.Dense(3, "tanh")])], dtype=dtype, seed=0)
    model.build(3)
    np.testing.assert_allclose(model.layers[0](x), model.predict(x), rtol=tol, atol=tol)
