"""Input checks, done once per call at the Python boundary.

Every function here either returns an array the kernels can use as it is
(C-contiguous, of the model's dtype) or raises an exception that names the problem.
"""

import numbers

import numpy as np


def as_float_matrix(X, dtype, name="X", allow_1d=False, finite=True, allow_empty=False):
    """Return ``X`` as a finite, non-empty, C-contiguous, aligned 2-D array of
    ``dtype``.

    Converts once: an array that already has the right dtype and layout is returned
    without a copy. ``allow_1d`` turns a 1-D array into a single column.
    ``finite=False`` leaves the scan for NaN and infinity to the caller.
    """
    if (
        type(X) is np.ndarray
        and X.ndim == 2
        and X.dtype == dtype
        and X.flags.c_contiguous
        and X.flags.aligned
        and X.shape[0]
        and X.shape[1]
    ):
        # Already what the kernels read (the usual case, and the one-row predict of
        # a service): no conversion, only the finiteness scan.
        if finite:
            check_finite(X, name)
        return X
    arr = _numeric_array(X, name)
    if arr.ndim == 1 and allow_1d:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features), got an array of {arr.ndim} dimension(s)"
            f" with shape {arr.shape}"
            + ("; reshape a single sample with x.reshape(1, -1)" if arr.ndim == 1 else "")
        )
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: it has 0 features")
    with np.errstate(over="ignore"):  # an overflow to infinity is reported below
        # (a view into a bytes buffer may be misaligned: the compiled calls read
        # aligned values, so it is copied)
        arr = np.require(arr, dtype=dtype, requirements=["C_CONTIGUOUS", "ALIGNED"])
    if finite:
        check_finite(arr, name)
    return arr


def all_finite(arr):
    """Whether every entry of a float array is finite, without a boolean temporary
    in the common case."""
    if arr.size <= 4096:  # small: the exact check is as cheap as the sum, and quieter
        return bool(np.isfinite(arr).all())
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(arr, axis=None)):
            return True
    return bool(np.isfinite(arr).all())


def check_finite(arr, name):
    # A finite sum proves every entry finite; a sum that is not (NaN, infinity or
    # an overflow) gets the exact check.
    if not all_finite(arr):
        bad = np.argwhere(~np.isfinite(arr))[0]
        kind = "NaN" if np.isnan(arr[tuple(bad)]) else "infinity"
        raise ValueError(f"{name} contains {kind} (first at index {tuple(int(i) for i in bad)})")


def as_labels(y, n_classes, name="y"):
    """Return integer class labels in ``[0, n_classes)`` as a C-contiguous intp array."""
    arr = _numeric_array(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype.kind == "f":
        check_finite(arr, name)
        if not np.all(arr == np.round(arr)):
            raise ValueError(
                f"{name} must hold integer class labels for cross-entropy; found non-integer"
                f" values such as {arr[arr != np.round(arr)][0]!r}"
            )
    labels = np.ascontiguousarray(arr, dtype=np.intp)
    low, high = labels.min(), labels.max()
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"{name} has class labels from {low} to {high}, but the output layer has"
            f" {n_classes} units: labels must lie in [0, {n_classes - 1}]"
        )
    return labels


def check_same_length(X, y, names=("X", "y")):
    if X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} have different numbers of samples:"
            f" {X.shape[0]} and {y.shape[0]}"
        )


def positive_int(value, name, minimum=1, maximum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return int(value)


def flag(value, name):
    """A switch: True or False (a NumPy bool too). Anything else is refused, not read
    as its truth value: ``bool("no")`` and ``bool("batch")`` are True."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def nonnegative_float(value, name):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value < 0
    ):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def fraction(value, name):
    """A number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def float_dtype(dtype):
    """Return np.float32 or np.float64 for a dtype given by name or object."""
    if dtype is None:
        raise ValueError("dtype must be 'float32' or 'float64', got None")
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt.type


def _numeric_array(X, name):
    try:
        arr = np.asarray(X)
        if arr.dtype == object and _numeric_columns(X):
            # A table mixing bool and number columns (a pandas DataFrame): NumPy
            # gives objects, but every column is a number (a bool is 0 or 1).
            arr = np.asarray(X.to_numpy(dtype=np.float64))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    if arr.dtype.kind not in "iuf":
        what = "complex" if arr.dtype.kind == "c" else "non-numeric"
        raise ValueError(f"{name} must be numeric, got {what} data of dtype {arr.dtype}")
    return arr


def _numeric_columns(X):
    """Whether X is a table (a pandas DataFrame) whose columns are all bool, integer
    or float, NumPy's or pandas' nullable kinds."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "to_numpy") or np.ndim(dtypes) != 1:
        return False
    return all(getattr(dtype, "kind", "O") in "biuf" for dtype in dtypes)
