"""Weight initializers.

Scaled by a layer's fan-in and fan-out so that activations and gradients keep
their size through deep networks (Glorot/Xavier for sigmoid, tanh and linear
units; He/Kaiming for ReLU-like units). Every draw comes from the model's random
generator, so a model seed fixes the initial weights.

An initializer is a name, a ``Constant(value)``, or a callable
``f(shape, rng) -> ndarray`` with ``rng`` a ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray


def _fans(shape):
    if len(shape) == 2:
        return shape[0], shape[1]
    return shape[0], shape[0]


def glorot_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
    """Uniform on [-l, l] with l = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def glorot_normal(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
    """Normal with std sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)


def he_uniform(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
    """Uniform on [-l, l] with l = sqrt(6 / fan_in)."""
    fan_in, _ = _fans(shape)
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=shape)


def he_normal(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
    """Normal with std sqrt(2 / fan_in)."""
    fan_in, _ = _fans(shape)
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)


def lecun_normal(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
    """Normal with std sqrt(1 / fan_in)."""
    fan_in, _ = _fans(shape)
    return rng.normal(0.0, math.sqrt(1.0 / fan_in), size=shape)


def zeros(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
    return np.zeros(shape)


def ones(shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
    return np.ones(shape)


class Constant:
    """Every entry set to ``value``."""

    def __init__(self, value: float) -> None:
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
        ):
            raise ValueError(f"Constant needs a finite number, got {value!r}")
        self.value = float(value)

    def __call__(self, shape: tuple[int, ...], rng: np.random.Generator) -> NDArray[np.float64]:
        return np.full(shape, self.value)

    def __repr__(self) -> str:
        return f"Constant({self.value!r})"


INITIALIZERS = {
    "glorot_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "he_uniform": he_uniform,
    "he_normal": he_normal,
    "lecun_normal": lecun_normal,
    "zeros": zeros,
    "ones": ones,
}
_ALIASES = {
    "xavier_uniform": "glorot_uniform",
    "xavier_normal": "glorot_normal",
    "kaiming_uniform": "he_uniform",
    "kaiming_normal": "he_normal",
}


def default_for(activation: str) -> str:
    """The default weight initializer for an activation name."""
    return "he_uniform" if activation in ("relu", "leaky_relu", "elu", "gelu") else "glorot_uniform"


def get_initializer(
    init: str | float | Callable[..., Any],
) -> Callable[[tuple[int, ...], np.random.Generator], NDArray[np.float64]]:
    """Return a callable ``f(shape, rng)`` for a name, a Constant or a callable."""
    if isinstance(init, str):
        key = _ALIASES.get(init.lower(), init.lower())
        if key not in INITIALIZERS:
            raise ValueError(
                f"unknown initializer {init!r}; expected one of"
                f" {sorted(INITIALIZERS) + sorted(_ALIASES)}, a Constant or a callable"
            )
        return INITIALIZERS[key]
    if isinstance(init, numbers.Real) and not isinstance(init, bool):
        return Constant(init)
    if callable(init):
        return init
    raise TypeError(f"an initializer must be a name, a number or a callable, not {init!r}")


def initialize(
    init: str | float | Callable[..., Any],
    shape: tuple[int, ...],
    rng: np.random.Generator,
    dtype: DTypeLike,
) -> NDArray[np.floating[Any]]:
    """Draw an array of ``shape`` from ``init`` and check what a callable returned."""
    values = np.asarray(get_initializer(init)(shape, rng))
    if values.shape != tuple(shape):
        raise ValueError(f"initializer {init!r} returned shape {values.shape}, expected {shape}")
    if values.dtype.kind not in "iuf" or not np.isfinite(values).all():
        raise ValueError(f"initializer {init!r} returned non-finite or non-numeric values")
    with np.errstate(over="ignore"):  # reported below, naming the dtype
        values = values.astype(dtype, copy=False)
    if not np.isfinite(values).all():
        raise ValueError(
            f"initializer {init!r} returned values too large for {np.dtype(dtype).name}"
        )
    return values
