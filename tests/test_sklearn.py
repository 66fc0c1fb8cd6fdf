"""fastbp.sklearn against scikit-learn: its estimator checks, and the same results
as its MLPClassifier and MLPRegressor from the same random_state."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# Checks that cannot pass, with the reason (the README lists them too). With the
# default parameters every check passes.
_MASKS = "dropout draws a mask per row: a row of weight 2 and two copies of it see different masks"
DROPOUT_FAILS = {
    "check_sample_weight_equivalence_on_dense_data": _MASKS,
    "check_sample_weight_equivalence_on_sparse_data": _MASKS,
}


_FLOAT32 = "float32 training: the check's rtol of 1e-7 is below float32 rounding"
FLOAT32_FAILS = {
    "check_sample_weight_equivalence_on_dense_data": _FLOAT32,
    "check_sample_weight_equivalence_on_sparse_data": _FLOAT32,
}


def expected_failed_checks(estimator):
    return {
        **(DROPOUT_FAILS if estimator.dropout else {}),
        **(FLOAT32_FAILS if estimator.dtype == "float32" else {}),
    }


@parametrize_with_checks(
    [
        MLPClassifier(max_iter=100),
        MLPRegressor(max_iter=100),
        # fastbp's extras on: the checks hold for them too
        MLPClassifier(max_iter=100, dropout=0.1, class_weight="balanced", activation="gelu"),
        MLPRegressor(max_iter=100, loss="huber", dtype="float32", activation="elu"),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


# -- the same training as scikit-learn --------------------------------------------
sk_nn = pytest.importorskip("sklearn.neural_network")


def classification(n=120, d=7, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int) + (X[:, 3] > 0.8)
    return X, np.array(["cat", "dog", "eel"])[y[:n] % k]


def regression(n=120, d=7, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    Y = np.column_stack([np.sin(X[:, j]) + X[:, j + 1] for j in range(outputs)])
    return X, (Y[:, 0] if outputs == 1 else Y)


def both(cls, **params):
    """scikit-learn's estimator and ours with the same parameters."""
    sk = getattr(sk_nn, cls.__name__)(**params)
    return sk, cls(**params)


def assert_same_fit(sk, ours, tol=1e-9):
    """Same weights (to the rounding of different summation orders), iterations,
    losses and curves."""
    assert ours.n_iter_ == sk.n_iter_
    assert ours.t_ == sk.t_
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert ours.loss_ == pytest.approx(sk.loss_, rel=tol)
    for name in ("loss_curve_", "validation_scores_"):
        if getattr(sk, name, None) is not None:
            np.testing.assert_allclose(getattr(ours, name), getattr(sk, name), rtol=tol)
    for name in ("best_loss_", "best_validation_score_"):
        if getattr(sk, name, None) is not None:
            assert getattr(ours, name) == pytest.approx(getattr(sk, name), rel=tol)
    for name in ("n_layers_", "n_outputs_", "out_activation_", "n_features_in_"):
        assert getattr(ours, name) == getattr(sk, name)


STOCHASTIC = {
    "adam": dict(solver="adam", learning_rate_init=0.01),
    "sgd-constant": dict(solver="sgd", momentum=0.0, learning_rate_init=0.1),
    "sgd-momentum": dict(solver="sgd", nesterovs_momentum=False, learning_rate_init=0.05),
    "sgd-nesterov-invscaling": dict(
        solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, power_t=0.3
    ),
    # a large tol makes the adaptive rule divide the rate by 5 several times
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", tol=0.05, n_iter_no_change=2),
    "adam-early-stopping": dict(solver="adam", early_stopping=True, learning_rate_init=0.01),
    "sgd-tol-stops": dict(solver="sgd", tol=0.1, n_iter_no_change=2),
    "no-shuffle-batch-7": dict(solver="adam", shuffle=False, batch_size=7),
}


@pytest.mark.parametrize("name", list(STOCHASTIC))
@pytest.mark.parametrize("task", ["classifier", "regressor"])
def test_stochastic_training_equals_scikit_learn(name, task):
    """From the same random_state: the same initial weights, minibatch orders,
    updates, learning-rate changes, stopping epoch and best weights."""
    params = dict(
        hidden_layer_sizes=(9, 5), random_state=3, max_iter=25, alpha=0.01, **STOCHASTIC[name]
    )
    if task == "classifier":
        X, y = classification()
        sk, ours = both(MLPClassifier, activation="tanh", **params)
    else:
        X, y = regression()
        sk, ours = both(MLPRegressor, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y)
        ours.fit(X, y)
    assert_same_fit(sk, ours)
    if task == "classifier":
        proba = sk.predict_proba(X)
        np.testing.assert_allclose(ours.predict_proba(X), proba, atol=1e-9)
        assert list(ours.classes_) == ["cat", "dog", "eel"]
        top = np.sort(proba, axis=1)
        clear = top[:, -1] - top[:, -2] > 1e-6  # rows not at a tie within rounding
        np.testing.assert_array_equal(ours.predict(X)[clear], sk.predict(X)[clear])
    else:
        np.testing.assert_allclose(ours.predict(X), sk.predict(X), rtol=1e-9, atol=1e-9)


TARGETS = {
    "binary": lambda X: np.where(X[:, 0] > 0, True, False),
    "multilabel": lambda X: np.column_stack([X[:, 0] > 0, X[:, 1] > 0.5, X[:, 2] < 0]).astype(int),
    "multi-output": lambda X: np.column_stack([X[:, 0] + X[:, 1], X[:, 2] ** 2]),
    "poisson": lambda X: np.random.default_rng(1).poisson(np.exp(0.3 * X[:, 0])),
}


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_targets_solvers_and_weights_equal_scikit_learn(target, solver, weighted):
    """Binary (one logistic output), multi-label, multi-output regression (the
    reported loss half the mean squared error, the gradient that of the sum) and
    Poisson, each solver, with and without sample weights."""
    X = np.random.default_rng(5).normal(size=(90, 6))
    y = TARGETS[target](X)
    cls = MLPClassifier if target in ("binary", "multilabel") else MLPRegressor
    extra = {"loss": "poisson"} if target == "poisson" else {}
    sk, ours = both(
        cls,
        hidden_layer_sizes=(8,),
        random_state=0,
        max_iter=15,
        batch_size=16,
        learning_rate_init=0.01,
        alpha=0.05,
        solver=solver,
        **extra,
    )
    weights = np.random.default_rng(2).uniform(0.2, 3.0, 90) if weighted else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y, sample_weight=weights)
        ours.fit(X, y, sample_weight=weights)
    # L-BFGS's line search amplifies rounding differences a little.
    tol = 1e-6 if solver == "lbfgs" else 1e-9
    assert_same_fit(sk, ours, tol)
    if cls is MLPRegressor:
        np.testing.assert_allclose(ours.predict(X), sk.predict(X), rtol=tol, atol=tol)
    else:
        np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), atol=tol)
    assert ours.score(X, y) == pytest.approx(sk.score(X, y), abs=tol)


def test_float32_trains_in_float32():
    X, y = classification()
    sk, ours = both(MLPClassifier, hidden_layer_sizes=(6,), random_state=0, max_iter=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X.astype(np.float32), y)
        ours.fit(X.astype(np.float32), y)
    assert ours.coefs_[0].dtype == np.float32 and ours.model_.dtype == np.float32
    assert_same_fit(sk, ours, tol=2e-4)


def test_warm_start_and_partial_fit_equal_scikit_learn():
    X, y = classification()
    params = dict(hidden_layer_sizes=(6,), random_state=1, max_iter=5, solver="sgd")
    sk, ours = both(MLPClassifier, warm_start=True, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for est in (sk, ours):
            est.fit(X, y)
            est.fit(X, y)  # continues from the weights, with a new optimizer
    assert_same_fit(sk, ours)
    sk, ours = both(MLPClassifier, **params)
    for est in (sk, ours):
        est.partial_fit(X[:50], y[:50], classes=["cat", "dog", "eel"])
        for _ in range(3):
            est.partial_fit(X[50:], y[50:])
    assert_same_fit(sk, ours)
    with pytest.raises(ValueError, match="classes not in"):
        ours.partial_fit(X[:3], ["cat", "dog", "fox"])
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        MLPClassifier().partial_fit(X, y)
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")


@pytest.mark.parametrize(
    "classes",
    [
        [0, 1],
        [-3, 5, 10],
        np.array([4, 9], np.int8),
        ["b", "a", "c"],
        np.array(["b", "a", "c"], dtype=object),  # a pandas column of strings
        [False, True],
    ],
)
def test_partial_fit_batches_equal_scikit_learn(classes):
    """partial_fit encodes a batch's labels by searching the sorted classes (not by
    scikit-learn's type inference): small batches that miss classes train as
    scikit-learn's, and a label outside the classes (below the first, between two,
    past the last, or one that does not compare) is rejected as it rejects it."""
    X, _ = classification()
    y = np.asarray(classes)[np.random.default_rng(3).integers(0, len(classes), len(X))]
    sk, ours = both(MLPClassifier, hidden_layer_sizes=(5,), random_state=2, solver="sgd")
    for est in (sk, ours):
        est.partial_fit(X[:20], y[:20], classes=classes)
        for start in range(20, len(X), 3):
            est.partial_fit(X[start : start + 3], y[start : start + 3])
    assert_same_fit(sk, ours)
    if y.dtype.kind in "iu":
        strangers = [y.min() - 1, y.max() + 1, 6 if 5 in classes else None]
    elif y.dtype.kind == "U":
        strangers = ["0", "d", "ab"]
    elif y.dtype.kind == "O":
        strangers = ["0", "d", "ab", 5]  # 5: objects that do not compare
    else:
        strangers = []
    for stranger in (s for s in strangers if s is not None):
        as_object = y.dtype if y.dtype == object else None
        batch = np.concatenate([y[:2], np.array([stranger], dtype=as_object)])
        assert stranger in batch.tolist() and stranger not in list(classes)
        with pytest.raises((ValueError, TypeError)) as expected:
            sk.partial_fit(X[:3], batch)
        with pytest.raises(type(expected.value)) as raised:
            ours.partial_fit(X[:3], batch)
        assert str(raised.value) == str(expected.value)


def test_partial_fit_validates_parameters_when_scikit_learn_does(monkeypatch):
    """The parameters are validated by every fit and by a first partial_fit, not by
    a partial_fit of a fitted estimator, and by none under scikit-learn's
    skip_parameter_validation: scikit-learn's own rule, counted on both."""
    import sklearn

    X, y = classification()
    sk, ours = both(MLPClassifier, hidden_layer_sizes=(4,), random_state=0, max_iter=2)
    counts = {}

    def counting(cls):
        validate = cls._validate_params

        def counted(self):
            counts[cls] = counts.get(cls, 0) + 1
            return validate(self)

        monkeypatch.setattr(cls, "_validate_params", counted)

    for est in (sk, ours):
        counting(type(est))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.partial_fit(X, y, classes=["cat", "dog", "eel"])  # 1
            est.partial_fit(X, y)  # fitted: not again
            est.partial_fit(X, y)
            est.fit(X, y)  # 2
            est.partial_fit(X, y)
            with sklearn.config_context(skip_parameter_validation=True):
                est.fit(X, y)
    assert counts == {type(sk): 2, type(ours): 2}
    with pytest.raises(ValueError, match="alpha"):  # InvalidParameterError
        MLPClassifier(alpha=-1.0).partial_fit(X, y, classes=["cat", "dog", "eel"])


def test_partial_fit_copies_the_weights_only_for_its_rollback_point():
    # One epoch holds one rollback point (the weights and Adam's two moments: 3 x
    # the weights), and nothing else the size of the weights: early_stopping's
    # copy of the best weights is made only where it is on (partial_fit refuses
    # it).
    import tracemalloc

    X, y = classification(n=64, d=50)
    est = MLPClassifier(hidden_layer_sizes=(2000,), random_state=0)
    est.partial_fit(X, y, classes=["cat", "dog", "eel"])
    weights = est.model_.flat_params.nbytes  # 8.5e5 bytes; the data, 2.6e4
    tracemalloc.start()
    try:
        est.partial_fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert 3 * weights < peak < 3.5 * weights
    assert est._best_params is None


def test_random_state_streams_are_scikit_learns():
    """An integer random_state starts every fit from the same stream (the
    estimator's own RandomState seeded again, as a new one would be); a RandomState
    given is drawn on where the last fit left it; partial_fit follows scikit-learn
    either way."""
    X, y = classification()
    est = MLPClassifier(random_state=7)
    first = est._seeded_random_state()
    first.uniform(size=5), first.standard_normal()  # a cached Gaussian too
    again = est._seeded_random_state()
    assert again is first
    np.testing.assert_array_equal(again.uniform(size=9), np.random.RandomState(7).uniform(size=9))
    est.set_params(random_state=np.int64(7))
    np.testing.assert_array_equal(
        est._seeded_random_state().standard_normal(3),
        np.random.RandomState(7).standard_normal(3),
    )
    given = np.random.RandomState(3)
    given.uniform(size=4)
    state = given.get_state()[1].copy()
    est.set_params(random_state=given)
    assert est._seeded_random_state() is given
    np.testing.assert_array_equal(given.get_state()[1], state)  # not seeded again
    # The estimators' own streams: each gets its own RandomState(5).
    sk = sk_nn.MLPClassifier(random_state=np.random.RandomState(5), hidden_layer_sizes=(5,))
    ours = MLPClassifier(random_state=np.random.RandomState(5), hidden_layer_sizes=(5,))
    for e in (sk, ours):
        e.partial_fit(X[:40], y[:40], classes=["cat", "dog", "eel"])
        for start in range(40, len(X), 20):
            e.partial_fit(X[start : start + 20], y[start : start + 20])
    assert_same_fit(sk, ours)


def _outcome(call, *args, **kwargs):
    """What a call returns, or the type and message of what it raises."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared, not handled
        return type(exc), str(exc)


def test_plain_arrays_skip_validate_data_only_where_it_changes_nothing():
    """After fitting, X and y that validate_data would return unchanged are taken
    as they are; every input gives what validate_data gives: the same arrays, or the
    same error."""
    from sklearn.utils.validation import validate_data

    from fastbp.sklearn import _passes_unchanged, _targets_pass_unchanged, _validated

    X, y = regression(n=12, d=4)
    est = MLPRegressor(hidden_layer_sizes=(3,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    wide = np.hstack([X, X])[:, ::2]  # 4 features, not contiguous
    nan, inf, big = X.copy(), X.copy(), np.full((12, 4), 1e308)
    nan[3, 1], inf[0, 0] = np.nan, -np.inf
    inputs = {
        "float64": (X, True),
        "float32": (X.astype(np.float32), True),
        "fortran": (np.asfortranarray(X), True),
        "strided": (wide, True),
        "overflowing sum": (big, False),  # finite: the full check passes it
        "float32 largest": (np.full((12, 4), 3e38, np.float32), True),  # float64 sum
        "nan": (nan, False),
        "inf": (inf, False),
        "ints": (X.astype(np.int64), False),
        "float16": (X.astype(np.float16), False),
        "list": (X.tolist(), False),
        "1-D": (X[0], False),
        "no rows": (X[:0], False),
        "5 features": (np.hstack([X, X[:, :1]]), False),
    }
    targets = {
        "float": (y, True),
        "ints": (np.arange(12), True),
        "column": (y[:, None], True),
        "nan": (np.where(np.arange(12) == 5, np.nan, y), False),
        "no columns": (np.empty((12, 0)), False),
        "short": (y[:11], False),
        "objects": (y.astype(object), False),
        "list": (y.tolist(), False),
        "3-D": (y.reshape(12, 1, 1), False),
    }

    def theirs(X, y):
        return validate_data(
            est,
            X,
            y,
            accept_sparse=["csr", "csc", "coo"],
            multi_output=True,
            y_numeric=True,
            dtype=(np.float64, np.float32),
            reset=False,
        )

    for xname, (Xi, x_plain) in inputs.items():
        assert _passes_unchanged(est, Xi) == x_plain, xname
        for yname, (yi, y_plain) in targets.items():
            if Xi is X:
                assert _targets_pass_unchanged(yi, Xi) == y_plain, yname
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = _outcome(theirs, Xi, yi)
                got = _outcome(_validated, est, Xi, yi, reset=False, y_numeric=True)
            if isinstance(expected[0], type):
                assert got == expected, (xname, yname)
                continue
            for a, b, given in zip(got, expected, (Xi, yi)):
                assert a.dtype == b.dtype and a.shape == b.shape, (xname, yname)
                np.testing.assert_array_equal(a, b)
                if x_plain and y_plain:
                    assert a is given and b is given  # unchanged, by both
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert est.predict(np.asfortranarray(X)) == pytest.approx(est.predict(X.tolist()))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(nan)
    with pytest.raises(ValueError, match="4 features"):
        est.predict(wide[:, :3])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predicted_labels_are_the_binarizers_inverse(dtype):
    """predict's labels from the outputs are LabelBinarizer.inverse_transform's:
    the first largest output (ties, NaN), the threshold of one output (exactly 0.5,
    NaN), and multi-label indicators (through it)."""
    from sklearn.preprocessing import LabelBinarizer

    from fastbp.sklearn import _labels_of_outputs

    nan = np.nan
    multi = np.array(
        [[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.1, 0.8], [nan, 0.9, 0.1], [0.3, nan, nan]],
        dtype,
    )
    one = np.array([0.5, np.nextafter(dtype(0.5), dtype(1)), 0.49, nan, 1.0, 0.0], dtype)
    cases = [
        (["b", "a", "c"], multi, ["b", "a", "c", "a", "b"]),
        ([3, -1], one, [-1, 3, -1, -1, 3, -1]),
        (np.array([[0, 1, 1], [1, 0, 0]]), multi, None),  # multi-label
    ]
    for labels, outputs, expected in cases:
        binarizer = LabelBinarizer().fit(labels)
        got = _labels_of_outputs(binarizer, outputs)
        want = binarizer.inverse_transform(outputs)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        if expected is not None:
            assert got.tolist() == expected


def test_convergence_warnings_as_scikit_learn():
    from sklearn.exceptions import ConvergenceWarning

    X, y = classification()
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(3\) reached"):
        MLPClassifier(max_iter=3, random_state=0).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge after 2"):
        MLPClassifier(solver="lbfgs", max_iter=2, random_state=0).fit(X, y)


def test_lbfgs_runs_scipy_on_one_blas_thread_and_its_steps_on_the_budget(monkeypatch):
    """SciPy's L-BFGS-B does its algebra between the gradient steps on one BLAS
    thread, and the steps still get the whole thread budget (at two threads, BLAS
    workers left busy-waiting between the two made fits 4-5x slower); the budget is
    restored afterwards."""
    import scipy.optimize
    from threadpoolctl import threadpool_limits

    from fastbp import _threads

    X, y = classification()
    seen = {"minimize": [], "budgets": []}
    minimize, plan = scipy.optimize.minimize, _threads.plan

    def spy_minimize(*args, **kwargs):
        seen["minimize"].append(_threads.blas_threads())
        return minimize(*args, **kwargs)

    def spy_plan(flops, threads=None):
        seen["budgets"].append(threads)
        return plan(flops, threads)

    monkeypatch.setattr(scipy.optimize, "minimize", spy_minimize)
    monkeypatch.setattr(_threads, "plan", spy_plan)
    with threadpool_limits(2):
        clf = MLPClassifier(solver="lbfgs", max_iter=5, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            clf.fit(X, y)
        assert _threads.blas_threads() == 2
    assert seen["minimize"] == [1]
    assert len(seen["budgets"]) >= clf.n_iter_ and set(seen["budgets"]) == {2}
    with threadpool_limits(1):  # the budget is what BLAS had when fit began
        seen["budgets"].clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MLPClassifier(solver="lbfgs", max_iter=2, random_state=0).fit(X, y)
    assert set(seen["budgets"]) == {1}


def test_verbose_prints_scikit_learns_lines(capsys):
    X, y = classification()
    sk, ours = both(MLPClassifier, max_iter=3, random_state=0, verbose=True, early_stopping=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y)
        expected = capsys.readouterr().out
        ours.fit(X, y)
        got = capsys.readouterr().out
    assert got.splitlines()[0].startswith("Iteration 1, loss = ")
    assert "Validation score: " in got
    # The same numbers, to the 8 printed digits (or one unit in the last).
    for a, b in zip(got.split(), expected.split()):
        if a != b:
            assert float(a) == pytest.approx(float(b), abs=2e-8)


def test_sparse_input_equals_dense_and_scikit_learn():
    sp = pytest.importorskip("scipy.sparse")
    X = sp.random(80, 40, density=0.1, random_state=0, format="csr")
    y = np.random.default_rng(0).integers(0, 3, 80)
    sk, ours = both(MLPClassifier, hidden_layer_sizes=(7,), random_state=0, max_iter=8)
    dense = MLPClassifier(hidden_layer_sizes=(7,), random_state=0, max_iter=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X, y)
        ours.fit(X.tocsc(), y)
        dense.fit(X.toarray(), y)
    assert_same_fit(sk, ours)
    assert_same_fit(dense, ours)
    np.testing.assert_allclose(ours.predict_proba(X.tocoo()), sk.predict_proba(X), atol=1e-9)


def test_coefs_are_the_models_weights():
    """Writing into coefs_ or assigning new lists changes predictions, as in
    scikit-learn; a pickled estimator predicts the same and stays writable."""
    import pickle

    X, y = regression()
    est = MLPRegressor(hidden_layer_sizes=(5,), max_iter=5, random_state=0).fit(X, y)
    before = est.predict(X)
    est.intercepts_[-1] += 1.0
    np.testing.assert_allclose(est.predict(X), before + 1.0)
    est.coefs_ = [np.zeros_like(c) for c in est.coefs_]
    np.testing.assert_allclose(est.predict(X), est.intercepts_[-1][0])
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.predict(X), est.predict(X))
    copy.intercepts_[-1] += 2.0
    np.testing.assert_allclose(copy.predict(X), est.predict(X) + 2.0)


def test_pandas_feature_names_and_dtypes():
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=60),
            "b": pd.array(rng.integers(0, 5, 60), dtype="Int64"),
            "flag": rng.integers(0, 2, 60).astype(bool),
            "color": pd.Categorical(rng.choice(["red", "blue"], 60)),
        }
    )
    frame = pd.get_dummies(frame, columns=["color"])
    y = pd.Series(pd.Categorical(rng.choice(["no", "yes"], 60)))
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=Warning)
        est.fit(frame, y)
    assert list(est.feature_names_in_) == list(frame.columns)
    assert set(est.predict(frame)) <= {"no", "yes"}
    with pytest.warns(UserWarning, match="fitted with feature names"):
        est.predict(frame.to_numpy(dtype=float))
    with pytest.raises(ValueError, match="feature names"):
        est.predict(frame[frame.columns[::-1]])


def test_pipeline_grid_search_cross_val_and_clone():
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = classification(n=150)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=20, random_state=0))
    theirs = make_pipeline(StandardScaler(), sk_nn.MLPClassifier(max_iter=20, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(pipe, X, y, cv=3)
        np.testing.assert_allclose(scores, cross_val_score(theirs, X, y, cv=3), atol=1e-12)
    search = GridSearchCV(
        pipe, {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)]}, cv=2, n_jobs=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(X, y)
    assert search.best_params_["mlpclassifier__hidden_layer_sizes"] in [(4,), (16,)]
    twin = clone(search.best_estimator_[-1])
    assert twin.get_params() == search.best_estimator_[-1].get_params()
    assert not hasattr(twin, "coefs_")


# -- what scikit-learn does not offer ------------------------------------------------
def test_class_weight_is_sample_weight_by_class():
    from sklearn.utils.class_weight import compute_sample_weight

    X, y = classification()
    params = dict(hidden_layer_sizes=(6,), random_state=0, max_iter=5, solver="sgd")
    weighted = MLPClassifier(class_weight="balanced", **params)
    by_hand = MLPClassifier(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted.fit(X, y)
        by_hand.fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    assert_same_fit(by_hand, weighted, tol=1e-12)
    unweighted = MLPClassifier(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        unweighted.fit(X, y)
    assert not np.allclose(unweighted.coefs_[0], weighted.coefs_[0])
    with pytest.raises(ValueError, match=r"classes \['fox'\] that are not in classes_"):
        MLPClassifier(class_weight={"fox": 2.0}, **params).fit(X, y)
    with pytest.raises(ValueError, match="multi-label targets class_weight must be 'balanced'"):
        MLPClassifier(class_weight={0: 2.0}, **params).fit(X, np.c_[X[:, 0] > 0, X[:, 1] > 0])


def test_dropout_trains_reproducibly_and_predicts_without_masks():
    X, y = classification()
    make = lambda rate: MLPClassifier(  # noqa: E731
        hidden_layer_sizes=(16,), dropout=rate, random_state=4, max_iter=6
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b, plain = make(0.3).fit(X, y), make(0.3).fit(X, y), make(0.0).fit(X, y)
    np.testing.assert_array_equal(a.coefs_[0], b.coefs_[0])  # same seed, same masks
    assert not np.allclose(a.coefs_[0], plain.coefs_[0])
    np.testing.assert_array_equal(a.predict_proba(X), a.predict_proba(X))
    assert any(type(layer).__name__ == "Dropout" for layer in a.model_.layers)


def test_dtype_float32_trains_float64_input_in_float32():
    X, y = regression()
    params = dict(hidden_layer_sizes=(6,), random_state=0, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cast = MLPRegressor(dtype="float32", **params).fit(X, y)
        given = MLPRegressor(**params).fit(X.astype(np.float32), y)
    assert cast.model_.dtype == np.float32 and cast.coefs_[0].dtype == np.float32
    assert_same_fit(given, cast, tol=1e-6)


def test_validation_data_scores_and_loss_curve():
    from sklearn.metrics import log_loss

    X, y = classification(n=200)
    X_val, y_val = X[150:], y[150:]
    est = MLPClassifier(hidden_layer_sizes=(8,), random_state=0, max_iter=7, alpha=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X[:150], y[:150], validation_data=(X_val, y_val))
    assert len(est.validation_scores_) == len(est.validation_loss_curve_) == 7
    assert est.validation_scores_[-1] == est.score(X_val, y_val)
    # The validation loss is the log-loss of the final weights, without the penalty.
    assert est.validation_loss_curve_[-1] == pytest.approx(
        log_loss(y_val, est.predict_proba(X_val), labels=est.classes_), rel=1e-9
    )
    stopping = MLPClassifier(
        hidden_layer_sizes=(8,), random_state=0, max_iter=30, early_stopping=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stopping.fit(X[:150], y[:150], validation_data=(X_val, y_val))
    # The best weights are kept: their score on the given validation set is the best.
    assert stopping.score(X_val, y_val) == stopping.best_validation_score_
    assert stopping.best_validation_score_ == max(stopping.validation_scores_)
    with pytest.raises(ValueError, match="pair"):
        est.fit(X, y, validation_data=X_val)
    with pytest.raises(ValueError, match="stochastic solver"):
        MLPClassifier(solver="lbfgs").fit(X, y, validation_data=(X_val, y_val))


@pytest.mark.parametrize("activation", ["leaky_relu", "elu", "gelu", "softplus"])
def test_more_activations_predict_the_reference_forward(activation):
    from fastbp import _reference

    X, y = regression()
    est = MLPRegressor(hidden_layer_sizes=(6, 5), activation=activation, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.set_params(max_iter=5).fit(X, y)
    param = {"leaky_relu": 0.01, "elu": 1.0}.get(activation)
    weights = list(zip(est.coefs_, est.intercepts_))
    want = _reference.forward(
        weights, [activation, activation, "identity"], X, act_params=[param, param, None]
    )[-1]
    np.testing.assert_allclose(est.predict(X), want[:, 0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("loss", ["huber", "absolute_error"])
def test_robust_regression_losses(loss):
    """Huber and absolute error summed over the outputs; with outliers in y the
    fit's median absolute error beats squared error's."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = X @ [1.0, -2.0, 0.5]
    noisy = y.copy()
    noisy[::10] += rng.choice([-50.0, 50.0], 30)
    fits = {}
    for name in (loss, "squared_error"):
        est = MLPRegressor(
            loss=name,
            hidden_layer_sizes=(16,),
            random_state=0,
            max_iter=300,
            learning_rate_init=0.01,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[name] = est.fit(X, noisy)
    error = {k: np.median(np.abs(v.predict(X) - y)) for k, v in fits.items()}
    assert error[loss] < error["squared_error"]
