"""Activation functions by name: identity, sigmoid, tanh, relu, leaky_relu
(negative_slope), softmax, elu (alpha), gelu (exact, with erf), softplus and
exponential.

The kernels live in ``fastbp._core``; this module maps names to kernel codes and
offers NumPy-facing helpers (``apply`` and ``derivative``) for hand-written loops.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _codes
from ._backend import core

# Names to kernel codes: the one list, in fastbp._codes.
ACTIVATIONS = _codes.ACTIVATIONS

_ALIASES = {
    None: "identity",
    "linear": "identity",
    "none": "identity",
    "logistic": "sigmoid",
    "exp": "exponential",
}


def canonical_name(activation: str | None) -> str:
    """Return the canonical name of an activation given by name (or None for identity).

    Raises ValueError for an unknown name, naming the known ones.
    """
    if activation is not None and not isinstance(activation, str):
        raise TypeError(f"activation must be a name (str) or None, not {type(activation).__name__}")
    key = activation.lower() if isinstance(activation, str) else activation
    key = _ALIASES.get(key, key)
    if key not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)} or None"
        )
    return key


def check_negative_slope(negative_slope: float) -> float:
    if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(negative_slope, numbers.Real):
        raise TypeError(f"negative_slope must be a number, got {negative_slope!r}")
    slope = float(negative_slope)
    if not np.isfinite(slope) or slope < 0:
        raise ValueError(f"negative_slope must be a finite number >= 0, got {negative_slope!r}")
    return slope


def check_alpha(alpha: float) -> float:
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha must be a number, got {alpha!r}")
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    return float(alpha)


def parameter(name: str, negative_slope: float = 0.01, alpha: float = 1.0) -> float:
    """The activation's parameter as the kernels read it: leaky_relu's negative
    slope, ELU's alpha, 0 for the others."""
    if name == "leaky_relu":
        return check_negative_slope(negative_slope)
    if name == "elu":
        return check_alpha(alpha)
    return 0.0


def apply(
    x: ArrayLike, activation: str | None, negative_slope: float = 0.01, alpha: float = 1.0
) -> NDArray[np.floating[Any]]:
    """Return ``f(x)`` for a float32 or float64 array of shape (n_samples, n_units)."""
    name = canonical_name(activation)
    out = np.array(x, dtype=_float_dtype(x), order="C", copy=True)
    _check_2d(out, "x")
    core().bias_act_forward(
        out, out[:0, 0], ACTIVATIONS[name], parameter(name, negative_slope, alpha)
    )
    return out


def derivative(
    output: ArrayLike,
    grad_output: ArrayLike,
    activation: str | None,
    negative_slope: float = 0.01,
    alpha: float = 1.0,
    z: ArrayLike | None = None,
) -> NDArray[np.floating[Any]]:
    """Return ``grad_output * f'(z)`` given the activation's output ``f(z)`` (GELU
    needs its input ``z`` too).

    For softmax this is the Jacobian-vector product, not an elementwise product.
    """
    name = canonical_name(activation)
    dtype = _float_dtype(output)
    a = np.ascontiguousarray(output, dtype=dtype)
    d = np.array(grad_output, dtype=dtype, order="C", copy=True)
    _check_2d(a, "output")
    if a.shape != d.shape:
        raise ValueError(f"output has shape {a.shape} but grad_output has shape {d.shape}")
    if name == "gelu":
        if z is None:
            raise ValueError("the derivative of gelu needs its input z")
        z = np.ascontiguousarray(z, dtype=dtype)
    core().act_backward(
        a,
        d,
        ACTIVATIONS[name],
        parameter(name, negative_slope, alpha),
        z if name == "gelu" else None,
    )
    return d


def _float_dtype(x):
    dtype = np.asarray(x).dtype
    return dtype if dtype in (np.float32, np.float64) else np.float64


def _check_2d(a, name):
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_units), got {a.ndim}-D")
