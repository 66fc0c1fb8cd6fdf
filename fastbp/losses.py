"""Loss functions.

Each loss computes its value and the delta ``dL/d output`` in one compiled pass.
Losses are means over the batch: ``CrossEntropy`` averages over samples, the
others (``MSE``, ``MAE``, ``Huber``, ``Poisson``, ``BinaryCrossEntropy``) over every
element, as PyTorch's losses do, or, with ``reduction="sum_outputs"``, sum over each
sample's outputs and average over samples (scikit-learn's convention). With sample
weights the mean is weighted: ``sum(w_i loss_i) / sum(w_i)``. ``SquaredError`` is
scikit-learn's ``squared_error``: half the squared error, summed over outputs.

``CrossEntropy`` and ``BinaryCrossEntropy`` take logits: the softmax (or sigmoid)
is fused into the loss, so that the delta is simply ``probabilities - targets``
and no Jacobian is ever built. In a ``Sequential`` model a final ``softmax``
(``sigmoid``) layer before these losses is recognized and fused, never applied twice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _codes
from . import _validation as val
from ._backend import core

# Kernel codes: the one list, in fastbp._codes.
LOSS_MSE = _codes.LOSSES["mse"]
LOSS_CE_LABELS = _codes.LOSSES["cross_entropy_labels"]
LOSS_CE_SOFT = _codes.LOSSES["cross_entropy"]
LOSS_BCE = _codes.LOSSES["binary_cross_entropy"]
LOSS_MAE = _codes.LOSSES["mae"]
LOSS_HUBER = _codes.LOSSES["huber"]
LOSS_POISSON = _codes.LOSSES["poisson"]


class Loss:
    """Base class of the losses.

    Used by hand::

        value = loss.forward(output, y)   # mean loss over the batch
        delta = loss.backward()           # dL/d output, same shape as output

    Attributes
    ----------
    name : str
        The name a model accepts in place of the instance.
    output_activation : str
        The activation fused into the loss ("softmax", "sigmoid" or "identity");
        ``predict`` applies it to the network's output.
    is_classifier : bool
        Whether ``evaluate`` reports an accuracy.
    """

    name = None
    output_activation = "identity"
    is_classifier = False
    param = 0.0  # read by the kernel (Huber's delta)
    reduction = "mean"
    _factor = 1.0  # a constant factor on the loss (SquaredError's 1/2)

    def __init__(self, reduction: str = "mean") -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(
                f"reduction must be one of {REDUCTIONS}, got {reduction!r}: 'mean' averages"
                " over every element, 'sum_outputs' sums each sample's outputs"
            )
        self.reduction = reduction
        self._delta: NDArray[np.floating[Any]] | None = None

    def row_scale(self, n_outputs: int) -> float:
        """A sample's loss as a multiple of the sum over its ``n_outputs`` outputs:
        ``1 / n_outputs`` averages over every element (``reduction="mean"``)."""
        return self._factor / n_outputs if self.reduction == "mean" else self._factor

    # -- preparing targets (used by the model, once per call) -------------------
    def prepare_targets(
        self, y: ArrayLike, n_outputs: int, dtype: DTypeLike, name: str = "y", finite: bool = True
    ) -> tuple[int, NDArray[np.floating[Any]], NDArray[np.intp]]:
        """Return ``(kind, targets, labels)`` for the kernels.

        ``targets`` is a float matrix of shape (n_samples, n_outputs) and ``labels``
        an intp vector; the one the loss does not use is empty. ``finite=False``
        leaves the scan of float targets for NaN and infinity to the caller.
        """
        targets = val.as_float_matrix(y, dtype, name=name, allow_1d=True, finite=finite)
        self._check_width(targets, n_outputs, name)
        return self._float_kind, targets, np.empty(0, dtype=np.intp)

    _float_kind = LOSS_MSE

    def _check_width(self, targets, n_outputs, name):
        if targets.shape[1] != n_outputs:
            raise ValueError(
                f"{name} has {targets.shape[1]} column(s) but the output layer has"
                f" {n_outputs} unit(s)"
            )

    def check_output_units(self, n_outputs: int) -> None:
        """Raise if the output layer's width does not suit this loss."""

    def check_output_activation(self, activation: str | None) -> None:
        """Raise if the output layer's activation does not suit this loss.

        The rule: a loss that fuses an output activation (cross-entropy's softmax,
        binary cross-entropy's sigmoid, Poisson's exponential) takes logits
        (log-rates): the last layer is linear (no activation) or ends with that very
        activation, which is fused. Any other (a sigmoid or tanh under
        cross-entropy, a softmax under binary cross-entropy, a relu under Poisson)
        squashes the logits and leaves probabilities (rates) that cannot reach what
        the targets need. The regression losses (mse, mae, huber) take any output
        activation (a sigmoid for targets in [0, 1] is legitimate).
        """
        fused = self.output_activation
        if fused == "identity" or activation in (None, "identity", fused):
            return
        raise ValueError(
            f"a final {activation!r} activation does not suit the {self.name} loss, which"
            f" takes logits and applies {fused} itself: end the network with a Dense"
            f" layer without activation, or with activation={fused!r} (fused into the"
            " loss)"
        )

    # -- hand-written use --------------------------------------------------------
    def forward(self, output: ArrayLike, y: ArrayLike) -> float:
        """Return the mean loss of ``output`` (logits for fused losses) against ``y``
        and keep its gradient for ``backward``."""
        arr = np.asarray(output)
        dtype = arr.dtype.type if arr.dtype in (np.float32, np.float64) else np.float64
        out = val.as_float_matrix(arr, dtype, name="output")
        self.check_output_units(out.shape[1])
        kind, targets, labels = self.prepare_targets(y, out.shape[1], dtype)
        val.check_same_length(out, targets if labels.size == 0 else labels, ("output", "y"))
        if labels.size:
            targets = np.empty((0, out.shape[1]), dtype=dtype)
        delta = np.empty_like(out)
        value, _ = core().loss_delta(
            kind, out, targets, labels, delta, self.param, self.row_scale(out.shape[1])
        )
        self._delta = delta
        return value

    __call__ = forward

    def backward(self) -> NDArray[np.floating[Any]]:
        """Return ``dL/d output`` of the last ``forward`` call."""
        if self._delta is None:
            raise RuntimeError("call forward(output, y) before backward()")
        return self._delta

    def get_config(self) -> dict[str, Any]:
        return {} if self.reduction == "mean" else {"reduction": self.reduction}

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self.get_config().items())
        return f"{type(self).__name__}({args})"


# How a sample's outputs combine: averaged ("mean", PyTorch's and Keras's losses) or
# summed ("sum_outputs", scikit-learn's MLP losses). Either way, samples are averaged.
REDUCTIONS = ("mean", "sum_outputs")


class MSE(Loss):
    """Mean squared error, averaged over every element:
    ``L = mean((output - y) ** 2)``, ``dL/d output = 2 (output - y) / output.size``."""

    name = "mse"
    _float_kind = LOSS_MSE


class SquaredError(MSE):
    """Half the squared error, summed over a sample's outputs and averaged over
    samples (scikit-learn's ``squared_error``):
    ``L = mean_i(sum_j (output_ij - y_ij) ** 2) / 2``, ``dL/d output = (output - y) /
    n_samples``."""

    name = "squared_error"
    _factor = 0.5

    def __init__(self) -> None:
        super().__init__(reduction="sum_outputs")

    def get_config(self) -> dict[str, Any]:
        return {}


class CrossEntropy(Loss):
    """Softmax cross-entropy on logits, averaged over samples.

    ``L = mean_i(logsumexp(z_i) - z_i[y_i])`` for integer class labels ``y`` in
    ``[0, n_classes)``; with probability (or one-hot) targets of shape
    (n_samples, n_classes), ``L = mean_i(-sum_j t_ij log softmax(z_i)_j)``.
    ``dL/dz = (softmax(z) - t) / n_samples``.
    """

    name = "cross_entropy"
    output_activation = "softmax"
    is_classifier = True

    def row_scale(self, n_outputs: int) -> float:
        return 1.0  # a sample's loss is already one number, whatever the reduction

    def check_output_units(self, n_outputs: int) -> None:
        if n_outputs < 2:
            raise ValueError(
                "cross_entropy needs an output layer of at least 2 units (one per class);"
                " for a single output unit use binary_cross_entropy"
            )

    def prepare_targets(
        self, y: ArrayLike, n_outputs: int, dtype: DTypeLike, name: str = "y", finite: bool = True
    ) -> tuple[int, NDArray[np.floating[Any]], NDArray[np.intp]]:
        arr = np.asarray(y)
        if arr.ndim == 1:
            labels = val.as_labels(arr, n_outputs, name=name)
            return LOSS_CE_LABELS, np.empty((0, n_outputs), dtype=dtype), labels
        if arr.ndim == 2 and arr.shape[1] == 1:
            raise ValueError(
                f"{name} has shape {arr.shape}: for cross_entropy give class labels as a"
                f" 1-D array of shape (n_samples,) ({name}.ravel()), or class probabilities"
                f" of shape (n_samples, {n_outputs})"
            )
        targets = val.as_float_matrix(arr, dtype, name=name, finite=finite)
        self._check_width(targets, n_outputs, name)
        if (targets < 0).any():
            val.check_finite(targets, name)
            raise ValueError(f"{name} holds negative class probabilities")
        _check_rows_sum_to_one(targets, arr.dtype, name)
        return LOSS_CE_SOFT, targets, np.empty(0, dtype=np.intp)


def _check_rows_sum_to_one(targets, given_dtype, name):
    """Class probabilities: each row sums to 1, within the rounding of the sum of
    ``k`` entries (``(k + 4) eps`` with the eps of the coarser of the given and the
    model's precision; one-hot and normalized rows always pass). Rows holding NaN or
    infinity are left to the finiteness check, which names them."""
    k = targets.shape[1]
    eps = max(
        np.finfo(targets.dtype).eps,
        np.finfo(given_dtype).eps if given_dtype.kind == "f" else 0.0,
    )
    sums = targets.sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(np.isfinite(sums) & (np.abs(sums - 1) > (k + 4) * eps))
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"{name}'s rows must sum to 1 for cross_entropy with class probabilities,"
            f" but row {row} sums to {sums[row]:.6g} ({bad.size} of {len(sums)} rows"
            f" do not): normalize them ({name} / {name}.sum(axis=1, keepdims=True)), or"
            " use binary_cross_entropy for independent (multi-label) targets"
        )


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on logits (sigmoid fused), averaged over every element.

    ``L = mean(max(z, 0) - z t + log(1 + exp(-|z|)))``, stable for any ``z``;
    ``dL/dz = (sigmoid(z) - t) / z.size``. Targets lie in [0, 1].
    """

    name = "binary_cross_entropy"
    output_activation = "sigmoid"
    is_classifier = True
    _float_kind = LOSS_BCE

    def prepare_targets(
        self, y: ArrayLike, n_outputs: int, dtype: DTypeLike, name: str = "y", finite: bool = True
    ) -> tuple[int, NDArray[np.floating[Any]], NDArray[np.intp]]:
        kind, targets, labels = super().prepare_targets(y, n_outputs, dtype, name, finite)
        if not (targets.min() >= 0 and targets.max() <= 1):  # NaN fails too
            val.check_finite(targets, name)
            raise ValueError(
                f"{name} must lie in [0, 1] for binary_cross_entropy, found values from"
                f" {targets.min()} to {targets.max()}"
            )
        return kind, targets, labels


class MAE(Loss):
    """Mean absolute error, averaged over every element: ``L = mean(|output - y|)``,
    ``dL/d output = sign(output - y) / output.size`` (0 where they are equal)."""

    name = "mae"
    _float_kind = LOSS_MAE


class Huber(Loss):
    """Huber loss (PyTorch's ``HuberLoss``), averaged over every element: with
    ``r = output - y``, ``r^2 / 2`` where ``|r| <= delta`` and
    ``delta (|r| - delta / 2)`` beyond; quadratic near the target, linear (robust to
    outliers) far from it.

    Parameters
    ----------
    delta : float, default 1.0
        Where the loss turns from quadratic to linear, > 0.
    """

    name = "huber"
    _float_kind = LOSS_HUBER

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if (
            isinstance(delta, bool)
            or not isinstance(delta, (int, float, np.floating))
            or not np.isfinite(delta)
            or delta <= 0
        ):
            raise ValueError(f"Huber delta must be a finite number > 0, got {delta!r}")
        self.param = self.delta = float(delta)

    def get_config(self) -> dict[str, Any]:
        return {"delta": self.delta, **super().get_config()}


class Poisson(Loss):
    """Poisson negative log-likelihood on log-rates (PyTorch's ``PoissonNLLLoss``
    with ``log_input=True``), averaged over every element: the network outputs
    ``z = log(rate)``; ``L = mean(exp(z) - y z)``, ``dL/dz = (exp(z) - y) / z.size``.
    ``predict`` returns the rates ``exp(z)``; a final "exponential" layer is fused.
    Targets are counts (or any values) >= 0.

    Parameters
    ----------
    half_deviance : bool, default False
        Report half the Poisson deviance, ``exp(z) - y z + y log(y) - y`` (zero at a
        perfect fit; scikit-learn's ``poisson`` loss) instead of the negative
        log-likelihood. The two differ by a constant of the data: the gradient is the
        same.
    reduction : {"mean", "sum_outputs"}, default "mean"
    """

    name = "poisson"
    output_activation = "exponential"
    _float_kind = LOSS_POISSON

    def __init__(self, half_deviance: bool = False, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.half_deviance = val.flag(half_deviance, "half_deviance")
        self.param = 1.0 if half_deviance else 0.0

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        return {"half_deviance": True, **config} if self.half_deviance else config

    def prepare_targets(
        self, y: ArrayLike, n_outputs: int, dtype: DTypeLike, name: str = "y", finite: bool = True
    ) -> tuple[int, NDArray[np.floating[Any]], NDArray[np.intp]]:
        kind, targets, labels = super().prepare_targets(y, n_outputs, dtype, name, finite)
        if not targets.min() >= 0:  # NaN fails too
            val.check_finite(targets, name)
            raise ValueError(f"{name} must be >= 0 for the poisson loss, found {targets.min()}")
        return kind, targets, labels


LOSSES = {
    cls.name: cls
    for cls in (MSE, SquaredError, CrossEntropy, BinaryCrossEntropy, MAE, Huber, Poisson)
}
_ALIASES = {
    "mean_squared_error": "mse",
    "categorical_crossentropy": "cross_entropy",
    "sparse_categorical_crossentropy": "cross_entropy",
    "crossentropy": "cross_entropy",
    "binary_crossentropy": "binary_cross_entropy",
    "bce": "binary_cross_entropy",
    "mean_absolute_error": "mae",
    "poisson_nll": "poisson",
}


def get_loss(loss: str | Loss | type[Loss]) -> Loss:
    """Return a Loss instance for a name or an instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):
        return loss()
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a name or a Loss instance, not {type(loss).__name__}")
    key = _ALIASES.get(loss.lower(), loss.lower())
    if key not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {sorted(LOSSES)}")
    return LOSSES[key]()
