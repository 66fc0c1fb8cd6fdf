"""Weight penalties against overfitting (Keras conventions).

A regularizer adds a penalty on a layer's weight (``Dense(kernel_regularizer=)``) or
bias (``bias_regularizer=``) to the loss: ``L1(a)``: ``a * sum(|w|)``; ``L2(a)``:
``a * sum(w ** 2)``; ``L1L2(l1, l2)``: both. The penalty is part of the reported
loss (training, validation and ``evaluate``) and its gradient (``a * sign(w)``,
``2 a w``) part of the gradients, computed inside the compiled training step.

``per_sample=True`` divides the penalty by each minibatch's total sample weight (its
number of samples when unweighted), as scikit-learn's ``alpha`` does
(``L2(alpha / 2, per_sample=True)``): the penalty then weighs the same against the
data whatever the batch size. A network's regularizers all use one convention.
"""

from __future__ import annotations

import math
import numbers

from numpy.typing import ArrayLike

from . import _validation as val


class Regularizer:
    """``l1 * sum(|w|) + l2 * sum(w ** 2)`` (divided by the minibatch's total sample
    weight with ``per_sample=True``)."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0, per_sample: bool = False) -> None:
        self.l1 = _coefficient(l1, "l1")
        self.l2 = _coefficient(l2, "l2")
        self.per_sample = val.flag(per_sample, "per_sample")

    def penalty(self, weights: ArrayLike) -> float:
        """The penalty of an array of weights (float), summed in float64; the L2 sum
        without a copy of the weights (a layer's weights can be most of a model's
        memory, and a fit evaluates this at its peak)."""
        import numpy as np

        w = np.asarray(weights)
        w = (w if w.dtype.kind == "f" else w.astype(np.float64)).ravel()
        total = 0.0
        if self.l1:
            total += self.l1 * float(np.abs(w).sum(dtype=np.float64))
        if self.l2:
            total += self.l2 * float(np.einsum("i,i->", w, w, dtype=np.float64))
        return total

    def get_config(self) -> dict[str, float | bool]:
        config: dict[str, float | bool] = {"l1": self.l1, "l2": self.l2}
        if self.per_sample:
            config["per_sample"] = True
        return config

    def __repr__(self):
        extra = ", per_sample=True" if self.per_sample else ""
        return f"{type(self).__name__}(l1={self.l1!r}, l2={self.l2!r}{extra})"


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

    def __init__(self, a: float = 0.01, per_sample: bool = False) -> None:
        super().__init__(l1=a, per_sample=per_sample)


class L2(Regularizer):
    """``a * sum(w ** 2)``."""

    def __init__(self, a: float = 0.01, per_sample: bool = False) -> None:
        super().__init__(l2=a, per_sample=per_sample)


class L1L2(Regularizer):
    """``l1 * sum(|w|) + l2 * sum(w ** 2)``."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0, per_sample: bool = False) -> None:
        super().__init__(l1=l1, l2=l2, per_sample=per_sample)


def get(regularizer: Regularizer | dict[str, float | bool] | None) -> Regularizer | None:
    """None, a Regularizer, or its config dict (as saved)."""
    if regularizer is None or isinstance(regularizer, Regularizer):
        return regularizer
    if isinstance(regularizer, dict):
        return Regularizer(**regularizer)  # type: ignore[arg-type]
    raise TypeError(f"a regularizer must be a fastbp.regularizers.Regularizer, got {regularizer!r}")
