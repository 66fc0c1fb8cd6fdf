"""Fit-time data preparation (fastbp/_validation.py and Sequential.fit's checks; moving
to fastbp/data.py): X and y, NaN and infinity in the data, class labels and targets,
sample counts, validation_data, sample_weight and class_weight.

Every bad input gets a clear Python exception naming the problem (never a crash, a hang
or a silently wrong result), and the harmless conversions (dtype, layout, read-only,
int/bool/float labels) give the same results as clean input.
"""

import numpy as np
import pytest

import fastbp
from fastbp import _threads
from fastbp import _validation as val

from _models import (
    BAD_NDIM,
    NON_NUMERIC,
    NONFINITE,
    D,
    K,
    N,
    bce_model,
    ce_model,
    clf_data,
    fitted_ce,
    fitted_mse,
    mse_model,
    reg_data,
    same_weights,
)

# ---------------------------------------------------------------------------
# shapes and sample counts
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_NDIM))
def test_fit_rejects_X_that_is_not_2d(kind):
    X, y = reg_data()
    model = mse_model()
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        model.fit(BAD_NDIM[kind](X), y, epochs=1)
    assert not model.built


def test_fit_rejects_scalar_X():
    model = mse_model()
    with pytest.raises(ValueError, match=r"2-D"):
        model.fit(3.0, [1.0], epochs=1)


def test_mse_rejects_3d_y():
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"y must be 2-D"):
        mse_model().fit(X, y[:, None, None], epochs=1)


def test_cross_entropy_rejects_3d_y():
    X, y = clf_data()
    with pytest.raises(ValueError, match=r"y must be 2-D"):
        ce_model().fit(X, y[:, None, None], epochs=1)


def test_fit_mismatched_sample_counts_mse():
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"different numbers of samples.*24 and 23"):
        mse_model().fit(X, y[:-1], epochs=1)


def test_fit_mismatched_sample_counts_labels():
    X, y = clf_data()
    with pytest.raises(ValueError, match=r"different numbers of samples"):
        ce_model().fit(X[:-2], y, epochs=1)


def test_validation_data_mismatched_sample_counts():
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"X_val and y_val have different numbers of samples"):
        mse_model().fit(X, y, epochs=1, validation_data=(X, y[:-1]))


@pytest.mark.parametrize("bad", [(1,), (1, 2, 3), "abc", 5])
def test_validation_data_must_be_a_pair(bad):
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"validation_data must be a pair"):
        mse_model().fit(X, y, epochs=1, validation_data=bad)


def test_validation_data_pair_of_scalars():
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"X_val must be 2-D"):
        mse_model().fit(X, y, epochs=1, validation_data=(0, 1))


def test_mse_y_with_wrong_number_of_columns():
    X, y = reg_data()
    y2 = np.column_stack([y, y])
    with pytest.raises(ValueError, match=r"y has 2 column\(s\) but the output layer has 1 unit"):
        mse_model().fit(X, y2, epochs=1)


def test_mse_1d_y_for_a_multi_output_layer():
    X, y = reg_data()
    model = fastbp.Sequential([fastbp.Dense(3)], loss="mse", seed=0)
    with pytest.raises(ValueError, match=r"column"):
        model.fit(X, y, epochs=1)


def test_cross_entropy_soft_targets_with_wrong_width():
    X, y = clf_data()
    onehot = np.eye(K + 1)[y]
    with pytest.raises(ValueError, match=r"4 column\(s\) but the output layer has 3"):
        ce_model().fit(X, onehot, epochs=1)


def test_cross_entropy_soft_targets_negative():
    X, y = clf_data()
    soft = np.eye(K)[y]
    soft[0] = [-0.5, 1.0, 0.5]
    with pytest.raises(ValueError, match=r"negative"):
        ce_model().fit(X, soft, epochs=1)


# ---------------------------------------------------------------------------
# NaN and infinity
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("value,word", NONFINITE)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_rejects_nonfinite_X(value, word, dtype):
    X, y = reg_data()
    X[5, 1] = value
    with pytest.raises(ValueError, match=rf"X contains {word} \(first at index \(5, 1\)\)"):
        mse_model(dtype=dtype).fit(X, y, epochs=1)


@pytest.mark.parametrize("value,word", NONFINITE)
def test_fit_rejects_nonfinite_y(value, word):
    X, y = reg_data()
    y[7] = value
    with pytest.raises(ValueError, match=rf"y contains {word}"):
        mse_model().fit(X, y, epochs=1)


@pytest.mark.parametrize("value,word", NONFINITE)
def test_bce_rejects_nonfinite_y(value, word):
    X, y = reg_data()
    t = (y > 0).astype(float)
    t[3] = value
    with pytest.raises(ValueError, match=rf"y contains {word}"):
        bce_model().fit(X, t, epochs=1)


@pytest.mark.parametrize("value,word", NONFINITE)
def test_cross_entropy_rejects_nonfinite_float_labels(value, word):
    X, y = clf_data()
    labels = y.astype(float)
    labels[2] = value
    with pytest.raises(ValueError, match=rf"y contains {word}"):
        ce_model().fit(X, labels, epochs=1)


@pytest.mark.parametrize("value,word", NONFINITE)
def test_cross_entropy_rejects_nonfinite_soft_targets(value, word):
    X, y = clf_data()
    soft = np.eye(K)[y]
    soft[2, 1] = value
    with pytest.raises(ValueError, match=rf"y contains {word}"):
        ce_model().fit(X, soft, epochs=1)


@pytest.mark.parametrize("value,word", NONFINITE)
def test_validation_X_nonfinite(value, word):
    X, y = reg_data()
    Xv = X.copy()
    Xv[0, 0] = value
    model = mse_model()
    with pytest.raises(ValueError, match=rf"X_val contains {word}"):
        model.fit(X, y, epochs=1, validation_data=(Xv, y))
    assert len(model.history) == 0  # nothing trained before the check


@pytest.mark.parametrize("value,word", NONFINITE)
def test_validation_y_nonfinite(value, word):
    X, y = reg_data()
    yv = y.copy()
    yv[-1] = value
    with pytest.raises(ValueError, match=rf"y_val contains {word}"):
        mse_model().fit(X, y, epochs=1, validation_data=(X, yv))


def test_float64_values_that_overflow_float32_are_rejected():
    # Finite in float64, infinite once converted to the model's float32.
    X, y = reg_data()
    X[4, 0] = 1e300
    with np.errstate(over="ignore"):
        with pytest.raises(ValueError, match=r"X contains infinity \(first at index \(4, 0\)\)"):
            mse_model(dtype="float32").fit(X, y, epochs=1)
    mse_model(dtype="float64").fit(X / 1e300, y, epochs=1)  # fine once scaled


def test_large_finite_values_are_not_mistaken_for_infinity():
    # The fast check sums the array; a sum that overflows must not reject finite data.
    X = np.full((4, 3), 3e38, dtype=np.float32)
    out = val.as_float_matrix(X, np.float32)
    assert out is X
    X[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN"):
        val.as_float_matrix(X, np.float32)


# ---------------------------------------------------------------------------
# class labels and targets
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1, K, K + 10])
def test_cross_entropy_labels_out_of_range(bad):
    X, y = clf_data()
    y = y.copy()
    y[4] = bad
    with pytest.raises(ValueError, match=r"class labels from .* labels must lie in \[0, 2\]"):
        ce_model().fit(X, y, epochs=1)


def test_cross_entropy_labels_out_of_range_in_evaluate_and_validation():
    model, X, y = fitted_ce()
    bad = y.copy()
    bad[0] = K
    with pytest.raises(ValueError, match=r"labels must lie in"):
        model.evaluate(X, bad)
    with pytest.raises(ValueError, match=r"y_val has class labels"):
        model.fit(X, y, epochs=1, validation_data=(X, bad))


def test_cross_entropy_huge_unsigned_label_not_wrapped_into_range():
    X, y = clf_data()
    labels = y.astype(np.uint64)
    labels[0] = np.uint64(2**64 - 1)  # would become -1 if cast blindly
    with pytest.raises(ValueError, match=r"labels must lie in"):
        ce_model().fit(X, labels, epochs=1)


@pytest.mark.parametrize("bad", [1.5, 0.25, -0.5])
def test_cross_entropy_non_integer_labels(bad):
    X, y = clf_data()
    labels = y.astype(float)
    labels[3] = bad
    with pytest.raises(ValueError, match=r"integer class labels.*non-integer"):
        ce_model().fit(X, labels, epochs=1)


def test_cross_entropy_string_labels():
    X, y = clf_data()
    with pytest.raises(ValueError, match=r"y must be numeric"):
        ce_model().fit(X, np.array(["a", "b", "c"] * (N // 3)), epochs=1)


def test_cross_entropy_float_labels_work_like_int_labels():
    X, y = clf_data()
    a, b = ce_model(), ce_model()
    a.fit(X, y, epochs=2, batch_size=8)
    b.fit(X, y.astype(float), epochs=2, batch_size=8)  # 0.0, 1.0, 2.0
    assert set(np.unique(y.astype(float))) == {0.0, 1.0, 2.0}
    assert same_weights(a.get_weights(), b.get_weights())
    assert a.evaluate(X, y) == b.evaluate(X, y.astype(np.float32))


@pytest.mark.parametrize("bad", [-0.1, 1.5, 2.0])
def test_bce_targets_outside_unit_interval(bad):
    X, y = reg_data()
    t = (y > 0).astype(float)
    t[0] = bad
    with pytest.raises(ValueError, match=r"y must lie in \[0, 1\] for binary_cross_entropy"):
        bce_model().fit(X, t, epochs=1)


def test_bce_targets_outside_unit_interval_in_validation():
    X, y = reg_data()
    t = (y > 0).astype(float)
    with pytest.raises(ValueError, match=r"y_val must lie in \[0, 1\]"):
        bce_model().fit(X, t, epochs=1, validation_data=(X, t * 2))


def test_bce_accepts_bool_and_boundary_targets():
    X, y = reg_data()
    model = bce_model()
    model.fit(X, y > 0, epochs=1)
    assert len(model.history) == 1
    assert 0.0 <= model.evaluate(X, (y > 0).astype(float))["accuracy"] <= 1.0


# ---------------------------------------------------------------------------
# empty, non-numeric and complex data
# ---------------------------------------------------------------------------


def test_fit_zero_samples():
    with pytest.raises(ValueError, match=r"X is empty: it has 0 samples"):
        mse_model().fit(np.empty((0, D)), np.empty(0), epochs=1)


def test_fit_zero_features():
    with pytest.raises(ValueError, match=r"X is empty: it has 0 features"):
        mse_model().fit(np.empty((5, 0)), np.zeros(5), epochs=1)


def test_fit_empty_y():
    X, _ = reg_data()
    with pytest.raises(ValueError, match=r"y is empty"):
        mse_model().fit(X, np.empty(0), epochs=1)
    with pytest.raises(ValueError, match=r"y is empty"):
        ce_model().fit(X, np.empty(0, dtype=int), epochs=1)


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_fit_rejects_non_numeric_X(kind):
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"X must be numeric, got non-numeric data"):
        mse_model().fit(NON_NUMERIC[kind](X), y, epochs=1)


def test_fit_rejects_non_numeric_y():
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"y must be numeric"):
        mse_model().fit(X, y.astype(str), epochs=1)
    with pytest.raises(ValueError, match=r"y must be numeric"):
        mse_model().fit(X, y.astype(object), epochs=1)


def test_fit_rejects_complex():
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"X must be numeric, got complex"):
        mse_model().fit(X + 1j, y, epochs=1)
    with pytest.raises(ValueError, match=r"y must be numeric, got complex"):
        mse_model().fit(X, y.astype(complex), epochs=1)
    model, X, _ = fitted_mse()
    with pytest.raises(ValueError, match=r"complex"):
        model.predict(X.astype(np.complex64))


def test_fit_rejects_ragged_lists():
    with pytest.raises(ValueError, match=r"X could not be converted to an array"):
        mse_model().fit([[1.0, 2.0], [3.0]], [1.0, 2.0], epochs=1)


# ---------------------------------------------------------------------------
# feature counts of the validation data
# ---------------------------------------------------------------------------


def test_validation_X_with_wrong_number_of_features():
    X, y = reg_data()
    model = mse_model()
    with pytest.raises(ValueError, match=r"features"):
        model.fit(X, y, epochs=1, validation_data=(X[:, :2], y))
    assert len(model.history) == 0


def test_validation_X_wrong_features_message_names_X_val():
    # The error should say which array is wrong: the validation one, not X.
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"X_val has 2 features"):
        mse_model().fit(X, y, epochs=1, validation_data=(X[:, :2], y))


# ---------------------------------------------------------------------------
# good conversions
# ---------------------------------------------------------------------------


def test_float64_X_to_float32_model():
    X, y = reg_data()
    assert X.dtype == np.float64
    model = mse_model(dtype="float32")
    model.fit(X, y, epochs=2, batch_size=8)
    assert model.flat_params.dtype == np.float32
    for w, b in model.get_weights():
        assert w.dtype == np.float32 and b.dtype == np.float32
    out = model.predict(X)
    assert out.dtype == np.float32 and out.shape == (N, 1)
    np.testing.assert_array_equal(out, model.predict(X.astype(np.float32)))
    assert np.isfinite(model.evaluate(X, y)["loss"])


def test_float32_X_to_float64_model():
    X, y = reg_data()
    model = mse_model(dtype="float64")
    model.fit(X.astype(np.float32), y.astype(np.float32), epochs=1)
    assert model.flat_params.dtype == np.float64
    assert model.predict(X.astype(np.float32)).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint16, np.float16])
def test_int_and_half_X_work(dtype):
    rng = np.random.default_rng(1)
    Xi = rng.integers(0, 5, size=(N, D)).astype(dtype)
    y = Xi.astype(float).sum(axis=1)
    a, b = mse_model(), mse_model()
    a.fit(Xi, y, epochs=2, batch_size=8)
    b.fit(Xi.astype(np.float32), y, epochs=2, batch_size=8)
    assert same_weights(a.get_weights(), b.get_weights())
    np.testing.assert_array_equal(a.predict(Xi), b.predict(Xi.astype(np.float32)))


def test_bool_X_works():
    rng = np.random.default_rng(2)
    Xb = rng.random((N, D)) > 0.5
    y = Xb.sum(axis=1).astype(float)
    a, b = mse_model(), mse_model()
    a.fit(Xb, y, epochs=2, batch_size=8)
    b.fit(Xb.astype(np.float32), y, epochs=2, batch_size=8)
    assert same_weights(a.get_weights(), b.get_weights())
    np.testing.assert_array_equal(a.predict(Xb), b.predict(Xb.astype(np.float32)))


def test_list_input_works():
    X, y = reg_data()
    a, b = mse_model(), mse_model()
    a.fit(X.tolist(), y.tolist(), epochs=1, batch_size=8)
    b.fit(X, y, epochs=1, batch_size=8)
    assert same_weights(a.get_weights(), b.get_weights())


def test_fortran_and_sliced_X_match_c_contiguous():
    rng = np.random.default_rng(3)
    big = rng.normal(size=(2 * N, 2 * D))
    sliced = big[::2, ::2]
    assert not sliced.flags.c_contiguous
    fortran = np.asfortranarray(sliced)
    assert fortran.flags.f_contiguous and not fortran.flags.c_contiguous
    c_copy = np.ascontiguousarray(sliced)
    y = c_copy.sum(axis=1)

    models = [mse_model() for _ in range(3)]
    for model, X in zip(models, (c_copy, fortran, sliced)):
        model.fit(X, y, epochs=2, batch_size=8)
    assert same_weights(models[0].get_weights(), models[1].get_weights())
    assert same_weights(models[0].get_weights(), models[2].get_weights())

    expected = models[0].predict(c_copy)
    np.testing.assert_array_equal(models[0].predict(fortran), expected)
    np.testing.assert_array_equal(models[0].predict(sliced), expected)
    np.testing.assert_array_equal(models[0].predict(c_copy[::-1])[::-1], expected)
    assert models[0].evaluate(sliced, y) == models[0].evaluate(c_copy, y)


def test_non_native_byte_order_X():
    X, y = reg_data()
    swapped = X.astype(X.dtype.newbyteorder(">" if X.dtype.byteorder != ">" else "<"))
    model = mse_model()
    model.fit(X, y, epochs=1)
    np.testing.assert_array_equal(model.predict(swapped), model.predict(X))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_read_only_inputs_work(dtype):
    X, y = reg_data()
    X = X.astype(dtype)
    y = y.astype(dtype)
    ref = mse_model(dtype=dtype)
    ref.fit(X, y, epochs=2, batch_size=8, validation_data=(X, y))
    Xr, yr = X.copy(), y.copy()
    Xr.setflags(write=False)
    yr.setflags(write=False)
    model = mse_model(dtype=dtype)
    model.fit(Xr, yr, epochs=2, batch_size=8, validation_data=(Xr, yr))
    assert same_weights(model.get_weights(), ref.get_weights())
    np.testing.assert_array_equal(model.predict(Xr), ref.predict(X))
    assert model.evaluate(Xr, yr) == ref.evaluate(X, y)
    loss, grads = model.loss_and_gradients(Xr, yr)
    assert np.isfinite(loss)
    np.testing.assert_array_equal(Xr, X)  # input untouched


def test_read_only_labels_work():
    X, y = clf_data()
    labels = y.astype(np.intp)
    labels.setflags(write=False)
    Xr = X.astype(np.float32)
    Xr.setflags(write=False)
    a, b = ce_model(), ce_model()
    a.fit(Xr, labels, epochs=2, batch_size=8)
    b.fit(X, y, epochs=2, batch_size=8)
    assert same_weights(a.get_weights(), b.get_weights())
    assert a.evaluate(Xr, labels) == b.evaluate(X, y)


def test_fit_does_not_modify_inputs():
    X, y = clf_data()
    X0, y0 = X.copy(), y.copy()
    ce_model().fit(X, y, epochs=2, batch_size=4)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


def test_bool_labels_for_cross_entropy():
    X, y = clf_data(k=2)
    a, b = ce_model(k=2), ce_model(k=2)
    a.fit(X, y.astype(bool), epochs=2, batch_size=8)
    b.fit(X, y, epochs=2, batch_size=8)
    assert same_weights(a.get_weights(), b.get_weights())


def test_column_y_for_mse_matches_1d_y():
    X, y = reg_data()
    a, b = mse_model(), mse_model()
    a.fit(X, y, epochs=2, batch_size=8)
    b.fit(X, y[:, None], epochs=2, batch_size=8)
    assert same_weights(a.get_weights(), b.get_weights())


def test_check_same_length_message():
    with pytest.raises(ValueError, match=r"A and B have different numbers of samples: 2 and 3"):
        val.check_same_length(np.zeros((2, 1)), np.zeros(3), ("A", "B"))


# ---------------------------------------------------------------------------
# sample_weight and class_weight
# ---------------------------------------------------------------------------


def one_step(sample_weight=None, class_weight=None, X=None, y=None, threads=1, loss="mse"):
    model = fastbp.Sequential(
        [fastbp.Dense(4, "tanh"), fastbp.Dense(3)],
        loss=loss,
        optimizer=fastbp.SGD(lr=0.5),
        dtype="float64",
        seed=0,
        input_dim=X.shape[1],
        threads=threads,
    )
    model.fit(
        X, y, epochs=1, batch_size=len(X), sample_weight=sample_weight, class_weight=class_weight
    )
    return model


def test_integer_sample_weights_equal_repeated_samples():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(6, 2)), rng.normal(size=(6, 3))
    counts = np.array([1, 3, 0, 2, 1, 1])
    weighted = one_step(counts.astype(float), X=X, y=y)
    repeated = one_step(X=np.repeat(X, counts, axis=0), y=np.repeat(y, counts, axis=0))
    np.testing.assert_allclose(weighted.flat_params, repeated.flat_params, rtol=1e-12)
    assert weighted.history["loss"][0] == pytest.approx(repeated.history["loss"][0], rel=1e-12)
    uniform = one_step(np.full(6, 7.0), X=X, y=y)  # only relative weights matter
    np.testing.assert_allclose(uniform.flat_params, one_step(X=X, y=y).flat_params, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_sample_weights_with_minibatches_and_threads(threads, monkeypatch):
    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(30, 2)), rng.integers(0, 3, 30)
    w = rng.uniform(0.1, 3, 30)
    model = fastbp.Sequential(
        [fastbp.Dense(5, "relu"), fastbp.Dense(3)],
        loss="cross_entropy",
        optimizer=fastbp.SGD(lr=0.2),
        dtype="float64",
        seed=0,
        threads=threads,
    )
    model.fit(X, y, epochs=2, batch_size=7, sample_weight=w)
    reference = fastbp.Sequential(
        [fastbp.Dense(5, "relu"), fastbp.Dense(3)],
        loss="cross_entropy",
        optimizer=fastbp.SGD(lr=0.2),
        dtype="float64",
        seed=0,
        threads=1,
    )
    reference.fit(X, y, epochs=2, batch_size=7, sample_weight=w)
    np.testing.assert_allclose(model.flat_params, reference.flat_params, rtol=1e-10)
    unweighted = fastbp.Sequential(
        [fastbp.Dense(5, "relu"), fastbp.Dense(3)],
        loss="cross_entropy",
        optimizer=fastbp.SGD(lr=0.2),
        dtype="float64",
        seed=0,
    )
    unweighted.fit(X, y, epochs=2, batch_size=7)
    assert not np.allclose(model.flat_params, unweighted.flat_params)


def test_class_weight_dict_and_balanced():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(12, 2)), np.array([0] * 8 + [1] * 3 + [2])
    by_dict = one_step(class_weight={0: 0.5, 2: 4.0}, X=X, y=y, loss="cross_entropy")
    by_sample = one_step(
        sample_weight=np.array([0.5] * 8 + [1.0] * 3 + [4.0]), X=X, y=y, loss="cross_entropy"
    )
    np.testing.assert_array_equal(by_dict.flat_params, by_sample.flat_params)
    balanced = one_step(class_weight="balanced", X=X, y=y, loss="cross_entropy")
    expected = 12 / (3 * np.array([8.0] * 8 + [3.0] * 3 + [1.0]))
    np.testing.assert_allclose(
        balanced.flat_params,
        one_step(sample_weight=expected, X=X, y=y, loss="cross_entropy").flat_params,
        rtol=1e-12,
    )


# A minibatch whose weights are all zero (0/0 is not divergence) is skipped: no
# update and no optimizer step, as a PyTorch loop that skips it before
# optimizer.step(); the epoch's loss is the weighted mean over its samples.


def zero_class_data():
    # Without shuffling, minibatch 0 (rows 0-7) holds class 0 only.
    rng = np.random.default_rng(7)
    X = rng.normal(size=(16, 3))
    y = np.concatenate([np.zeros(8, dtype=int), rng.integers(1, 3, 8)])
    return X, y


def weighted_classifier(optimizer):
    return fastbp.Sequential(
        [fastbp.Dense(5, "tanh"), fastbp.Dense(3)],
        loss="cross_entropy",
        optimizer=optimizer,
        dtype="float64",
        seed=0,
        input_dim=3,
    )


@pytest.mark.parametrize(
    "make_optimizer", [lambda: fastbp.SGD(lr=0.1, momentum=0.9), lambda: fastbp.Adam(lr=0.01)]
)
@pytest.mark.parametrize("threads", [1, 2])
def test_minibatch_without_weight_is_skipped(make_optimizer, threads, monkeypatch):
    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)
    X, y = zero_class_data()
    model = weighted_classifier(make_optimizer())
    model.threads = threads
    history = model.fit(X, y, epochs=3, batch_size=8, shuffle=False, class_weight={0: 0})
    # The same as training on the weighted minibatch alone: momentum and Adam's
    # bias correction would tell an extra (zero-gradient) step.
    alone = weighted_classifier(make_optimizer())
    alone_history = alone.fit(X[8:], y[8:], epochs=3, batch_size=8, shuffle=False)
    assert model.optimizer_state.step == alone.optimizer_state.step == 3
    np.testing.assert_allclose(model.flat_params, alone.flat_params, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(history["loss"], alone_history["loss"], rtol=1e-12)


def test_shuffled_mostly_zero_weights_train(monkeypatch):
    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    weights = np.zeros(20)
    weights[[4, 11]] = [1.0, 3.0]
    results = []
    for threads in (1, 2):
        model = one_step(X=X, y=y, threads=threads)
        model.fit(X, y, epochs=4, batch_size=3, sample_weight=weights)
        assert model.optimizer_state.step == 1 + 4 * 2  # one_step's, then two per epoch
        results.append(model.flat_params.copy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-10, atol=1e-12)


def test_epoch_loss_is_the_weighted_mean_over_the_epoch():
    # Frozen layers: the weights stay, so the epoch's loss is the weighted mean of
    # the samples' losses at those weights, whatever the minibatches.
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 3))
    weights = np.array([0, 0, 0, 2.0, 1, 0, 0, 0, 0.5, 3])
    model = one_step(X=X, y=y)
    for layer in model.layers:
        layer.trainable = False
    history = model.fit(X, y, epochs=1, batch_size=3, sample_weight=weights)
    per_sample = ((model.predict(X) - y) ** 2).mean(axis=1)
    expected = (weights * per_sample).sum() / weights.sum()
    assert history["loss"][-1] == pytest.approx(expected, rel=1e-12)


def test_validation_split_leaving_no_weight_is_refused():
    # Two rows, one held out (the same whatever the weights): weighting the other
    # trains, weighting the held-out one leaves nothing to train on, said up front.
    X, y = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[1.0], [2.0]])
    outcomes = []
    for weighted_row in (0, 1):
        weights = np.zeros(2)
        weights[weighted_row] = 1.0
        model = fastbp.Sequential([fastbp.Dense(1)], seed=0)
        try:
            model.fit(X, y, epochs=2, validation_split=0.5, sample_weight=weights)
            outcomes.append(model.optimizer_state.step)
        except ValueError as error:
            assert "validation_split=0.5 holds out every sample of weight > 0" in str(error)
            outcomes.append("refused")
    assert sorted(outcomes, key=str) == [2, "refused"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(sample_weight=np.ones(5)), r"1-D of length n_samples \(12\).*got shape \(5,\)"),
        (dict(sample_weight=-np.ones(12)), ">= 0"),
        (dict(sample_weight=np.zeros(12)), "zero for every sample: there is nothing to train on"),
        (dict(class_weight={0: 0, 1: 0.0, 2: 0}), "every sample weight 0"),
        (dict(sample_weight=np.ones((12, 1))), r"1-D of length n_samples.*\(12, 1\)"),
        (dict(class_weight={7: 1.0}), "not a class: the class labels are 0 to 2"),
        (dict(class_weight={-1: 1.0}), "not a class"),
        (dict(class_weight={True: 3.0}), "class labels .* got True of type bool"),
        (dict(class_weight={np.True_: 3.0}), "got (np.)?True_? of type bool"),
        (dict(class_weight={1.0: 3.0}), "got 1.0 of type float"),
        (dict(class_weight={"1": 3.0}), "got '1' of type str"),
        (dict(class_weight="even"), "balanced"),
        (dict(class_weight=[1, 2]), "dict"),
    ],
)
def test_weights_checked(kwargs, message):
    X, y = np.ones((12, 2)), np.arange(12) % 3
    model = fastbp.Sequential([fastbp.Dense(3)], loss="cross_entropy")
    with pytest.raises((ValueError, TypeError), match=message):
        model.fit(X, y, epochs=1, **kwargs)


@pytest.mark.parametrize("weight", [2.0, np.float64(2.0), [2.0], [[1.0] * 12], [[1.0], [2.0]]])
def test_sample_weight_not_one_per_sample_says_what_it_must_be(weight):
    # sample_weight=2.0 was reported as "must be 2-D (n_samples, n_features)".
    X, y = np.ones((12, 2)), np.arange(12) % 3
    model = fastbp.Sequential([fastbp.Dense(3)], loss="cross_entropy")
    with pytest.raises(ValueError, match=r"^sample_weight must be 1-D of length n_samples \(12\)"):
        model.fit(X, y, epochs=1, sample_weight=weight)
    with pytest.raises(ValueError, match=r"got a scalar \(2\.0\)|got shape|ragged"):
        model.fit(X, y, epochs=1, sample_weight=weight)


def test_class_weight_keys_are_labels_not_masks():
    # {True: 3} once weighted every class by 3 (NumPy read True as a mask); a
    # NumPy integer key is a label like any other.
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(12, 2)), np.arange(12) % 3
    with pytest.raises(TypeError, match="class labels"):
        one_step(class_weight={True: 3.0}, X=X, y=y, loss="cross_entropy")
    by_key = one_step(class_weight={np.int64(1): 3.0}, X=X, y=y, loss="cross_entropy")
    by_sample = one_step(sample_weight=np.where(y == 1, 3.0, 1.0), X=X, y=y, loss="cross_entropy")
    np.testing.assert_array_equal(by_key.flat_params, by_sample.flat_params)


def test_class_weight_needs_labels():
    with pytest.raises(ValueError, match="class labels"):
        fastbp.Sequential([fastbp.Dense(1)], loss="mse").fit(
            np.ones((4, 2)), np.ones(4), class_weight={0: 2.0}
        )


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (1000, 9), (5, 20000)])
def test_total_squares_in_chunks_equals_the_two_pass_formula(shape):
    # Offset 1e3 against spread 3: the centred two-pass sum, not sum(t^2) - n mean^2.
    t = (np.random.default_rng(0).normal(size=shape) * 3 + 1e3).astype(np.float32)
    exact = t.astype(np.float64)
    expected = float(((exact - exact.mean(axis=0)) ** 2).sum())
    assert fastbp.data.total_squares(t, chunk_elements=64) == pytest.approx(expected, rel=1e-12)


# -- tables -----------------------------------------------------------------------


def test_a_dataframe_mixing_bool_and_number_columns_is_numbers():
    # NumPy turns such a frame into objects: "X must be numeric, got ... dtype object".
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    flags, values, counts = rng.random(30) > 0.5, rng.normal(size=30), rng.integers(0, 9, 30)
    frame = pd.DataFrame({"flag": flags, "value": values, "count": counts})
    assert np.asarray(frame).dtype == object
    y = rng.integers(0, 3, 30)
    as_numbers = np.column_stack([flags.astype(float), values, counts.astype(float)])
    models = []
    for X in (frame, as_numbers):
        model = ce_model(k=3, dtype="float64", seed=0)
        model.fit(X, y, epochs=2, batch_size=8)
        models.append(model)
    np.testing.assert_array_equal(models[0].flat_params, models[1].flat_params)
    np.testing.assert_array_equal(models[0].predict(frame), models[1].predict(as_numbers))
    # A nullable boolean column too; a text column is still refused, by name.
    frame["flag"] = frame["flag"].astype("boolean")
    np.testing.assert_array_equal(models[0].predict(frame), models[1].predict(as_numbers))
    frame["name"] = "a"
    with pytest.raises(ValueError, match="X must be numeric, got non-numeric data of dtype object"):
        models[0].predict(frame)
