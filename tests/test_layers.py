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
