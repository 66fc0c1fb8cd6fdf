"""Activations (fastbp/activations.py): names, leaky_relu's negative_slope, and the
NumPy helpers apply and derivative.

Every bad argument gets a clear Python exception naming the problem.
"""

import numpy as np
import pytest

import fastbp
from fastbp import _reference, activations

# ---------------------------------------------------------------------------
# names and parameters
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["relu6", "swishy", "", "soft max"])
def test_unknown_activation(name):
    with pytest.raises(ValueError, match=r"unknown activation.*expected one of"):
        fastbp.Dense(3, name)


@pytest.mark.parametrize("bad", [3, 1.0, ["relu"], np.tanh])
def test_activation_of_wrong_type(bad):
    with pytest.raises(TypeError, match=r"activation must be a name"):
        fastbp.Dense(3, bad)


@pytest.mark.parametrize("slope", [-0.01, -1, float("nan"), float("inf")])
def test_negative_slope_must_be_finite_and_non_negative(slope):
    with pytest.raises(ValueError, match=r"negative_slope must be a finite number >= 0"):
        fastbp.Dense(3, "leaky_relu", negative_slope=slope)


@pytest.mark.parametrize("slope", ["abc", None, [0.1]])
def test_negative_slope_of_wrong_type_names_the_parameter(slope):
    with pytest.raises((ValueError, TypeError), match=r"negative_slope"):
        fastbp.Dense(3, "leaky_relu", negative_slope=slope)


# ---------------------------------------------------------------------------
# NumPy helpers
# ---------------------------------------------------------------------------


def test_activation_helpers():
    z = np.array([[-2.0, 0.5, 3.0]])
    np.testing.assert_allclose(
        activations.apply(z, "sigmoid"), _reference.activate("sigmoid", z), rtol=1e-14
    )
    np.testing.assert_allclose(activations.apply(z, "leaky_relu", 0.2), [[-0.4, 0.5, 3.0]])
    np.testing.assert_allclose(activations.apply(z, None), z)
    a = activations.apply(z, "tanh")
    np.testing.assert_allclose(
        activations.derivative(a, np.ones_like(a), "tanh"),
        _reference.activation_backward("tanh", z, a, np.ones_like(a)),
        rtol=1e-14,
    )
    with pytest.raises(ValueError, match="unknown activation"):
        activations.apply(z, "swish")
