"""What the command line does to a table before the model sees it, and undoes after.

- The task: ``classification`` when the target holds text, or integers with at
  most ``MAX_CLASSES`` distinct values; ``regression`` otherwise (``--task``
  overrides).
- Features: standardized with the training data's mean and standard deviation
  (a constant column keeps scale 1), stored in the model file
  (``Sequential.preprocessing``) and applied again at predict time.
- Targets: class names encoded as 0 to K - 1 (``fastbp._labels``); a regression
  target standardized like a feature, predictions scaled back.
- Missing cells (empty, NA, NaN): ``error`` names the first; ``drop`` drops the
  rows; ``impute`` fills features with the training mean (rows whose target is
  missing are dropped: a target cannot be imputed).

Errors are ``fastbp._table.DataError`` naming the file, row and column.
"""

from __future__ import annotations

import numpy as np

from ._labels import LabelEncoder
from ._schema import MAX_TEXT
from ._table import DataError

MAX_CLASSES = 20
MISSING = ("error", "drop", "impute")


def infer_task(table, task=None):
    """``task``, or the one the target suggests (see the module)."""
    if task is not None:
        if task == "regression" and table.target_is_text:
            value = table.target_text[0]
            raise DataError(
                f"{table.path}: column {table.target_name!r} holds text ({value!r}):"
                " regression needs a numeric target"
            )
        return task
    if table.target_is_text:
        return "classification"
    values = table.target[~np.isnan(table.target)]
    if values.size and np.all(values == np.round(values)):
        if np.unique(values).size <= MAX_CLASSES:
            return "classification"
    return "regression"


def handle_missing(table, how, fill=None, need_target=True):
    """Apply the ``how`` rule (``MISSING``) to ``table`` in place. ``fill``: the
    per-feature values to impute (None: the table's own means). Returns the number
    of rows dropped."""
    X = table.X
    missing_target = table.target_missing if need_target else None
    has_missing_target = missing_target is not None and missing_target.any()
    if table.missing_at is None and not has_missing_target:
        return 0
    if how == "error":
        if table.missing_at is not None:
            row, column, line = table.missing_at
            raise DataError(
                f"{table.path}: row {row} (line {line}), column {column!r}: a missing value"
                " (empty, NA or NaN); --missing drop or --missing impute handles such rows"
            )
        i = int(np.flatnonzero(missing_target)[0])
        raise DataError(
            f"{table.path}: row {table.rows[i]} (line {table.lines[i]}), column"
            f" {table.target_name!r}: a missing target; --missing drop drops such rows"
        )
    rows_missing = np.isnan(X).any(axis=1) if table.missing_at is not None else None
    if how == "impute" and rows_missing is not None:
        if fill is None:
            fill = np.nanmean(X, axis=0)  # a column of only NaN has no mean
            empty = np.flatnonzero(np.isnan(fill))
            if empty.size:
                raise DataError(
                    f"{table.path}: column {table.features[empty[0]]!r} has no values to"
                    " impute from"
                )
        for j in range(X.shape[1]):
            column = X[:, j]
            column[np.isnan(column)] = fill[j]
        rows_missing = None
    drop = rows_missing
    if has_missing_target:
        drop = missing_target if drop is None else drop | missing_target
    if drop is None or not drop.any():
        return 0
    table.take(~drop)
    if table.X.shape[0] == 0:
        raise DataError(f"{table.path}: every row has a missing value: nothing is left")
    table.missing_at = None
    return int(np.count_nonzero(drop))


def check_names(table):
    for name in table.features + [table.target_name or ""]:
        if len(name) > MAX_TEXT:
            raise DataError(
                f"{table.path}: line 1: the column name {name[:40]!r}... is longer than"
                f" {MAX_TEXT} characters"
            )


def fit(table, task):
    """The preprocessing section for ``table`` (a training table without missing
    values), and the table's X standardized in place and its encoded targets.
    Returns (preprocessing, y)."""
    check_names(table)
    X = table.X
    mean, scale = _mean_and_std(X)
    scale[~(scale > 1e-12)] = 1.0
    _standardize(X, mean, scale)
    section = {
        "features": list(table.features),
        "mean": [float(v) for v in mean],
        "scale": [float(v) for v in scale],
        "target": table.target_name,
        "task": task,
        "classes": None,
        "target_mean": 0.0,
        "target_scale": 1.0,
    }
    if task == "classification":
        if table.target_is_text:
            encoder, y = LabelEncoder.from_text(table.target_text, table.target_codes)
        else:
            encoder, y = LabelEncoder.from_numbers(table.target)
        # the texts of the rows kept (after dropping) may be fewer
        present = np.unique(y)
        if present.size < len(encoder.classes):
            encoder = LabelEncoder([encoder.classes[c] for c in present])
            y = np.searchsorted(present, y).astype(np.int32)
        if len(encoder.classes) < 2:
            raise DataError(
                f"{table.path}: column {table.target_name!r} has a single class"
                f" ({encoder.classes[0]!r}): classification needs at least two"
            )
        for name in encoder.classes:
            if len(name) > MAX_TEXT:
                raise DataError(
                    f"{table.path}: column {table.target_name!r}: the class name"
                    f" {name[:40]!r}... is longer than {MAX_TEXT} characters"
                )
        section["classes"] = encoder.classes
        return section, y.astype(np.intp)
    target = table.target
    target_mean, target_scale = float(target.mean()), float(target.std())
    if not target_scale > 1e-12:
        target_scale = 1.0
    section["target_mean"], section["target_scale"] = target_mean, target_scale
    return section, ((target - target_mean) / target_scale).astype(np.float32)


def _mean_and_std(X, rows=1 << 15):
    """Column means and standard deviations in float64, two passes over blocks of
    rows (NumPy's ``std`` would make a float64 temporary of X's size)."""
    total = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], rows):
        total += X[start : start + rows].sum(axis=0, dtype=np.float64)
    mean = total / X.shape[0]
    squares = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], rows):
        deviation = X[start : start + rows].astype(np.float64) - mean
        squares += np.einsum("ij,ij->j", deviation, deviation)
    return mean, np.sqrt(squares / X.shape[0])


def _standardize(X, mean, scale):
    """In place, a column at a time (no temporary of X's size)."""
    for j in range(X.shape[1]):
        column = X[:, j]
        column -= np.float32(mean[j])
        column /= np.float32(scale[j])


def features(section, table):
    """Standardize ``table.X`` in place with the stored statistics."""
    _standardize(table.X, section["mean"], section["scale"])
    return table.X


def fill_values(section):
    """The training means, to impute missing features at predict time."""
    return np.asarray(section["mean"], dtype=np.float32)


def targets(section, table):
    """The encoded targets of an evaluation table: class codes or standardized
    values. An unknown class raises DataError naming its row."""
    if section["task"] == "regression":
        if table.target_is_text:
            i = int(np.flatnonzero(table.target_codes >= 0)[0])
            value = table.target_text[table.target_codes[i]]
            raise DataError(
                f"{table.path}: row {table.rows[i]} (line {table.lines[i]}), column"
                f" {table.target_name!r}: {value!r} is not a number (the model predicts numbers)"
            )
        return table.target
    encoder = LabelEncoder(section["classes"])
    if table.target_is_text:
        names = [table.target_text[c] if c >= 0 else None for c in table.target_codes]
        codes, unknown = encoder.encode_names(names)
        bad = None if unknown is None else names[unknown]
    else:
        codes, unknown = encoder.encode_numbers(table.target)
        bad = None if unknown is None else table.target[unknown]
    if unknown is not None:
        raise DataError(
            f"{table.path}: row {table.rows[unknown]} (line {table.lines[unknown]}), column"
            f" {table.target_name!r}: class {bad!r} was not seen in training (the classes are"
            f" {', '.join(repr(c) for c in encoder.classes[:12])})"
        )
    return codes.astype(np.intp)


def outputs(section, predictions):
    """Regression predictions in the target's units."""
    return predictions * section["target_scale"] + section["target_mean"]


def metrics(section, model, X, y):
    """Held-out metrics in the data's units: classification accuracy and log loss;
    regression R^2, MAE and RMSE."""
    predicted = model.predict(X)
    if section["task"] == "classification":
        p = np.clip(predicted[np.arange(len(y)), y].astype(np.float64), 1e-15, 1.0)
        return {
            "accuracy": float(np.mean(predicted.argmax(axis=1) == y)),
            "log_loss": float(-np.log(p).mean()),
        }
    truth = np.asarray(y, dtype=np.float64)
    guess = outputs(section, predicted[:, 0].astype(np.float64))
    error = guess - truth
    total = np.sum((truth - truth.mean()) ** 2)
    return {
        "r2": float(1 - np.sum(error**2) / total) if total > 0 else float("nan"),
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
    }
