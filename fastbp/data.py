"""Fit-time data preparation: inputs and targets checked and converted once, at the
boundary, into what the compiled step reads (the model's dtype, C order, targets
through the Loss, class labels as intp), sample and class weights, and the
validation split."""

from typing import NamedTuple

import numpy as np

from . import _sparse
from . import _validation as val
from .losses import LOSS_BCE, LOSS_CE_LABELS


class Data(NamedTuple):
    """Checked arrays: ``targets`` (float, (n, n_outputs)) or ``labels`` (intp), the
    unused one empty; ``weights`` empty when every row weighs 1."""

    X: np.ndarray
    kind: int
    targets: np.ndarray
    labels: np.ndarray
    weights: np.ndarray

    def rows(self, index):
        """The rows ``index`` (integers, a boolean mask or a slice: views of dense
        arrays) of every array."""

        def pick(a):
            return a[index] if a.size else a

        X = _sparse.take_rows(self.X, index) if _sparse.is_csr(self.X) else self.X[index]
        return Data(X, self.kind, pick(self.targets), pick(self.labels), pick(self.weights))


def inputs(X, dtype, name="X", finite=True, allow_empty=False):
    """X as the compiled calls read it: a C-contiguous float matrix of ``dtype``, or,
    for a SciPy sparse matrix, a checked ``Csr`` (never densified). ``allow_empty``
    accepts 0 rows (predict's empty answer)."""
    if _sparse.is_sparse(X):
        return _sparse.as_csr(X, dtype, name, finite, allow_empty)
    return val.as_float_matrix(X, dtype, name=name, finite=finite, allow_empty=allow_empty)


def prepare(X, y, loss, n_outputs, dtype, names=("X", "y"), finite=True):
    """Check and convert (X, y) for ``loss`` (its kind chosen by the targets given).
    ``finite=False`` skips the scan for NaN and infinity (fit finds them through the
    loss instead)."""
    X = inputs(X, dtype, names[0], finite)
    kind, targets, labels = loss.prepare_targets(y, n_outputs, dtype, names[1], finite)
    val.check_same_length(X, labels if labels.size else targets, names)
    if labels.size:
        targets = np.empty((0, n_outputs), dtype=dtype)
    return Data(X, kind, targets, labels, np.empty(0, dtype=dtype))


def with_weights(data, n_outputs, sample_weight=None, class_weight=None):
    """``data`` with the per-sample weights of ``sample_weight`` times
    ``class_weight`` (a dict or "balanced", as scikit-learn defines it)."""
    n, dtype = data.X.shape[0], data.X.dtype
    weights = None
    if sample_weight is not None:
        try:
            shape = np.shape(sample_weight)
        except ValueError:  # a ragged sequence
            shape = None
        if shape != (n,):
            got = (
                f"a scalar ({sample_weight})"
                if shape == ()
                else "a ragged sequence"
                if shape is None
                else f"shape {shape}"
            )
            raise ValueError(
                f"sample_weight must be 1-D of length n_samples ({n}), one weight per"
                f" sample, got {got}"
            )
        weights = val.as_float_matrix(sample_weight, dtype, name="sample_weight", allow_1d=True)
        weights = np.ascontiguousarray(weights[:, 0])
        if not weights.min() >= 0:  # NaN fails too
            raise ValueError("sample_weight must be finite and >= 0")
        _require_weight(weights, "sample_weight is zero for every sample")
    if class_weight is not None:
        if data.kind != LOSS_CE_LABELS:
            raise ValueError("class_weight needs cross_entropy with class labels")
        per_class = _class_weights(class_weight, data.labels, n_outputs)
        weights = per_class[data.labels].astype(dtype) * (weights if weights is not None else 1)
        _require_weight(weights, "class_weight (with sample_weight) gives every sample weight 0")
    if weights is None:
        return data
    return data._replace(weights=np.ascontiguousarray(weights))


def _require_weight(weights, problem):
    """Refuse a fit with nothing to learn from: every minibatch would be skipped."""
    if weights.size and not weights.max() > 0:
        raise ValueError(f"{problem}: there is nothing to train on; give some samples weight > 0")


def _class_weights(class_weight, labels, k):
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be a dict or 'balanced', got {class_weight!r}")
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        return np.where(
            counts > 0, labels.size / (np.count_nonzero(counts) * np.maximum(counts, 1)), 1.0
        )
    if isinstance(class_weight, dict):
        per_class = np.ones(k)
        for c, w in class_weight.items():
            # A bool is an int to Python but a mask to NumPy (per_class[True] is
            # every class): keys are class labels, nothing else.
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)):
                raise TypeError(
                    f"class_weight keys must be class labels (integers 0 to {k - 1}),"
                    f" got {c!r} of type {type(c).__name__}"
                )
            if not 0 <= c < k:
                raise ValueError(
                    f"class_weight has a key {c!r} that is not a class: the class labels"
                    f" are 0 to {k - 1} (one per output unit)"
                )
            per_class[int(c)] = val.nonnegative_float(w, f"class_weight[{c}]")
        return per_class
    raise TypeError(f"class_weight must be a dict or 'balanced', got {class_weight!r}")


def split(data, fraction, rng, is_classifier):
    """Split into training and validation parts: ``fraction`` of the rows, drawn from
    ``rng``, stratified by class for classification."""
    n = data.X.shape[0]
    strata = None
    if data.kind == LOSS_CE_LABELS:
        strata = data.labels
    elif is_classifier:
        targets = data.targets
        strata = (
            targets.argmax(axis=1)
            if data.kind != LOSS_BCE or targets.shape[1] > 1
            else (targets[:, 0] >= 0.5).astype(np.intp)
        )
    if strata is None:
        held = rng.permutation(n)[: int(round(n * fraction))]
    else:
        held = np.concatenate(
            [
                rng.permutation(np.flatnonzero(strata == c))[
                    : int(round(np.count_nonzero(strata == c) * fraction))
                ]
                for c in np.unique(strata)
            ]
        )
    if held.size == 0 or held.size == n:
        raise ValueError(
            f"validation_split={fraction} of {n} samples leaves an empty training or validation set"
        )
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    if data.weights.size:
        _require_weight(
            data.weights[keep],
            f"validation_split={fraction} holds out every sample of weight > 0",
        )
    held.sort()
    validation = data.rows(held)._replace(weights=np.empty(0, dtype=data.X.dtype))
    check_finite_inputs(validation.X, "X")
    val.check_finite(validation.targets, "y")
    return data.rows(keep), validation


def validation_pair(validation_data):
    """``(X_val, y_val)`` from fit's validation_data."""
    try:
        X_val, y_val = validation_data
    except (TypeError, ValueError):
        raise ValueError("validation_data must be a pair (X_val, y_val)") from None
    return X_val, y_val


def weight_pairs(weights, n_layers, dtype):
    """``set_weights``'s list of (weight, bias) pairs, checked and converted."""
    weights = list(weights)
    if len(weights) != n_layers:
        raise ValueError(f"got {len(weights)} (weight, bias) pairs for {n_layers} layers")
    pairs = []
    for i, pair in enumerate(weights):
        try:
            w, b = pair
        except (TypeError, ValueError):
            raise ValueError(f"entry {i} must be a (weight, bias) pair") from None
        w = val.as_float_matrix(w, dtype, name=f"weight {i}")
        if np.ndim(b) != 1:
            raise ValueError(f"bias {i} must be 1-D, got shape {np.shape(b)}")
        pairs.append((w, val.as_float_matrix(b, dtype, name=f"bias {i}", allow_1d=True)[:, 0]))
    return pairs


def check_classes(classes, n_outputs):
    """partial_fit's ``classes``: exactly the labels 0 to n_outputs - 1."""
    classes = np.asarray(classes)
    if (
        classes.ndim != 1
        or classes.dtype.kind not in "iu"
        or sorted(classes.tolist()) != list(range(n_outputs))
    ):
        raise ValueError(
            f"classes must be the labels 0 to {n_outputs - 1} (one per"
            f" output unit), got {classes.tolist()}"
        )


def without_targets(X, n_outputs):
    """Checked inputs alone (input gradients of a prediction)."""
    return Data(X, 0, np.empty((0, n_outputs), X.dtype), np.empty(0, np.intp), np.empty(0, X.dtype))


def output_index(output, n_outputs):
    """input_gradient's ``output``: a column of the prediction (default 0)."""
    output = 0 if output is None else val.positive_int(output, "output", minimum=0)
    if output >= n_outputs:
        raise ValueError(f"output must be below {n_outputs}, got {output}")
    return output


def total_squares(targets, chunk_elements=8192):
    """sum((targets - column means)^2) in float64: the denominator of R^2. In chunks
    of rows, so that the float64 temporaries stay small (a whole-array temporary
    costs more in fresh pages than the arithmetic)."""
    if not targets.size:
        return 0.0
    means = targets.mean(axis=0, dtype=np.float64)
    rows = max(1, chunk_elements // targets.shape[1])
    total = 0.0
    with np.errstate(invalid="ignore", over="ignore"):  # bad y fails in the step
        for start in range(0, targets.shape[0], rows):
            block = targets[start : start + rows] - means
            total += float(np.einsum("ij,ij->", block, block))
    return total


def check_finite_inputs(X, name):
    """Raise if the inputs (dense or Csr) hold NaN or infinity."""
    if _sparse.is_csr(X):
        _sparse.check_finite(X.values, X.indices, X.indptr, name)
    else:
        val.check_finite(X, name)
