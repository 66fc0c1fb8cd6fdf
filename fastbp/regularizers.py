"""Weight penalties against overfitting (Keras conventions).

A regularizer adds a penalty on a layer's weight (``Dense(kernel_regularizer=)``) or
bias (``bias_regularizer=``) to the loss: ``L1(a)``: ``a * sum(|w|)``; ``L2(a)``:
``a * sum(w ** 2)``; ``L1L2(l1, l2)``: both. The penalty is part of the reported
loss (training, validation and ``evaluate``) and its gradient (``a * sign(w)``,
``2 a w``) part of the gradients, computed inside the compiled training step.
"""

from __future__ import annotations

import math
import numbers

from numpy.typing import ArrayLike


class Regularizer:
    """``l1 * sum(|w|) + l2 * sum(w ** 2)``."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _coefficient(l1, "l1")
        self.l2 = _coefficient(l2, "l2")

    def penalty(self, weights: ArrayLike) -> float:
        """The penalty of an array of weights (float)."""
        import numpy as np

        w = np.asarray(weights, dtype=np.float64)
        return self.l1 * float(np.abs(w).sum()) + self.l2 * float((w * w).sum())

    def get_config(self) -> dict[str, float]:
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self):
        return f"{type(self).__name__}(l1={self.l1!r}, l2={self.l2!r})"


def _coefficient(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class L1(Regularizer):
    """``a * sum(|w|)``."""

    def __init__(self, a: float = 0.01) -> None:
        super().__init__(l1=a)


class L2(Regularizer):
    """``a * sum(w ** 2)``."""

    def __init__(self, a: float = 0.01) -> None:
        super().__init__(l2=a)


class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w ** 2)``."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__(l1=l1, l2=l2)


def get(regularizer: Regularizer | dict[str, float] | None) -> Regularizer | None:
    """None, a Regularizer, or its config dict (as saved)."""
    if regularizer is None or isinstance(regularizer, Regularizer):
        return regularizer
    if isinstance(regularizer, dict):
        return Regularizer(**regularizer)
    raise TypeError(f"a regularizer must be a fastbp.regularizers.Regularizer, got {regularizer!r}")
