"""Input validation: every bad input gets a clear Python exception naming the problem
(never a crash, a hang or a silently wrong result), and the harmless conversions
(dtype, layout, read-only, int/bool/float labels) give the same results as clean input.
"""
import numpy as np
import pytest

import fastbp
from fastbp import _validation as val


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

N, D, K = 24, 3, 3


def reg_data(n=N, d=D, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.1 * rng.normal(size=n)
    return X, y


def clf_data(n=N, d=D, k=K, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.arange(n) % k
    return X, y


def mse_model(**kwargs):
    kwargs.setdefault("optimizer", "sgd")
    kwargs.setdefault("seed", 0)
    return fastbp.Sequential([fastbp.Dense(4, "tanh"), fastbp.Dense(1)], loss="mse", **kwargs)


def ce_model(k=K, **kwargs):
    kwargs.setdefault("seed", 0)
    return fastbp.Sequential([fastbp.Dense(4, "relu"), fastbp.Dense(k, "softmax")],
                             loss="cross_entropy", **kwargs)


def bce_model(**kwargs):
    kwargs.setdefault("seed", 0)
    return fastbp.Sequential([fastbp.Dense(4, "tanh"), fastbp.Dense(1, "sigmoid")],
                             loss="binary_cross_entropy", **kwargs)


def fitted_mse():
    X, y = reg_data()
    model = mse_model()
    model.fit(X, y, epochs=1, batch_size=8)
    return model, X, y


def fitted_ce():
    X, y = clf_data()
    model = ce_model()
    model.fit(X, y, epochs=1, batch_size=8)
    return model, X, y


def all_finite(model):
    return all(np.isfinite(w).all() and np.isfinite(b).all() for w, b in model.get_weights())


def same_weights(a, b):
    return all(np.array_equal(wa, wb) and np.array_equal(ba, bb)
               for (wa, ba), (wb, bb) in zip(a, b))


# ---------------------------------------------------------------------------
# shapes
# ---------------------------------------------------------------------------

BAD_NDIM = {
    "1-D": lambda X: X[:, 0],
    "3-D": lambda X: X[:, :, None],
}


@pytest.mark.parametrize("kind", list(BAD_NDIM))
def test_fit_rejects_X_that_is_not_2d(kind):
    X, y = reg_data()
    model = mse_model()
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        model.fit(BAD_NDIM[kind](X), y, epochs=1)
    assert not model.built


@pytest.mark.parametrize("kind", list(BAD_NDIM))
def test_predict_rejects_X_that_is_not_2d(kind):
    model, X, _ = fitted_mse()
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        model.predict(BAD_NDIM[kind](X))


def test_predict_1d_suggests_reshape():
    model, X, _ = fitted_mse()
    with pytest.raises(ValueError, match=r"2-D.*reshape"):
        model.predict(X[0])


@pytest.mark.parametrize("kind", list(BAD_NDIM))
def test_evaluate_rejects_X_that_is_not_2d(kind):
    model, X, y = fitted_mse()
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        model.evaluate(BAD_NDIM[kind](X), y)


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


def test_evaluate_mismatched_sample_counts():
    model, X, y = fitted_mse()
    with pytest.raises(ValueError, match=r"different numbers of samples"):
        model.evaluate(X, y[:5])


def test_validation_data_mismatched_sample_counts():
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"X_val and y_val have different numbers of samples"):
        mse_model().fit(X, y, epochs=1, validation_data=(X, y[:-1]))


def test_loss_and_gradients_mismatched_sample_counts():
    model, X, y = fitted_mse()
    with pytest.raises(ValueError, match=r"different numbers of samples"):
        model.loss_and_gradients(X, y[:-1])


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


def test_cross_entropy_rejects_single_unit_output():
    X, y = clf_data()
    model = fastbp.Sequential([fastbp.Dense(4, "relu"), fastbp.Dense(1)],
                              loss="cross_entropy", seed=0)
    with pytest.raises(ValueError, match=r"cross_entropy needs an output layer of at least 2 units"):
        model.fit(X, y % 1, epochs=1)
    assert not model.built


def test_cross_entropy_single_unit_rejected_at_construction_with_input_dim():
    with pytest.raises(ValueError, match=r"at least 2 units"):
        fastbp.Sequential([fastbp.Dense(1, "softmax")], input_dim=3)


# ---------------------------------------------------------------------------
# NaN and infinity
# ---------------------------------------------------------------------------

NONFINITE = [(np.nan, "NaN"), (np.inf, "infinity"), (-np.inf, "infinity")]


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


@pytest.mark.parametrize("value,word", NONFINITE)
def test_predict_and_evaluate_reject_nonfinite_X(value, word):
    model, X, y = fitted_mse()
    X = X.copy()
    X[1, 2] = value
    with pytest.raises(ValueError, match=rf"X contains {word}"):
        model.predict(X)
    with pytest.raises(ValueError, match=rf"X contains {word}"):
        model.evaluate(X, y)


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


def test_loss_and_gradients_rejects_nan():
    model, X, y = fitted_mse()
    y = y.copy()
    y[0] = np.nan
    with pytest.raises(ValueError, match=r"y contains NaN"):
        model.loss_and_gradients(X, y)


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


def test_predict_zero_samples_and_empty_list():
    model, _, _ = fitted_mse()
    with pytest.raises(ValueError, match=r"empty.*0 samples"):
        model.predict(np.empty((0, D)))
    with pytest.raises(ValueError, match=r"2-D"):
        model.predict([])


NON_NUMERIC = {
    "strings": lambda X: X.astype(str),
    "object": lambda X: X.astype(object),
    "None": lambda X: None,
    "datetime": lambda X: np.zeros(X.shape, dtype="datetime64[s]"),
}


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_fit_rejects_non_numeric_X(kind):
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"X must be numeric, got non-numeric data"):
        mse_model().fit(NON_NUMERIC[kind](X), y, epochs=1)


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_predict_rejects_non_numeric_X(kind):
    model, X, _ = fitted_mse()
    with pytest.raises(ValueError, match=r"X must be numeric"):
        model.predict(NON_NUMERIC[kind](X))


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
# fit arguments
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, -32, np.int64(0)])
def test_batch_size_must_be_positive(bad):
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        mse_model().fit(X, y, epochs=1, batch_size=bad)


@pytest.mark.parametrize("bad", [8.0, 2.5, True, False, "32", None])
def test_batch_size_must_be_an_integer(bad):
    X, y = reg_data()
    model = mse_model()
    with pytest.raises(TypeError, match=r"batch_size must be an integer"):
        model.fit(X, y, epochs=1, batch_size=bad)
    assert not model.built


def test_batch_size_numpy_integer_and_larger_than_data_work():
    X, y = reg_data()
    model = mse_model()
    model.fit(X, y, epochs=1, batch_size=np.int32(5))
    model.fit(X, y, epochs=1, batch_size=10**6)
    assert len(model.history) == 2


@pytest.mark.parametrize("bad", [-1, -100])
def test_epochs_must_not_be_negative(bad):
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"epochs must be >= 0"):
        mse_model().fit(X, y, epochs=bad)


@pytest.mark.parametrize("bad", [1.5, 2.0, True, None, "3"])
def test_epochs_must_be_an_integer(bad):
    X, y = reg_data()
    with pytest.raises(TypeError, match=r"epochs must be an integer"):
        mse_model().fit(X, y, epochs=bad)


def test_zero_epochs_builds_without_training():
    X, y = reg_data()
    model = mse_model()
    model.fit(X, y, epochs=0)
    assert model.built and len(model.history) == 0


# ---------------------------------------------------------------------------
# names and types of activations, losses, optimizers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["relu6", "swishy", "", "soft max"])
def test_unknown_activation(name):
    with pytest.raises(ValueError, match=r"unknown activation.*expected one of"):
        fastbp.Dense(3, name)


@pytest.mark.parametrize("bad", [3, 1.0, ["relu"], np.tanh])
def test_activation_of_wrong_type(bad):
    with pytest.raises(TypeError, match=r"activation must be a name"):
        fastbp.Dense(3, bad)


@pytest.mark.parametrize("name", ["hinge", "kld", ""])
def test_unknown_loss(name):
    with pytest.raises(ValueError, match=r"unknown loss.*expected one of"):
        fastbp.Sequential([fastbp.Dense(1)], loss=name)


@pytest.mark.parametrize("bad", [3, 1.5, ["mse"], fastbp.SGD])
def test_loss_of_wrong_type(bad):
    with pytest.raises(TypeError, match=r"loss must be a name or a Loss instance"):
        fastbp.Sequential([fastbp.Dense(1)], loss=bad)


@pytest.mark.parametrize("name", ["nadam", "lbfgs", ""])
def test_unknown_optimizer(name):
    with pytest.raises(ValueError, match=r"unknown optimizer.*expected one of"):
        fastbp.Sequential([fastbp.Dense(1)], optimizer=name)


@pytest.mark.parametrize("bad", [3, None, 0.01, fastbp.MSE()])
def test_optimizer_of_wrong_type(bad):
    with pytest.raises(TypeError, match=r"optimizer must be a name or an Optimizer instance"):
        fastbp.Sequential([fastbp.Dense(1)], optimizer=bad)


def test_names_are_case_insensitive_and_classes_accepted():
    model = fastbp.Sequential([fastbp.Dense(2, "ReLU"), fastbp.Dense(1)],
                              loss="MSE", optimizer="SGD")
    assert model.layers[0].activation == "relu"
    assert isinstance(model.loss, fastbp.MSE) and isinstance(model.optimizer, fastbp.SGD)
    model = fastbp.Sequential([fastbp.Dense(1)], loss=fastbp.MSE, optimizer=fastbp.Adam)
    assert isinstance(model.optimizer, fastbp.Adam)


# ---------------------------------------------------------------------------
# optimizer hyperparameters
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [fastbp.SGD, fastbp.Adam])
@pytest.mark.parametrize("lr,pattern", [
    (0, r"lr must be > 0"),
    (0.0, r"lr must be > 0"),
    (-0.1, r"lr must be > 0"),
    (float("nan"), r"lr must be a finite number"),
    (np.float32("nan"), r"lr must be a finite number"),
    (float("inf"), r"lr must be a finite number"),
    ("0.1", r"lr must be a finite number"),
    (None, r"lr must be a finite number"),
    (True, r"lr must be a finite number"),
])
def test_learning_rate(cls, lr, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(lr=lr)


@pytest.mark.parametrize("momentum,pattern", [
    (-0.1, r"momentum must be >= 0"),
    (1.0, r"momentum must be < 1"),
    (1.5, r"momentum must be < 1"),
    (float("nan"), r"momentum must be a finite number"),
])
def test_sgd_momentum(momentum, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastbp.SGD(momentum=momentum)


def test_sgd_nesterov_needs_momentum():
    with pytest.raises(ValueError, match=r"nesterov=True needs a momentum > 0"):
        fastbp.SGD(nesterov=True)
    with pytest.raises(ValueError, match=r"nesterov must be True or False"):
        fastbp.SGD(momentum=0.9, nesterov="yes")
    assert fastbp.SGD(momentum=0.9, nesterov=True).nesterov is True


@pytest.mark.parametrize("betas,pattern", [
    ((1.0, 0.999), r"beta1 must be < 1"),
    ((-0.1, 0.999), r"beta1 must be >= 0"),
    ((0.9, 1.0), r"beta2 must be < 1"),
    ((0.9, -0.5), r"beta2 must be >= 0"),
    ((0.9, float("nan")), r"beta2 must be a finite number"),
    ((0.9,), r"betas must be a pair"),
    ((0.9, 0.99, 0.999), r"betas must be a pair"),
    (0.9, r"betas must be a pair"),
])
def test_adam_betas(betas, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastbp.Adam(betas=betas)


@pytest.mark.parametrize("eps,pattern", [
    (-1e-8, r"eps must be >= 0"),
    (float("inf"), r"eps must be a finite number"),
])
def test_adam_eps(eps, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastbp.Adam(eps=eps)


@pytest.mark.parametrize("cls", [fastbp.SGD, fastbp.Adam])
@pytest.mark.parametrize("wd,pattern", [
    (-0.01, r"weight_decay must be >= 0"),
    (float("nan"), r"weight_decay must be a finite number"),
])
def test_weight_decay(cls, wd, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(weight_decay=wd)


# ---------------------------------------------------------------------------
# model and layer construction
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["int32", "float16", np.int64, np.complex128, "foo", "f2"])
def test_bad_dtype(dtype):
    with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'float64'"):
        fastbp.Sequential([fastbp.Dense(1)], dtype=dtype)


@pytest.mark.parametrize("dtype,expected", [("float32", np.float32), (np.float64, np.float64),
                                            ("f8", np.float64)])
def test_good_dtype(dtype, expected):
    assert fastbp.Sequential([fastbp.Dense(1)], dtype=dtype).dtype is expected


@pytest.mark.parametrize("slope", [-0.01, -1, float("nan"), float("inf")])
def test_negative_slope_must_be_finite_and_non_negative(slope):
    with pytest.raises(ValueError, match=r"negative_slope must be a finite number >= 0"):
        fastbp.Dense(3, "leaky_relu", negative_slope=slope)


@pytest.mark.parametrize("slope", ["abc", None, [0.1]])
def test_negative_slope_of_wrong_type_names_the_parameter(slope):
    with pytest.raises((ValueError, TypeError), match=r"negative_slope"):
        fastbp.Dense(3, "leaky_relu", negative_slope=slope)


@pytest.mark.parametrize("units", [0, -1])
def test_units_must_be_positive(units):
    with pytest.raises(ValueError, match=r"units must be >= 1"):
        fastbp.Dense(units)


@pytest.mark.parametrize("units", [2.0, 2.5, True, "3", None])
def test_units_must_be_an_integer(units):
    with pytest.raises(TypeError, match=r"units must be an integer"):
        fastbp.Dense(units)


def test_unknown_initializer():
    with pytest.raises(ValueError, match=r"unknown initializer"):
        fastbp.Dense(3, init="uniformish")
    with pytest.raises(TypeError, match=r"initializer must be"):
        fastbp.Dense(3, bias_init=[1, 2])


def test_layers_must_be_dense_instances():
    with pytest.raises(TypeError, match=r"layers must be Layer instances"):
        fastbp.Sequential([fastbp.Dense(2), "relu"])
    layer = fastbp.Dense(2)
    with pytest.raises(ValueError, match=r"the same layer instance appears twice"):
        fastbp.Sequential([layer, layer])


def test_model_without_layers():
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"the model has no Dense layers"):
        fastbp.Sequential([]).fit(X, y, epochs=1)


@pytest.mark.parametrize("seed", ["0", 1.5, True])
def test_bad_seed(seed):
    with pytest.raises(TypeError, match=r"seed must be an integer or None"):
        fastbp.Sequential([fastbp.Dense(1)], seed=seed)


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_input_dim(bad):
    with pytest.raises(ValueError, match=r"input_dim must be >= 1"):
        fastbp.Sequential([fastbp.Dense(1)], input_dim=bad)
    with pytest.raises(ValueError, match=r"input_dim must be >= 1"):
        fastbp.Dense(1, input_dim=bad)


def test_layer_input_dim_disagrees_with_data():
    X, y = reg_data()
    model = fastbp.Sequential([fastbp.Dense(4, input_dim=D + 1), fastbp.Dense(1)], seed=0)
    with pytest.raises(ValueError, match=r"declared with input_dim=4 but receives 3 inputs"):
        model.fit(X, y, epochs=1)
    assert not model.built


def test_add_after_build():
    model, _, _ = fitted_mse()
    with pytest.raises(RuntimeError, match=r"already built"):
        model.add(fastbp.Dense(2))


# ---------------------------------------------------------------------------
# feature counts and unbuilt models
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("d", [D - 1, D + 1])
def test_predict_with_wrong_number_of_features(d):
    model, X, y = fitted_mse()
    Xd = np.ones((5, d))
    with pytest.raises(ValueError, match=rf"X has {d} features, but the model expects {D}"):
        model.predict(Xd)
    with pytest.raises(ValueError, match=r"features"):
        model.evaluate(Xd, y[:5])
    with pytest.raises(ValueError, match=r"features"):
        model.fit(Xd, y[:5], epochs=1)
    with pytest.raises(ValueError, match=r"features"):
        model.loss_and_gradients(Xd, y[:5])


def test_predict_wrong_features_with_input_dim_model():
    model = mse_model(input_dim=5)
    with pytest.raises(ValueError, match=r"X has 3 features, but the model expects 5"):
        model.predict(np.ones((2, 3)))


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


@pytest.mark.parametrize("method", ["predict", "evaluate", "get_weights", "count_params",
                                    "summary", "predict_classes"])
def test_unbuilt_model_raises_runtime_error(method):
    X, y = reg_data()
    model = mse_model()
    args = {"predict": (X,), "evaluate": (X, y), "predict_classes": (X,)}.get(method, ())
    with pytest.raises(RuntimeError, match=r"the model has no weights yet"):
        getattr(model, method)(*args)
    assert not model.built


def test_predict_classes_needs_classification_loss():
    model, X, _ = fitted_mse()
    with pytest.raises(ValueError, match=r"predict_classes needs a classification loss"):
        model.predict_classes(X)


# ---------------------------------------------------------------------------
# set_weights
# ---------------------------------------------------------------------------

def test_set_weights_wrong_number_of_pairs():
    model, _, _ = fitted_mse()
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"got 1 \(weight, bias\) pairs for 2 layers"):
        model.set_weights(weights[:1])
    with pytest.raises(ValueError, match=r"got 3 \(weight, bias\) pairs for 2 layers"):
        model.set_weights(weights + weights[:1])
    assert same_weights(model.get_weights(), weights)


def test_set_weights_wrong_shapes_leave_weights_unchanged():
    model, _, _ = fitted_mse()
    before = model.get_weights()
    (w0, b0), (w1, b1) = before
    bad = [(w0 + 1, b0 + 1), (np.ones((5, 1)), b1)]  # first pair fine, second wrong
    with pytest.raises(ValueError, match=r"layer 1 expects weight \(4, 1\) and bias \(1,\)"):
        model.set_weights(bad)
    assert same_weights(model.get_weights(), before)
    with pytest.raises(ValueError, match=r"layer 0 expects weight"):
        model.set_weights([(w0, np.ones(5)), (w1, b1)])
    with pytest.raises(ValueError, match=r"layer 0 expects weight"):
        model.set_weights([(w0.T, b0), (w1, b1)])


def test_set_weights_bad_entries():
    model, _, _ = fitted_mse()
    (w0, b0), (w1, b1) = model.get_weights()
    with pytest.raises(ValueError, match=r"entry 1 must be a \(weight, bias\) pair"):
        model.set_weights([(w0, b0), w1])
    with pytest.raises(ValueError, match=r"bias 0 must be 1-D"):
        model.set_weights([(w0, b0[None, :]), (w1, b1)])
    with pytest.raises(ValueError, match=r"weight 1 must be 2-D"):
        model.set_weights([(w0, b0), (w1.ravel(), b1)])
    bad = w0.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"weight 0 contains NaN"):
        model.set_weights([(bad, b0), (w1, b1)])
    with pytest.raises(ValueError, match=r"bias 1 contains infinity"):
        model.set_weights([(w0, b0), (w1, b1 + np.inf)])
    with pytest.raises(ValueError, match=r"numeric"):
        model.set_weights([(w0.astype(str), b0), (w1, b1)])


def test_set_weights_round_trip_and_float64_input():
    model, X, _ = fitted_mse()
    weights = [(w.astype(np.float64) * 0.5, b.astype(np.float64)) for w, b in model.get_weights()]
    model.set_weights(weights)
    for (w, b), (w2, b2) in zip(model.get_weights(), weights):
        assert w.dtype == np.float32 and b.dtype == np.float32
        np.testing.assert_allclose(w, w2, rtol=1e-6)


# ---------------------------------------------------------------------------
# divergence
# ---------------------------------------------------------------------------

def diverging_regression(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 5)) * 1e3
    y = X @ rng.normal(size=5) + 1e3
    return X, y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_divergence_raises_floating_point_error(dtype, momentum):
    X, y = diverging_regression()
    model = fastbp.Sequential([fastbp.Dense(8, "relu"), fastbp.Dense(1)],
                              optimizer=fastbp.SGD(lr=1e6, momentum=momentum),
                              seed=0, dtype=dtype)
    with pytest.raises(FloatingPointError, match=r"(?s)training loss became (nan|inf).*learning rate"):
        model.fit(X, y, epochs=20, batch_size=32)
    assert all_finite(model)


@pytest.mark.parametrize("dtype,scale", [("float32", 1e20), ("float64", 1e160)])
def test_huge_inputs_stop_before_the_first_update(dtype, scale):
    X, y = reg_data(n=64, d=4)
    model = fastbp.Sequential([fastbp.Dense(1)], optimizer="sgd", seed=0, dtype=dtype)
    model.fit(X, y, epochs=0)  # build only
    before = model.get_weights()
    with pytest.raises(FloatingPointError, match=r"minibatch 0.*learning rate"):
        model.fit(X * scale, y, epochs=3, batch_size=16)
    assert same_weights(model.get_weights(), before)
    assert all_finite(model)
    assert len(model.history) == 0


@pytest.mark.parametrize("make_optimizer", [
    lambda: fastbp.SGD(lr=1e38),
    lambda: fastbp.SGD(lr=1e38, momentum=0.5),
    lambda: fastbp.Adam(lr=1e38),
], ids=["sgd", "sgd-momentum", "adam"])
def test_update_overflowing_float32_raises_and_keeps_weights_finite(make_optimizer):
    # The loss of a minibatch is still finite, but lr * gradient overflows float32:
    # training must stop with FloatingPointError and leave finite weights.
    X, y = diverging_regression()
    model = fastbp.Sequential([fastbp.Dense(8, "relu"), fastbp.Dense(1)],
                              optimizer=make_optimizer(), seed=0, dtype="float32")
    with pytest.raises(FloatingPointError, match=r"learning rate"):
        model.fit(X, y, epochs=3, batch_size=32)
    assert all_finite(model)


def test_single_overflowing_update_is_not_silent():
    # One full-batch step whose update overflows float32: fit must not return
    # normally with infinite/NaN weights.
    X, y = diverging_regression()
    model = fastbp.Sequential([fastbp.Dense(8, "relu"), fastbp.Dense(1)],
                              optimizer=fastbp.SGD(lr=1e38), seed=0, dtype="float32")
    try:
        model.fit(X, y, epochs=1, batch_size=len(X))
    except FloatingPointError as exc:
        assert "learning rate" in str(exc)
    assert all_finite(model), "fit returned normally but left non-finite weights"
    assert np.isfinite(model.predict(X[:5])).all()


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
