"""MAE, Huber and Poisson losses; sample and class weights."""
import numpy as np
import pytest

import fastbp
from fastbp import _reference, _threads


def test_loss_values_match_reference():
    """The hand-written loss API (forward, backward) against fastbp._reference."""
    out = np.array([[0.0, 3.0], [1.0, -2.0]])
    y = np.array([[1.0, 0.5], [1.0, 0.0]])  # residuals [[-1, 2.5], [0, -2]]
    for loss, name, target in ((fastbp.losses.MAE(), "mae", y),
                               (fastbp.losses.Huber(delta=1.5), "huber", y),
                               (fastbp.losses.Poisson(), "poisson", np.abs(y))):
        value, delta = _reference.loss_and_delta(name, out, target, param=loss.param)
        assert loss.forward(out, target) == pytest.approx(value, rel=1e-14)
        np.testing.assert_allclose(loss.backward(), delta, rtol=1e-14)


def test_poisson_regression_reaches_the_maximum_likelihood_fit():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(2000, 2))
    y = rng.poisson(np.exp(0.5 + X @ [1.0, -0.7]))
    model = fastbp.Sequential([fastbp.Dense(1)], loss="poisson", optimizer=fastbp.SGD(lr=0.3),
                              seed=0, dtype="float64")
    model.fit(X, y, epochs=400, batch_size=2000)  # full-batch gradient descent
    # The maximum-likelihood fit, by Newton's method.
    A = np.column_stack([X, np.ones(len(X))])
    beta = np.zeros(3)
    for _ in range(30):
        mu = np.exp(A @ beta)
        beta += np.linalg.solve(A.T @ (A * mu[:, None]), A.T @ (y - mu))
    (w, b), = model.get_weights()
    np.testing.assert_allclose(np.r_[w[:, 0], b], beta, atol=1e-4)
    np.testing.assert_allclose(beta[:2], [1.0, -0.7], atol=0.1)
    np.testing.assert_allclose(model.predict(X[:5]),  # the rates exp(z)
                               _reference.forward([(w, b)], ["exponential"], X[:5])[-1],
                               rtol=1e-12)
    with pytest.raises(ValueError, match=">= 0"):
        model.fit(X, -np.ones(2000), epochs=1)


def test_exponential_last_layer_is_fused_with_poisson():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(10, 3)), rng.poisson(1.0, size=10)
    fused = fastbp.Sequential([fastbp.Dense(1, "exponential")], loss="poisson",
                              dtype="float64", input_dim=3, seed=0)
    plain = fastbp.Sequential([fastbp.Dense(1)], loss="poisson", dtype="float64", input_dim=3)
    plain.set_weights(fused.get_weights())
    np.testing.assert_array_equal(fused.predict(X), plain.predict(X))
    assert fused.loss_and_gradients(X, y)[0] == plain.loss_and_gradients(X, y)[0]


def test_huber_is_robust_to_outliers():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 1))
    y = 2 * X[:, 0]
    y[:20] += 50  # outliers
    slopes = {}
    for loss in ("mse", fastbp.losses.Huber(delta=1.0), "mae"):
        model = fastbp.Sequential([fastbp.Dense(1)], loss=loss, optimizer=fastbp.Adam(lr=0.05),
                                  seed=0, dtype="float64")
        model.fit(X, y, epochs=60, batch_size=50)
        slopes[getattr(loss, "name", loss)] = model.get_weights()[0][0][0, 0]
    assert abs(slopes["huber"] - 2) < 0.1 and abs(slopes["mae"] - 2) < 0.1
    assert abs(slopes["huber"] - 2) < abs(slopes["mse"] - 2)


def one_step(sample_weight=None, class_weight=None, X=None, y=None, threads=1, loss="mse"):
    model = fastbp.Sequential([fastbp.Dense(4, "tanh"), fastbp.Dense(3)], loss=loss,
                              optimizer=fastbp.SGD(lr=0.5), dtype="float64", seed=0,
                              input_dim=X.shape[1], threads=threads)
    model.fit(X, y, epochs=1, batch_size=len(X), sample_weight=sample_weight,
              class_weight=class_weight)
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
    model = fastbp.Sequential([fastbp.Dense(5, "relu"), fastbp.Dense(3)], loss="cross_entropy",
                              optimizer=fastbp.SGD(lr=0.2), dtype="float64", seed=0,
                              threads=threads)
    model.fit(X, y, epochs=2, batch_size=7, sample_weight=w)
    reference = fastbp.Sequential([fastbp.Dense(5, "relu"), fastbp.Dense(3)],
                                  loss="cross_entropy", optimizer=fastbp.SGD(lr=0.2),
                                  dtype="float64", seed=0, threads=1)
    reference.fit(X, y, epochs=2, batch_size=7, sample_weight=w)
    np.testing.assert_allclose(model.flat_params, reference.flat_params, rtol=1e-10)
    unweighted = fastbp.Sequential([fastbp.Dense(5, "relu"), fastbp.Dense(3)],
                                   loss="cross_entropy", optimizer=fastbp.SGD(lr=0.2),
                                   dtype="float64", seed=0)
    unweighted.fit(X, y, epochs=2, batch_size=7)
    assert not np.allclose(model.flat_params, unweighted.flat_params)


def test_class_weight_dict_and_balanced():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(12, 2)), np.array([0] * 8 + [1] * 3 + [2])
    by_dict = one_step(class_weight={0: 0.5, 2: 4.0}, X=X, y=y, loss="cross_entropy")
    by_sample = one_step(sample_weight=np.array([0.5] * 8 + [1.0] * 3 + [4.0]), X=X, y=y,
                         loss="cross_entropy")
    np.testing.assert_array_equal(by_dict.flat_params, by_sample.flat_params)
    balanced = one_step(class_weight="balanced", X=X, y=y, loss="cross_entropy")
    expected = 12 / (3 * np.array([8.0] * 8 + [3.0] * 3 + [1.0]))
    np.testing.assert_allclose(
        balanced.flat_params,
        one_step(sample_weight=expected, X=X, y=y, loss="cross_entropy").flat_params, rtol=1e-12)


@pytest.mark.parametrize("kwargs,message", [
    (dict(sample_weight=np.ones(5)), "entries"),
    (dict(sample_weight=-np.ones(12)), ">= 0"),
    (dict(sample_weight=np.zeros(12)), "all zero"),
    (dict(sample_weight=np.ones((12, 1))), "1-D"),
    (dict(class_weight={7: 1.0}), "not a class"),
    (dict(class_weight="even"), "balanced"),
    (dict(class_weight=[1, 2]), "dict"),
])
def test_weights_checked(kwargs, message):
    X, y = np.ones((12, 2)), np.arange(12) % 3
    model = fastbp.Sequential([fastbp.Dense(3)], loss="cross_entropy")
    with pytest.raises((ValueError, TypeError), match=message):
        model.fit(X, y, epochs=1, **kwargs)


def test_class_weight_needs_labels():
    with pytest.raises(ValueError, match="class labels"):
        fastbp.Sequential([fastbp.Dense(1)], loss="mse").fit(np.ones((4, 2)), np.ones(4),
                                                             class_weight={0: 2.0})


def test_new_losses_by_name_and_round_trip(tmp_path):
    for name in ("mae", "huber", "poisson"):
        assert fastbp.losses.get_loss(name).name == name
    model = fastbp.Sequential([fastbp.Dense(1)], loss=fastbp.losses.Huber(delta=0.3), input_dim=2)
    assert fastbp.load(model.save(tmp_path / "m.npz")).loss.delta == 0.3
    with pytest.raises(ValueError, match="delta"):
        fastbp.losses.Huber(delta=0)
