"""Initializers: the right scale for each scheme, callables, constants, the model seed,
the default for each activation, and bad initializers."""

import math

import numpy as np
import pytest

import fastbp
from fastbp import initializers


@pytest.mark.parametrize(
    "name,std",
    [
        ("glorot_uniform", math.sqrt(2 / (400 + 300))),
        ("glorot_normal", math.sqrt(2 / (400 + 300))),
        ("he_uniform", math.sqrt(2 / 400)),
        ("he_normal", math.sqrt(2 / 400)),
        ("lecun_normal", math.sqrt(1 / 400)),
        ("xavier_uniform", math.sqrt(2 / 700)),
        ("kaiming_normal", math.sqrt(2 / 400)),
    ],
)
def test_scale_of_each_scheme(name, std):
    w = initializers.initialize(name, (400, 300), np.random.default_rng(0), np.float64)
    assert w.std() == pytest.approx(std, rel=0.02)
    assert abs(w.mean()) < 0.05 * std
    if "uniform" in name:  # bounded by sqrt(3) std
        assert np.abs(w).max() <= math.sqrt(3) * std * (1 + 1e-12)


def test_constant_zeros_ones_and_callable():
    rng = np.random.default_rng(0)
    assert (initializers.initialize(0.25, (2, 3), rng, np.float32) == 0.25).all()
    assert (initializers.initialize(initializers.Constant(-1), (2,), rng, np.float64) == -1).all()
    assert (initializers.initialize("zeros", (2, 2), rng, np.float64) == 0).all()
    assert (initializers.initialize("ones", (3,), rng, np.float64) == 1).all()
    custom = initializers.initialize(
        lambda shape, r: np.arange(6.0).reshape(shape), (2, 3), rng, np.float32
    )
    assert custom.dtype == np.float32 and custom[1, 2] == 5


def test_per_layer_initializers_and_model_seed():
    def build(seed):
        return fastbp.Sequential(
            [
                fastbp.Dense(50, "relu", init="he_normal", bias_init=0.1),
                fastbp.Dense(4, init="zeros", bias_init="ones"),
            ],
            seed=seed,
            input_dim=30,
        )

    a, b, c = build(1), build(1), build(2)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, c.flat_params)
    (w1, b1), (w2, b2) = a.get_weights()
    assert w1.std() == pytest.approx(math.sqrt(2 / 30), rel=0.1)
    assert (b1 == np.float32(0.1)).all() and (w2 == 0).all() and (b2 == 1).all()


@pytest.mark.parametrize(
    "activation,expected",
    [
        ("relu", "he_uniform"),
        ("gelu", "he_uniform"),
        ("tanh", "glorot_uniform"),
        ("sigmoid", "glorot_uniform"),
        (None, "glorot_uniform"),
    ],
)
def test_default_per_activation(activation, expected):
    assert fastbp.Dense(3, activation).init == expected


@pytest.mark.parametrize(
    "init,error,message",
    [
        ("orthogonal", ValueError, "unknown initializer"),
        ([1, 2], TypeError, "initializer"),
        (lambda shape, rng: np.zeros(3), ValueError, "shape"),
        (lambda shape, rng: np.full(shape, np.nan), ValueError, "non-finite"),
        (1e300, ValueError, "too large for float32"),  # finite, but not in float32
    ],
)
def test_bad_initializers(init, error, message):
    with pytest.raises(error, match=message):
        fastbp.Sequential([fastbp.Dense(2, init=init)], input_dim=3)


def test_a_constant_too_large_for_float32_suits_float64():
    model = fastbp.Sequential([fastbp.Dense(2, init=1e300)], input_dim=3, dtype="float64")
    assert (model.layers[0].weight == 1e300).all()


def test_unknown_initializer():
    with pytest.raises(ValueError, match=r"unknown initializer"):
        fastbp.Dense(3, init="uniformish")
    with pytest.raises(TypeError, match=r"initializer must be"):
        fastbp.Dense(3, bias_init=[1, 2])


def test_dense_default_initializers_by_activation():
    relu = fastbp.Dense(200, "relu").build(100, np.random.default_rng(0), np.float64)
    tanh = fastbp.Dense(200, "tanh").build(100, np.random.default_rng(0), np.float64)
    # He uniform: limit sqrt(6 / 100); Glorot uniform: limit sqrt(6 / 300).
    assert np.abs(relu.weight).max() == pytest.approx(np.sqrt(6 / 100), rel=0.01)
    assert np.abs(tanh.weight).max() == pytest.approx(np.sqrt(6 / 300), rel=0.01)
    assert np.all(relu.bias == 0)
