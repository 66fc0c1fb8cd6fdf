"""Property-based tests of the public API (hypothesis): predict, evaluate and fit on
inputs of every shape, dtype, memory layout and value that a user may hand them.

Each case either works and gives what ``fastbp._reference`` computes (the forward
pass, and for float64 one epoch of SGD), or raises the documented error: ValueError
or TypeError with a message that names the problem, FloatingPointError when
training on values near the limits of the dtype diverges. Never a crash, a hang,
another exception or silently wrong numbers.

What is drawn:

- models: float32 or float64; 1, 2, 3 or 9 inputs; 0 to 2 hidden layers of 1, 3, 7,
  9 or 17 units (not multiples of 8) with any activation, or a residual block;
  mse (any output activation), cross_entropy, binary_cross_entropy or poisson
  (their own output activations);
- X: 0, 1, 2, 5 or 33 rows; the model's width, one more or less, or 0 columns, or
  1-D; bool, int8 to int64, uint8, uint64, float16 to float64, complex, object,
  strings, nested lists; C or Fortran order, negative strides, every other column
  of a wider array, read-only, a read-only np.memmap of a file; normal values, or
  one NaN, infinity, 1e38, 1e300, 65504 or a denormal among them;
- y: labels as int8 to int64, uint8, bool or float, negative, out of range, not
  integers, NaN, in a column; targets of the wrong width or length, outside [0, 1]
  (binary cross-entropy) or negative (Poisson), class probabilities;
- batch sizes of 1, 3, 32 and 1000 (more than the data).

Profiles (registered in tests/conftest.py): "fuzz-ci" (the default; derandomized,
a fixed set of cases, about 30 s) and "fuzz-long" (random, 20 times the cases):
``FASTBP_FUZZ_PROFILE=long pytest tests/test_fuzz_api.py``.
"""

import itertools
import math
import os
import re
import warnings

import numpy as np
import pytest
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import fastbp
from fastbp import _reference

import _refmodel

PROFILE = settings.get_profile("fuzz-" + os.environ.get("FASTBP_FUZZ_PROFILE", "ci"))
# Examples per test in the CI profile: the long profile multiplies them by 20.
SCALE = 20 if os.environ.get("FASTBP_FUZZ_PROFILE") == "long" else 1


def fuzz(examples):
    return settings(PROFILE, max_examples=examples * SCALE)


HIDDEN_ACTIVATIONS = [
    "identity",
    "relu",
    "leaky_relu",
    "tanh",
    "sigmoid",
    "elu",
    "gelu",
    "softplus",
]
OUTPUT_ACTIVATION = {
    "cross_entropy": "softmax",
    "binary_cross_entropy": "sigmoid",
    "poisson": "exponential",
}
NUMERIC = [
    "float64",
    "bool",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint64",
    "float16",
    "float32",
    "list",
]
NOT_NUMERIC = ["complex64", "complex128", "object", "str"]
LAYOUTS = ["C", "F", "reversed", "every_other_column", "readonly", "memmap"]
SPECIALS = [np.nan, np.inf, -np.inf, 1e38, -1e38, 1e300, 65504.0, 1e-310, 1e-40]
EXTREME = 1e4  # a value beyond this may make training diverge (FloatingPointError)

# The documented errors, by problem: one of them must be what a bad case raises.
PROBLEMS = {
    "non_numeric": r"must be numeric",
    "not_2d": r"must be 2-D",
    "no_rows": r"is empty",
    "no_columns": r"is empty: it has 0 features",
    "width": r"has \d+ features, but the model expects \d+",
    "nonfinite": r"contains (NaN|infinity)",
    "length": r"different numbers of samples",
    "labels_range": r"class labels from -?\d+ to -?\d+, but the output layer",
    "labels_integer": r"must hold integer class labels",
    "labels_column": r"for cross_entropy give class labels as a 1-D array",
    "y_width": r"column\(s\) but the output layer has",
    "bce_range": r"must lie in \[0, 1\] for binary_cross_entropy",
    "poisson_range": r"must be >= 0 for the poisson loss",
    "probabilities": r"rows must sum to 1|negative class probabilities",
    "y_shape": r"must be 1-D class labels",
}


# -- models -------------------------------------------------------------------------


@st.composite
def models(draw, dtypes=("float32", "float64")):
    dtype = draw(st.sampled_from(dtypes))
    n_inputs = draw(st.sampled_from([1, 2, 3, 9]))
    loss = draw(st.sampled_from(["mse", "cross_entropy", "binary_cross_entropy", "poisson"]))
    layers = []
    if draw(st.booleans()) and draw(st.booleans()):
        layers.append(
            fastbp.Residual([fastbp.Dense(n_inputs, draw(st.sampled_from(["tanh", "relu"])))])
        )
    for width in draw(st.lists(st.sampled_from([1, 3, 7, 9, 17]), max_size=2)):
        layers.append(fastbp.Dense(width, draw(st.sampled_from(HIDDEN_ACTIVATIONS))))
    n_outputs = draw(st.sampled_from([2, 3, 5] if loss == "cross_entropy" else [1, 2, 3]))
    output = OUTPUT_ACTIVATION.get(loss) or draw(st.sampled_from(["identity", *HIDDEN_ACTIVATIONS]))
    layers.append(fastbp.Dense(n_outputs, output))
    seed = draw(st.integers(0, 2**16))
    return fastbp.Sequential(layers, loss=loss, dtype=dtype, seed=seed, input_dim=n_inputs)


# -- inputs -------------------------------------------------------------------------


class Case:
    """An input as handed to fastbp and what is wrong with it (``problems``)."""

    def __init__(self, value, problems, converted, extreme):
        self.value, self.problems = value, problems
        self.converted = converted  # as the model's dtype, when it converts at all
        self.extreme = extreme


_memmaps = itertools.count()


def _layout(arr, layout, directory):
    if layout == "F":
        return np.asfortranarray(arr)
    if layout == "reversed":  # negative strides, the same values in the same places
        flip = (slice(None, None, -1),) * arr.ndim
        return np.ascontiguousarray(arr[flip])[flip]
    if layout == "every_other_column" and arr.ndim == 2:
        wide = np.zeros((arr.shape[0], 2 * arr.shape[1]), dtype=arr.dtype)
        wide[:, ::2] = arr
        return wide[:, ::2]
    if layout == "readonly":
        arr = arr.copy()
        arr.flags.writeable = False
        return arr
    if layout == "memmap" and arr.dtype != object and arr.size:
        path = directory / f"x{next(_memmaps)}.dat"
        out = np.memmap(path, dtype=arr.dtype, mode="w+", shape=arr.shape)
        out[...] = arr
        out.flush()
        del out
        return np.memmap(path, dtype=arr.dtype, mode="r", shape=arr.shape)
    return arr


def _cast(values, kind):
    """values (float64) as ``kind``: integers and bools from rounded values."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if kind == "bool":
            return values > 0
        if kind.startswith(("int", "uint")):
            info = np.iinfo(kind)
            return np.clip(np.round(values), info.min, info.max).astype(kind)
        if kind == "str":
            return values.astype(str)
        if kind == "object":
            return values.astype(object)
        if kind == "list":
            return values.tolist()
        return values.astype(kind)


@st.composite
def inputs(draw, n_inputs, model_dtype, directory, rows=None, clean=False):
    """X for a model of ``n_inputs`` features (see the module); ``clean``: numbers of
    the right shape, any dtype and layout."""
    # Most cases are valid (and compared with the reference), the rest flawed in
    # one or more ways.
    # (Hypothesis draws the first entry of a list most often: a valid one.)
    n = draw(st.sampled_from([33, 5, 1, 2, 33, 5, 1, 2, 33, 0])) if rows is None else rows
    flawed = [] if clean else ["more", "fewer", "none", "1d"]
    shape_kind = draw(st.sampled_from(["right"] * 12 + flawed))
    d = {"right": n_inputs, "more": n_inputs + 1, "fewer": n_inputs - 1, "none": 0, "1d": n_inputs}[
        shape_kind
    ]
    kind = draw(st.sampled_from(NUMERIC * 3 + ([] if clean else NOT_NUMERIC)))
    scale = draw(st.sampled_from([1.0, 3.0, 100.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.normal(size=(n, d)) * scale
    special = draw(st.sampled_from([None] * len(SPECIALS) + ([] if clean else SPECIALS)))
    if (
        special is not None
        and values.size
        and kind not in ("bool",)
        and not kind.startswith(("int", "uint"))
    ):
        values[rng.integers(n), rng.integers(d)] = special
    if shape_kind == "1d":
        values = values[0] if n else values[:, 0]
    given = _cast(values, kind)
    layout = draw(st.sampled_from(LAYOUTS))
    if kind != "list":
        given = _layout(given, layout, directory)
    note(f"X: {kind} {np.shape(given)} layout={layout} special={special}")
    problems = set()
    as_array = np.asarray(given)
    converted = None
    if as_array.dtype.kind not in "biuf":
        problems.add("non_numeric")
    elif as_array.ndim != 2:
        problems.add("not_2d")
    else:
        with np.errstate(all="ignore"):
            converted = as_array.astype(np.uint8 if as_array.dtype == bool else as_array.dtype)
            converted = converted.astype(model_dtype)
        if as_array.shape[0] == 0:
            problems.add("no_rows")
        if as_array.shape[1] == 0:
            problems.add("no_columns")
        elif as_array.shape[1] != n_inputs:
            problems.add("width")
        if converted.size and not np.isfinite(converted).all():
            problems.add("nonfinite")
    extreme = converted is not None and converted.size and np.abs(converted).max() > EXTREME
    return Case(given, problems, converted, bool(extreme))


# -- targets ------------------------------------------------------------------------


@st.composite
def targets(draw, model, n, directory, clean=False):
    """y for ``model`` and n samples (see the module), with what is wrong with it;
    ``clean``: nothing."""
    bad = (lambda flaws: []) if clean else (lambda flaws: flaws)
    loss, k = model.loss.name, model.n_outputs
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    problems = set()
    length = draw(st.sampled_from([n] * 18 + bad([n + 1, max(n - 1, 0)])))
    if length != n:
        problems.add("length")
    if loss == "cross_entropy" and draw(st.booleans()):  # class labels
        form = draw(st.sampled_from(["int64", "int8", "uint8", "bool", "float", *bad(["column"])]))
        flaws = {
            "bool": [None],
            "column": [None],
            "float": ["negative", "too_large", "fraction", "nan"],
        }
        flaw = draw(st.sampled_from([None] * 6 + bad(flaws.get(form, ["negative", "too_large"]))))
        values = rng.integers(0, 2 if form == "bool" else k, length).astype(np.float64)
        if length and flaw:
            values[rng.integers(length)] = {
                "negative": -1,
                "too_large": k,
                "fraction": 0.5,
                "nan": np.nan,
            }[flaw]
            problems.add(
                {
                    "negative": "labels_range",
                    "too_large": "labels_range",
                    "fraction": "labels_integer",
                    "nan": "nonfinite",
                }[flaw]
            )
        with np.errstate(all="ignore"):  # -1 as uint8 is 255: still out of range
            y = (
                values != 0
                if form == "bool"
                else values
                if form in ("float", "column")
                else values.astype(form)
            )
        if form == "column":
            y = y.reshape(-1, 1)
            problems.add("labels_column")
        if not length:
            problems.add("no_rows")
        note(f"y: {form} labels, flaw={flaw}, {problems}")
        return y, problems
    width = draw(st.sampled_from([k] * 12 + bad([k + 1])))
    if width != k:
        problems.add("y_width")
    values = rng.random((length, width))
    if loss == "cross_entropy":
        values /= values.sum(axis=1, keepdims=True)
    elif loss == "mse":
        values = rng.normal(size=(length, width))
    elif loss == "poisson":
        values = np.floor(values * 5)
    flaw = draw(st.sampled_from([None] * 8 + bad(["negative", "above_one", "nan", "inf"])))
    if length and flaw:
        i, j = rng.integers(length), rng.integers(width)
        values[i, j] = {"negative": -0.5, "above_one": 1.5, "nan": np.nan, "inf": np.inf}[flaw]
        if flaw in ("nan", "inf"):
            problems.add("nonfinite")
        elif loss == "binary_cross_entropy":
            problems.add("bce_range")
        elif loss == "poisson" and flaw == "negative":
            problems.add("poisson_range")
        elif loss == "cross_entropy":
            problems.add("probabilities")
    y = values[:, 0] if width == 1 and draw(st.booleans()) else values
    if not length:
        problems.add("no_rows")
    y = _layout(y, draw(st.sampled_from(LAYOUTS)), directory)
    note(f"y: {np.shape(y)} flaw={flaw} {problems}")
    return y, problems


# -- the oracle ---------------------------------------------------------------------


def _lipschitz(name, z, error, param):
    """A bound on |f'| near z (elementwise)."""
    if name in ("identity", "relu", "tanh", "softplus"):
        return 1.0
    if name == "sigmoid":
        return 0.25
    if name == "leaky_relu":
        return max(1.0, abs(param))
    if name == "elu":
        return max(1.0, param)
    if name == "gelu":
        return 1.13  # max of Phi(z) + z phi(z)
    if name == "exponential":
        with np.errstate(over="ignore"):
            return np.exp(z + error)
    raise AssertionError(name)


def forward_with_bound(model, X):
    """The reference's output of ``predict(X)`` (float64, from the model's weights and
    X as the model's dtype) and, per entry, a first-order bound on how far a forward
    pass in the model's dtype may lie from it: each product sum of k terms errs by at
    most (k + 2) eps sum|terms| (plus underflow, k denormal spacings), each
    activation by 8 eps |f| (the vector math is within 4 ulp) plus its slope times
    the error of its input, plus the smallest normal number (the vector exp gives 0
    where the result would be subnormal). Returns (output, bound, overflows): ``overflows`` when a
    magnitude along the way comes near the dtype's largest value, where IEEE
    overflow to infinity is the expected result."""
    info = np.finfo(model.dtype)
    eps, tiny, normal = float(info.eps), float(info.smallest_subnormal), float(info.tiny)
    net = _refmodel.network(model)
    weights = [(w.astype(np.float64), b.astype(np.float64)) for w, b in model.get_weights()]
    x0 = X.astype(np.float64)
    x, err = x0, np.zeros_like(x0)
    outs, errs = [], []
    biggest = float(np.abs(x0).max())
    with np.errstate(over="ignore", invalid="ignore"):
        for (W, b), name, skip, param in zip(
            weights, net["activations"], net["skips"], net["act_params"]
        ):
            n_in = W.shape[0]
            magnitude = np.abs(x) @ np.abs(W) + np.abs(b)
            z = x @ W + b
            err_z = err @ np.abs(W) + (n_in + 2) * eps * magnitude + (n_in + 1) * tiny
            a = _reference.activate(name, z, param)
            err_a = _lipschitz(name, z, err_z, param) * err_z + 8 * eps * np.abs(a) + normal
            if skip is not None:
                source, source_err = (x0, 0.0) if skip == -1 else (outs[skip], errs[skip])
                a = a + source
                err_a = err_a + source_err + eps * np.abs(a)
            biggest = max(biggest, float(np.max(magnitude + err_z)), float(np.max(np.abs(a))))
            outs.append(a)
            errs.append(err_a)
            x, err = a, err_a
        final = OUTPUT_ACTIVATION.get(model.loss.name, "identity")
        if final == "softmax":
            out = _reference.softmax(x)
            bound = 2 * err.max(axis=1, keepdims=True) + 8 * eps * out + normal
        else:
            out = _reference.activate(final, x)
            bound = _lipschitz(final, x, err, None) * err + 8 * eps * np.abs(out) + normal
        if final != "identity":
            biggest = max(biggest, float(np.max(np.abs(out))))
    overflows = not math.isfinite(biggest) or biggest > float(info.max) / 4
    return out, bound, overflows


def record(label):
    """A hypothesis event (the statistics of --hypothesis-show-statistics)."""
    if currently_in_test_context():
        event(label)


def check_prediction(model, X, got):
    """``got`` is predict(X) for checked, finite X of the model's dtype."""
    assert got.shape == (X.shape[0], model.n_outputs) and got.dtype == model.dtype
    expected, bound, overflows = forward_with_bound(model, X)
    if overflows:
        record("predict: overflows the dtype (shape checked)")
        return
    record("predict: matched the reference")
    assert np.isfinite(got).all(), "a finite forward pass gave NaN or infinity"
    # Factor 2: the bound is first-order. It is a worst case: in float32 about 1e-4
    # where the error is nearer 1e-7 (the kernel tests hold each kernel to a few
    # ulp); what it is for is a row, column, layout or dtype mixed up.
    excess = np.abs(got - expected) - 2 * bound
    assert (excess <= 0).all(), (
        f"predict differs from the reference by {np.abs(got - expected).max():.3g}, above"
        f" the bound {bound.max():.3g}"
    )


def expect_refusal(call, problems):
    """``call`` raises a documented error naming one of ``problems``."""
    event("refused: " + " + ".join(sorted(problems)))
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    message = str(info.value)
    patterns = [PROBLEMS[p] for p in problems]
    assert any(re.search(p, message) for p in patterns), (
        f"{type(info.value).__name__}: {message!r} names none of {sorted(problems)}"
    )


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# -- the properties -----------------------------------------------------------------


@fuzz(900)
@given(data=st.data())
def test_predict_any_input(directory, data):
    model = data.draw(models())
    case = data.draw(inputs(model.input_dim, model.dtype, directory))
    if not case.problems:
        check_prediction(model, case.converted, model.predict(case.value))
        return
    if case.problems == {"no_rows"}:  # predict on 0 rows: refused, or an empty array
        event("predict: 0 rows")
        try:
            got = model.predict(case.value)
        except ValueError as error:
            assert re.search(PROBLEMS["no_rows"], str(error))
        else:
            assert got.shape == (0, model.n_outputs) and got.dtype == model.dtype
        return
    expect_refusal(lambda: model.predict(case.value), case.problems)


@fuzz(700)
@given(data=st.data())
def test_fit_and_evaluate_any_input(directory, data):
    model = data.draw(models())
    case = data.draw(inputs(model.input_dim, model.dtype, directory))
    n = len(case.value) if np.ndim(case.value) >= 1 else 0
    y, y_problems = data.draw(targets(model, n, directory))
    problems = case.problems | y_problems
    batch_size = data.draw(st.sampled_from([1, 3, 32, 1000]))
    before = model.flat_params.copy()
    if problems:
        expect_refusal(lambda: model.fit(case.value, y, epochs=1, batch_size=batch_size), problems)
        # Refused before training, or rolled back: the weights are unchanged.
        np.testing.assert_array_equal(model.flat_params, before)
        expect_refusal(lambda: model.evaluate(case.value, y), problems)
        return
    try:
        history = model.fit(case.value, y, epochs=1, batch_size=batch_size)
    except FloatingPointError as error:
        # An IEEE overflow (a loss or weights that became infinite or NaN) is real;
        # an exploding but finite loss only on values near the dtype's limits.
        message = str(error)
        np.testing.assert_array_equal(model.flat_params, before)  # rolled back
        assert "training diverged" in message
        overflowed = re.search(r"became (NaN or infinite|-?inf|nan)\b", message)
        assert overflowed or case.extreme or forward_with_bound(model, case.converted)[2], (
            f"diverged on values within {EXTREME} that do not overflow: {message}"
        )
        event("fit: diverged (" + ("overflow" if overflowed else "exploding loss") + ")")
        return
    assert len(history.epoch) == 1 and np.isfinite(history["loss"][0])
    assert np.isfinite(model.flat_params).all()
    check_prediction(model, case.converted, model.predict(case.value))
    metrics = model.evaluate(case.value, y)
    event("fit: trained, predict and evaluate checked")
    assert set(metrics) == set(fastbp.inference.metric_names(model.loss))


@fuzz(250)
@given(data=st.data())
def test_one_epoch_of_sgd_matches_the_reference(directory, data):
    """In float64 on numbers of any dtype and layout: one epoch of SGD (rows in
    storage order) gives the reference's loss and weights, or, where fastbp reports
    divergence, the reference's loss did explode. The two differ in the order of
    their float64 sums (about 1e-16 relative) and in the last bits of tanh, exp and
    the like; a saturated activation (1 - a^2 near 1e-8) amplifies that to about
    1e-8 of a weight's update, so the updates must agree to 1e-6 of the largest."""
    model = data.draw(models(dtypes=["float64"]))
    model.optimizer = fastbp.SGD(lr=0.01, momentum=data.draw(st.sampled_from([0.0, 0.9])))
    case = data.draw(inputs(model.input_dim, model.dtype, directory, rows=33, clean=True))
    y, y_problems = data.draw(targets(model, 33, directory, clean=True))
    assert not case.problems and not y_problems
    batch_size = data.draw(st.sampled_from([1, 3, 32, 1000]))
    start = model.get_weights()
    weights = [(w.copy(), b.copy()) for w, b in start]
    net = _refmodel.network(model)
    y_ref = np.asarray(y)
    if model.loss.name == "cross_entropy" and y_ref.ndim == 1:
        y_ref = y_ref.astype(np.intp)
    else:
        y_ref = y_ref.astype(np.float64).reshape(33, -1)
    with np.errstate(all="ignore"):
        start_loss = _reference.loss_and_gradients(start, case.converted, y_ref, **net)[0]
        expected_loss = _reference.train_epoch(
            weights, case.converted, y_ref, batch_size, _refmodel.optimizer(model), **net
        )
    finite = math.isfinite(expected_loss) and all(np.isfinite(w).all() for p in weights for w in p)
    try:
        history = model.fit(case.value, y, epochs=1, batch_size=batch_size, shuffle=False)
    except FloatingPointError as error:
        # Never a false alarm: the reference overflowed too, or its epoch loss (the
        # same computation as fastbp's) exploded over the loss at the start, which
        # is at most fastbp's reference loss.
        event("sgd: diverged, as the reference does")
        exploded = expected_loss > 0.5 * fastbp.trainer.EXPLOSION * abs(start_loss)
        assert not finite or exploded, f"{error} (the reference's loss: {expected_loss})"
        np.testing.assert_array_equal(
            model.flat_params, np.concatenate([p.ravel() for pair in start for p in pair])
        )
        return
    assert finite, "the reference overflows, fastbp did not"
    event("sgd: compared")
    assert history["loss"][0] == pytest.approx(expected_loss, rel=1e-6)

    def updates(after):
        return np.concatenate(
            [
                p.ravel() - s.ravel()
                for pair, begin in zip(after, start)
                for p, s in zip(pair, begin)
            ]
        )

    got, expected = updates(model.get_weights()), updates(weights)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * np.abs(expected).max() + 1e-300)


@pytest.mark.parametrize("dtype,error", [("float32", 1e-3), ("float64", 1e-9)])
def test_the_oracle_catches_a_wrong_prediction(dtype, error):
    """The bound is no blanket: predict passes; predict off by ``error`` (relative),
    or with two rows swapped, fails."""
    model = fastbp.Sequential(
        [fastbp.Dense(9, "tanh"), fastbp.Dense(7, "gelu"), fastbp.Dense(3, "softmax")],
        dtype=dtype,
        seed=0,
        input_dim=5,
    )
    X = np.random.default_rng(0).normal(size=(33, 5)).astype(dtype)
    got = model.predict(X)
    check_prediction(model, X, got)
    with pytest.raises(AssertionError, match="differs from the reference"):
        check_prediction(model, X, got * (1 + error))
    with pytest.raises(AssertionError, match="differs from the reference"):
        check_prediction(model, X, got[[1, 0, *range(2, 33)]])
