"""Sequential (fastbp/model.py): the constructor, add, build, the flat weight buffer,
get_weights/set_weights, predict, predict_classes, evaluate, loss_and_gradients and
summary, the default loss and the output activation fused into the loss.

Every bad argument gets a clear Python exception naming the problem (never a crash, a
hang or a silently wrong result); an unbuilt model says that it has no weights yet.
"""

import numpy as np
import pytest

import fastbp
from fastbp import _reference

from _models import (
    BAD_NDIM,
    NON_NUMERIC,
    NONFINITE,
    D,
    fitted_mse,
    mse_model,
    reg_data,
    same_weights,
)

# ---------------------------------------------------------------------------
# constructor, add and build
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int32", "float16", np.int64, np.complex128, "foo", "f2"])
def test_bad_dtype(dtype):
    with pytest.raises(ValueError, match=r"dtype must be 'float32' or 'float64'"):
        fastbp.Sequential([fastbp.Dense(1)], dtype=dtype)


@pytest.mark.parametrize(
    "dtype,expected", [("float32", np.float32), (np.float64, np.float64), ("f8", np.float64)]
)
def test_good_dtype(dtype, expected):
    assert fastbp.Sequential([fastbp.Dense(1)], dtype=dtype).dtype is expected


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
    with pytest.raises(TypeError, match=r"seed must be an integer >= 0 or None"):
        fastbp.Sequential([fastbp.Dense(1)], seed=seed)


@pytest.mark.parametrize("seed", [-1, np.int64(-5)])
def test_negative_seed_names_seed(seed):
    # NumPy's own message, "expected non-negative integer", did not say which argument.
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0 or None, got -"):
        fastbp.Sequential([fastbp.Dense(1)], seed=seed)


@pytest.mark.parametrize("shuffle", ["batch", "no", 1, 0, None])
def test_shuffle_must_be_a_bool(shuffle):
    # "batch" and "no" are truthy: they shuffled.
    model = mse_model(seed=0)
    X, y = reg_data()
    with pytest.raises(TypeError, match=r"shuffle must be True or False, got"):
        model.fit(X, y, epochs=1, shuffle=shuffle)
    with pytest.raises(TypeError, match=r"shuffle must be True or False"):
        model.partial_fit(X, y, shuffle=shuffle)
    for ok in (np.True_, np.False_):
        model.fit(X, y, epochs=1, shuffle=ok)


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_input_dim(bad):
    with pytest.raises(ValueError, match=r"input_dim must be >= 1"):
        fastbp.Sequential([fastbp.Dense(1)], input_dim=bad)
    with pytest.raises(ValueError, match=r"input_dim must be >= 1"):
        fastbp.Dense(1, input_dim=bad)


def test_add_after_build():
    model, _, _ = fitted_mse()
    with pytest.raises(RuntimeError, match=r"already built"):
        model.add(fastbp.Dense(2))


def test_names_are_case_insensitive_and_classes_accepted():
    model = fastbp.Sequential(
        [fastbp.Dense(2, "ReLU"), fastbp.Dense(1)], loss="MSE", optimizer="SGD"
    )
    assert model.layers[0].activation == "relu"
    assert isinstance(model.loss, fastbp.MSE) and isinstance(model.optimizer, fastbp.SGD)
    model = fastbp.Sequential([fastbp.Dense(1)], loss=fastbp.MSE, optimizer=fastbp.Adam)
    assert isinstance(model.optimizer, fastbp.Adam)


def test_default_loss_inferred_from_last_activation():
    assert fastbp.Sequential([fastbp.Dense(3, "softmax")], input_dim=2).loss.name == "cross_entropy"
    assert (
        fastbp.Sequential([fastbp.Dense(1, "sigmoid")], input_dim=2).loss.name
        == "binary_cross_entropy"
    )
    assert fastbp.Sequential([fastbp.Dense(1)], input_dim=2).loss.name == "mse"


def test_layer_weights_are_views_of_flat_buffer():
    model = fastbp.Sequential([fastbp.Dense(4, "relu"), fastbp.Dense(2)], input_dim=3, seed=0)
    assert model.flat_params.size == 3 * 4 + 4 + 4 * 2 + 2 == model.count_params()
    model.flat_params[:] = np.arange(model.flat_params.size)
    assert model.layers[0].weight[0, 1] == 1 and model.layers[0].bias[0] == 12
    assert model.layers[1].weight[0, 0] == 16 and model.layers[1].bias[1] == 25
    assert np.shares_memory(model.layers[1].grad_weight, model.flat_grads)


def test_float64_model_and_float32_default():
    X = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    y = np.arange(8) % 2
    m64 = fastbp.Sequential([fastbp.Dense(2)], loss="cross_entropy", dtype="float64", seed=0)
    m64.fit(X, y, epochs=1)
    assert m64.flat_params.dtype == np.float64 and m64.predict(X).dtype == np.float64
    m32 = fastbp.Sequential([fastbp.Dense(2)], loss="cross_entropy", seed=0)
    m32.fit(X.astype(np.float64), y, epochs=1)
    assert m32.flat_params.dtype == np.float32 and m32.predict(X).dtype == np.float32


# ---------------------------------------------------------------------------
# output activation fused into the loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss,activation,fused",
    [
        ("cross_entropy", "softmax", "softmax"),
        ("binary_cross_entropy", "sigmoid", "sigmoid"),
    ],
)
def test_final_activation_fused_not_applied_twice(loss, activation, fused):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(6, 3))
    y = rng.integers(0, 2, 6) if loss == "cross_entropy" else rng.uniform(0, 1, (6, 2))
    with_act = fastbp.Sequential(
        [fastbp.Dense(2, activation)], loss=loss, dtype="float64", input_dim=3, seed=0
    )
    logits_model = fastbp.Sequential(
        [fastbp.Dense(2)], loss=loss, dtype="float64", input_dim=3, seed=0
    )
    logits_model.set_weights(with_act.get_weights())
    expected = _reference.forward(with_act.get_weights(), [fused], X)[-1]
    np.testing.assert_allclose(with_act.predict(X), expected, rtol=1e-12)
    np.testing.assert_allclose(logits_model.predict(X), expected, rtol=1e-12)
    loss_a, grads_a = with_act.loss_and_gradients(X, y)
    loss_b, grads_b = logits_model.loss_and_gradients(X, y)
    assert loss_a == loss_b
    np.testing.assert_array_equal(grads_a[0][0], grads_b[0][0])


def test_softmax_with_mse_is_not_fused():
    """softmax before MSE stays a real softmax layer: predictions are probabilities."""
    model = fastbp.Sequential(
        [fastbp.Dense(3, "softmax")], loss="mse", dtype="float64", input_dim=2, seed=0
    )
    X = np.array([[1.0, -2.0], [0.5, 0.1]])
    expected = _reference.forward(model.get_weights(), ["softmax"], X)[-1]
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12)


# ---------------------------------------------------------------------------
# predict, evaluate and loss_and_gradients: X of the wrong shape or content
# ---------------------------------------------------------------------------


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


def test_evaluate_mismatched_sample_counts():
    model, X, y = fitted_mse()
    with pytest.raises(ValueError, match=r"different numbers of samples"):
        model.evaluate(X, y[:5])


def test_loss_and_gradients_mismatched_sample_counts():
    model, X, y = fitted_mse()
    with pytest.raises(ValueError, match=r"different numbers of samples"):
        model.loss_and_gradients(X, y[:-1])


@pytest.mark.parametrize("value,word", NONFINITE)
def test_predict_and_evaluate_reject_nonfinite_X(value, word):
    model, X, y = fitted_mse()
    X = X.copy()
    X[1, 2] = value
    with pytest.raises(ValueError, match=rf"X contains {word}"):
        model.predict(X)
    with pytest.raises(ValueError, match=rf"X contains {word}"):
        model.evaluate(X, y)


def test_loss_and_gradients_rejects_nan():
    model, X, y = fitted_mse()
    y = y.copy()
    y[0] = np.nan
    with pytest.raises(ValueError, match=r"y contains NaN"):
        model.loss_and_gradients(X, y)


def test_predict_zero_samples_and_empty_list():
    model, _, _ = fitted_mse()
    assert model.predict(np.empty((0, D))).shape == (0, 1)  # as NumPy and scikit-learn
    with pytest.raises(ValueError, match=r"2-D"):
        model.predict([])


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_predict_rejects_non_numeric_X(kind):
    model, X, _ = fitted_mse()
    with pytest.raises(ValueError, match=r"X must be numeric"):
        model.predict(NON_NUMERIC[kind](X))


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


@pytest.mark.parametrize(
    "method", ["predict", "evaluate", "get_weights", "count_params", "summary", "predict_classes"]
)
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
# predict and evaluate
# ---------------------------------------------------------------------------


def test_predict_large_input_in_chunks_matches_numpy():
    rng = np.random.default_rng(9)
    model = fastbp.Sequential(
        [fastbp.Dense(7, "tanh"), fastbp.Dense(3)], loss="mse", dtype="float64", input_dim=5, seed=0
    )
    X = rng.normal(size=(1300, 5))  # more than one inference chunk, last chunk partial
    expected = _reference.forward(model.get_weights(), ["tanh", "identity"], X)[-1]
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12)
    np.testing.assert_allclose(model.predict(X[:1]), model.predict(X)[:1], rtol=1e-14)


def test_regression_metrics():
    model = fastbp.Sequential([fastbp.Dense(1)], loss="mse", dtype="float64", input_dim=1)
    model.set_weights([(np.array([[2.0]]), np.array([1.0]))])
    X = np.array([[0.0], [1.0], [2.0]])
    y = np.array([1.0, 3.0, 6.0])  # predictions 1, 3, 5
    result = model.evaluate(X, y)
    assert result["loss"] == pytest.approx(1 / 3)
    assert result["mae"] == pytest.approx(1 / 3)
    assert result["r2"] == pytest.approx(1 - 1 / (((y - y.mean()) ** 2).sum()))


# ---------------------------------------------------------------------------
# get_weights and set_weights
# ---------------------------------------------------------------------------


def test_get_set_weights_round_trip():
    model = fastbp.Sequential([fastbp.Dense(4, "relu"), fastbp.Dense(2)], input_dim=3, seed=0)
    weights = model.get_weights()
    assert [w.shape for w, _ in weights] == [(3, 4), (4, 2)]
    assert [b.shape for _, b in weights] == [(4,), (2,)]
    other = fastbp.Sequential([fastbp.Dense(4, "relu"), fastbp.Dense(2)], seed=1)
    other.set_weights(weights)  # builds from the shapes
    X = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(model.predict(X), other.predict(X))
    weights[0][0][...] = 0  # a copy: the model is unaffected
    assert np.any(model.get_weights()[0][0] != 0)


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
    for (w, b), (w2, _) in zip(model.get_weights(), weights):
        assert w.dtype == np.float32 and b.dtype == np.float32
        np.testing.assert_allclose(w, w2, rtol=1e-6)


# ---------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------


def test_summary_and_repr():
    model = fastbp.Sequential(
        [fastbp.Dense(4, "leaky_relu", negative_slope=0.1), fastbp.Dense(1)], input_dim=2
    )
    text = model.summary()
    assert "Dense(4, activation='leaky_relu', negative_slope=0.1)" in text
    assert "total parameters: 17" in text


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_predict_finds_nan_and_infinity_in_its_compiled_pass(dtype, value):
    """predict checks X's values in the compiled pass (no separate NumPy scan): the
    error names the first bad entry, in any chunk of a long X, and no output is
    returned."""
    model = fastbp.Sequential([fastbp.Dense(3, "tanh"), fastbp.Dense(2)], input_dim=4, dtype=dtype)
    X = np.ones((5000, 4), dtype=dtype)
    assert np.isfinite(model.predict(X)).all()
    for row, col in [(0, 0), (1, 3), (4999, 2)]:
        bad = X.copy()
        bad[row, col] = value
        kind = "NaN" if np.isnan(value) else "infinity"
        with pytest.raises(
            ValueError, match=rf"X contains {kind} \(first at index \({row}, {col}\)\)"
        ):
            model.predict(bad)
    # A huge finite value is not an error (its output may overflow: that is the model's).
    big = X.copy()
    big[0, 0] = np.finfo(dtype).max
    model.predict(big)


@pytest.mark.parametrize("sparse", [False, True])
def test_predict_on_zero_rows_returns_an_empty_array(sparse):
    model = fastbp.Sequential([fastbp.Dense(3, "tanh"), fastbp.Dense(2, "softmax")], input_dim=4)
    X = np.empty((0, 4), dtype=np.float64)
    if sparse:
        import scipy.sparse as sp

        X = sp.csr_matrix(X)
    out = model.predict(X)
    assert out.shape == (0, 2) and out.dtype == np.float32
    assert model.predict_classes(X).shape == (0,)
    with pytest.raises(ValueError, match="3 features, but the model expects 4"):
        model.predict(np.empty((0, 3)))
    with pytest.raises(ValueError, match="0 samples"):
        model.evaluate(np.empty((0, 4)), np.empty(0, dtype=int))


def test_validation_split_holds_out_the_same_rows_on_every_call():
    """A second fit must not validate on rows the first trained on: the held-out
    rows are the same on every call (and in a copy), for classification and
    regression; another model draws its own."""
    import copy

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = rng.integers(0, 3, 60)
    seen = []

    class Record(fastbp.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.model._run.data.X.copy())

    model = fastbp.Sequential([fastbp.Dense(4), fastbp.Dense(3, "softmax")], seed=1)
    for _ in range(3):
        model.fit(X, y, epochs=1, validation_split=0.25, callbacks=[Record()])
    twin = copy.deepcopy(model)
    twin.fit(X, y, epochs=1, validation_split=0.25, callbacks=[Record()])
    train_rows = [{tuple(row) for row in part} for part in seen]
    assert all(rows == train_rows[0] for rows in train_rows)
    assert len(train_rows[0]) == 45
    other = fastbp.Sequential([fastbp.Dense(4), fastbp.Dense(3, "softmax")], seed=2)
    seen.clear()
    other.fit(X, y, epochs=1, validation_split=0.25, callbacks=[Record()])
    assert {tuple(row) for row in seen[0]} != train_rows[0]
