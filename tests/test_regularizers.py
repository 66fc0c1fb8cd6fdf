"""L1 and L2 penalties: in the loss, in the gradients (finite differences), in training."""

import numpy as np
import pytest

import fastbp
from fastbp import _reference
from fastbp.regularizers import L1, L1L2, L2

from _gradcheck import flatten, numerical_gradient, relative_error


def model_with(kernel, bias, loss="mse", dtype="float64", seed=0):
    return fastbp.Sequential(
        [
            fastbp.Dense(5, "tanh", kernel_regularizer=kernel, bias_regularizer=bias),
            fastbp.Dense(2, kernel_regularizer=kernel),
        ],
        loss=loss,
        optimizer=fastbp.SGD(lr=0.05),
        dtype=dtype,
        seed=seed,
        input_dim=3,
    )


@pytest.mark.parametrize(
    "kernel,bias", [(L2(0.1), None), (L1(0.05), L2(0.2)), (L1L2(0.03, 0.07), L1(0.1))]
)
def test_penalty_in_loss_and_gradient(kernel, bias):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(9, 3)), rng.normal(size=(9, 2))
    model = model_with(kernel, bias)
    model.layers[0].bias[:] = rng.normal(size=5)  # away from L1's kink at 0
    loss, grads = model.loss_and_gradients(X, y)
    # The reference adds l1 sum|w| + l2 sum w^2 of each penalized weight and bias.
    penalties = [
        (kernel.l1, kernel.l2, bias.l1 if bias else 0.0, bias.l2 if bias else 0.0),
        (kernel.l1, kernel.l2, 0.0, 0.0),
    ]
    expected, expected_grads = _reference.loss_and_gradients(
        model.get_weights(), X, y, activations=["tanh", "identity"], loss="mse", penalties=penalties
    )
    assert loss == pytest.approx(expected, rel=1e-13)
    np.testing.assert_allclose(flatten(grads), flatten(expected_grads), rtol=1e-12, atol=1e-15)
    assert relative_error(flatten(grads), numerical_gradient(model, X, y)) < 1e-6
    assert model.evaluate(X, y)["loss"] == pytest.approx(expected, rel=1e-12)


def test_l2_gradient_is_2aw():
    model = fastbp.Sequential(
        [fastbp.Dense(1, kernel_regularizer=L2(0.5))], loss="mse", dtype="float64", input_dim=1
    )
    model.set_weights([(np.array([[3.0]]), np.array([0.0]))])
    # y_hat = 3 x = 3 = y: the data term is 0, so only the penalty remains.
    loss, [(gw, gb)] = model.loss_and_gradients(np.array([[1.0]]), np.array([3.0]))
    assert loss == 0.5 * 9 and gw[0, 0] == 2 * 0.5 * 3 and gb[0] == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_reported_training_loss_includes_penalty(threads, monkeypatch):
    from fastbp import _threads

    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(12, 3)), rng.normal(size=(12, 2))
    model = model_with(L2(0.3), L1(0.2))
    model.threads = threads
    expected = model.loss_and_gradients(X, y)[0]
    model.fit(X, y, epochs=1, batch_size=12)  # one full batch: the loss before the step
    assert model.history["loss"][0] == pytest.approx(expected, rel=1e-12)


def test_training_reaches_the_ridge_solution_and_l1_zeroes_useless_inputs():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(300, 6))
    y = X[:, 0] - 2 * X[:, 1] + 0.1 * rng.normal(size=300)  # inputs 2..5 are useless
    weights = {}
    for name, reg in (("none", None), ("l2", L2(0.5)), ("l1", L1(0.05))):
        model = fastbp.Sequential(
            [fastbp.Dense(1, kernel_regularizer=reg)],
            loss="mse",
            optimizer=fastbp.SGD(lr=0.05),
            seed=0,
            dtype="float64",
        )
        model.fit(X, y, epochs=200, batch_size=300)  # full-batch gradient descent
        weights[name] = model.get_weights()[0]
    # Ridge: minimize mean((X w + b - y)^2) + a |w|^2; the bias is not penalized.
    A = np.column_stack([X, np.ones(300)])
    penalty = np.diag([0.5] * 6 + [0.0])
    ridge = np.linalg.solve(A.T @ A / 300 + penalty, A.T @ y / 300)
    np.testing.assert_allclose(weights["l2"][0][:, 0], ridge[:6], atol=1e-6)
    np.testing.assert_allclose(weights["l2"][1], ridge[6:], atol=1e-6)
    assert np.linalg.norm(weights["l2"][0]) < 0.7 * np.linalg.norm(weights["none"][0])
    # L1 sets the useless weights to (nearly) zero, while plain least squares does not.
    assert np.abs(weights["l1"][0][2:, 0]).max() < 0.05 * 0.05 * 2
    assert np.abs(weights["none"][0][2:, 0]).max() > 0.003


def test_frozen_layer_penalty_still_reported():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    model = model_with(L2(0.2), None)
    model.layers[0].trainable = False
    expected = model.loss_and_gradients(X, y)[0]
    model.fit(X, y, epochs=1, batch_size=10)
    assert model.history["loss"][0] == pytest.approx(expected, rel=1e-12)


def test_regularizers_validate_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="l2"):
        L2(-1)
    with pytest.raises(TypeError, match="regularizer"):
        fastbp.Dense(2, kernel_regularizer=0.1)
    model = model_with(L1L2(0.1, 0.2), L2(0.3))
    loaded = fastbp.load(model.save(tmp_path / "m.npz"))
    assert loaded.layers[0].kernel_regularizer.get_config() == {"l1": 0.1, "l2": 0.2}
    assert loaded.layers[0].bias_regularizer.l2 == 0.3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_penalty_values_in_float64_and_l2_without_a_copy(dtype):
    # The value: l1 * sum|w| + l2 * sum w^2 in float64 (to the rounding of another
    # summation order), from floats of either width, integers and lists. The L2 sum
    # allocates no copy of the weights: a fit evaluates it at its peak of memory.
    import tracemalloc

    w = np.random.default_rng(0).normal(size=(2000, 500)).astype(dtype)  # 4 or 8 MB
    exact = w.astype(np.float64)
    for reg, expected in (
        (L2(0.3), 0.3 * (exact**2).sum()),
        (L1(0.2), 0.2 * np.abs(exact).sum()),
        (L1L2(0.2, 0.3), 0.2 * np.abs(exact).sum() + 0.3 * (exact**2).sum()),
    ):
        assert reg.penalty(w) == pytest.approx(expected, rel=1e-12)
    assert L1L2(1.0, 2.0).penalty([[1, -2], [3, 0]]) == 6 + 2 * 14
    assert L2(0.5).penalty(np.array([3], dtype=np.int64)) == 4.5
    tracemalloc.start()
    try:
        L2(0.3).penalty(w)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**18  # einsum's buffers for the cast, whatever the size
