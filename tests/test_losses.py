"""Losses (fastbp/losses.py): MAE, Huber and Poisson; the hand-written forward and
backward; names, types and the output units a loss needs.

Every bad argument gets a clear Python exception naming the problem.
"""

import numpy as np
import pytest

import fastbp
from fastbp import _reference

from _models import clf_data


def test_loss_values_match_reference():
    """The hand-written loss API (forward, backward) against fastbp._reference."""
    out = np.array([[0.0, 3.0], [1.0, -2.0]])
    y = np.array([[1.0, 0.5], [1.0, 0.0]])  # residuals [[-1, 2.5], [0, -2]]
    for loss, name, target in (
        (fastbp.losses.MAE(), "mae", y),
        (fastbp.losses.Huber(delta=1.5), "huber", y),
        (fastbp.losses.Poisson(), "poisson", np.abs(y)),
    ):
        value, delta = _reference.loss_and_delta(name, out, target, param=loss.param)
        assert loss.forward(out, target) == pytest.approx(value, rel=1e-14)
        np.testing.assert_allclose(loss.backward(), delta, rtol=1e-14)


def test_poisson_regression_reaches_the_maximum_likelihood_fit():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(2000, 2))
    y = rng.poisson(np.exp(0.5 + X @ [1.0, -0.7]))
    model = fastbp.Sequential(
        [fastbp.Dense(1)], loss="poisson", optimizer=fastbp.SGD(lr=0.3), seed=0, dtype="float64"
    )
    model.fit(X, y, epochs=400, batch_size=2000)  # full-batch gradient descent
    # The maximum-likelihood fit, by Newton's method.
    A = np.column_stack([X, np.ones(len(X))])
    beta = np.zeros(3)
    for _ in range(30):
        mu = np.exp(A @ beta)
        beta += np.linalg.solve(A.T @ (A * mu[:, None]), A.T @ (y - mu))
    ((w, b),) = model.get_weights()
    np.testing.assert_allclose(np.r_[w[:, 0], b], beta, atol=1e-4)
    np.testing.assert_allclose(beta[:2], [1.0, -0.7], atol=0.1)
    np.testing.assert_allclose(
        model.predict(X[:5]),  # the rates exp(z)
        _reference.forward([(w, b)], ["exponential"], X[:5])[-1],
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match=">= 0"):
        model.fit(X, -np.ones(2000), epochs=1)


def test_exponential_last_layer_is_fused_with_poisson():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(10, 3)), rng.poisson(1.0, size=10)
    fused = fastbp.Sequential(
        [fastbp.Dense(1, "exponential")], loss="poisson", dtype="float64", input_dim=3, seed=0
    )
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
        model = fastbp.Sequential(
            [fastbp.Dense(1)], loss=loss, optimizer=fastbp.Adam(lr=0.05), seed=0, dtype="float64"
        )
        model.fit(X, y, epochs=60, batch_size=50)
        slopes[getattr(loss, "name", loss)] = model.get_weights()[0][0][0, 0]
    assert abs(slopes["huber"] - 2) < 0.1 and abs(slopes["mae"] - 2) < 0.1
    assert abs(slopes["huber"] - 2) < abs(slopes["mse"] - 2)


def test_new_losses_by_name_and_round_trip(tmp_path):
    for name in ("mae", "huber", "poisson"):
        assert fastbp.losses.get_loss(name).name == name
    model = fastbp.Sequential([fastbp.Dense(1)], loss=fastbp.losses.Huber(delta=0.3), input_dim=2)
    assert fastbp.load(model.save(tmp_path / "m.npz")).loss.delta == 0.3
    with pytest.raises(ValueError, match="delta"):
        fastbp.losses.Huber(delta=0)


# ---------------------------------------------------------------------------
# forward and backward by hand
# ---------------------------------------------------------------------------


def test_manual_cross_entropy_loss():
    z = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 5.0]])
    y = np.array([0, 1])
    loss = fastbp.CrossEntropy()
    value = loss.forward(z, y)
    expected_value, expected = _reference.loss_and_delta("cross_entropy", z, y)
    assert value == pytest.approx(expected_value, rel=1e-14)
    np.testing.assert_allclose(loss.backward(), expected, rtol=1e-13)
    assert loss(z, y) == value


def test_manual_loss_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="forward"):
        fastbp.MSE().backward()


# ---------------------------------------------------------------------------
# names, types and output units
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["hinge", "kld", ""])
def test_unknown_loss(name):
    with pytest.raises(ValueError, match=r"unknown loss.*expected one of"):
        fastbp.Sequential([fastbp.Dense(1)], loss=name)


@pytest.mark.parametrize("bad", [3, 1.5, ["mse"], fastbp.SGD])
def test_loss_of_wrong_type(bad):
    with pytest.raises(TypeError, match=r"loss must be a name or a Loss instance"):
        fastbp.Sequential([fastbp.Dense(1)], loss=bad)


def test_cross_entropy_rejects_single_unit_output():
    X, y = clf_data()
    model = fastbp.Sequential(
        [fastbp.Dense(4, "relu"), fastbp.Dense(1)], loss="cross_entropy", seed=0
    )
    with pytest.raises(
        ValueError, match=r"cross_entropy needs an output layer of at least 2 units"
    ):
        model.fit(X, y % 1, epochs=1)
    assert not model.built


def test_cross_entropy_single_unit_rejected_at_construction_with_input_dim():
    with pytest.raises(ValueError, match=r"at least 2 units"):
        fastbp.Sequential([fastbp.Dense(1, "softmax")], input_dim=3)


def test_cross_entropy_labels_in_a_column_say_to_pass_a_1d_array():
    # (n, 1) labels for a 3-class model were read as one probability column:
    # "y has 1 column(s) but the output layer has 3 unit(s)".
    X, y = clf_data()
    model = fastbp.Sequential([fastbp.Dense(3, "softmax")], seed=0)
    with pytest.raises(ValueError, match=r"y has shape \(24, 1\).*1-D array.*y\.ravel\(\)"):
        model.fit(X, y.reshape(-1, 1), epochs=1)
    with pytest.raises(ValueError, match=r"y_val has shape \(24, 1\)"):
        model.fit(X, y, epochs=1, validation_data=(X, y.reshape(-1, 1)))


def test_class_probabilities_must_sum_to_one():
    # Rows that do not sum to 1 trained silently on a loss that is not cross-entropy.
    X, y = clf_data()
    rng = np.random.default_rng(0)
    model = fastbp.Sequential([fastbp.Dense(3, "softmax")], seed=0)
    unnormalized = rng.random((24, 3))
    with pytest.raises(ValueError, match=r"rows must sum to 1.*row 0 sums to .*normalize them"):
        model.fit(X, unnormalized, epochs=1)
    multi_label = np.eye(3)[y]
    multi_label[5, 0] = 1  # two classes on: a multi-label row
    with pytest.raises(ValueError, match=r"row 5 sums to 2 \(1 of 24 rows do not\)"):
        model.fit(X, multi_label, epochs=1)
    with pytest.raises(ValueError, match=r"row 3 sums to 0"):
        model.fit(X, np.where(np.arange(24)[:, None] == 3, 0.0, np.eye(3)[y]), epochs=1)
    # Normalized rows pass whatever their rounding: float32 rows of 1000 classes
    # normalized in float32, float16 rows, one-hot integers, and label smoothing.
    wide = rng.random((24, 1000)).astype(np.float32)
    wide /= wide.sum(axis=1, keepdims=True)
    fastbp.Sequential([fastbp.Dense(1000)], loss="cross_entropy", seed=0).fit(X, wide, epochs=1)
    rows16 = rng.random((24, 3)).astype(np.float16)
    rows16 /= rows16.sum(axis=1, keepdims=True)
    for targets in (rows16, np.eye(3, dtype=int)[y], 0.9 * np.eye(3)[y] + 0.1 / 3):
        fastbp.Sequential([fastbp.Dense(3, "softmax")], seed=0, dtype="float64").fit(
            X, targets, epochs=1
        )
    # NaN and infinity are named as such, not as a bad sum.
    bad = np.eye(3)[y]
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"y contains infinity"):
        model.fit(X, bad, epochs=1)


@pytest.mark.parametrize(
    "loss,fused",
    [("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid"), ("poisson", "exponential")],
)
@pytest.mark.parametrize(
    "activation",
    ["sigmoid", "tanh", "relu", "leaky_relu", "softmax", "elu", "gelu", "softplus", "exponential"],
)
def test_an_output_activation_that_does_not_suit_the_loss_is_refused(loss, fused, activation):
    """A loss that fuses an output activation takes logits: the last layer is
    linear or ends with that very activation; anything else squashes the logits
    (tanh under cross-entropy caps every probability) and is refused, naming the
    pair and the fix. Regression losses take any output activation."""
    model = fastbp.Sequential([fastbp.Dense(4, "tanh"), fastbp.Dense(2, activation)], loss=loss)
    X, y = np.zeros((3, 5)), np.array([0, 1, 1]) if loss == "cross_entropy" else np.ones((3, 2))
    if activation == fused:
        model.fit(X, y, epochs=1)
        return
    with pytest.raises(ValueError, match=rf"'{activation}' activation does not suit the {loss}"):
        model.fit(X, y, epochs=1)
    assert not model.built
    fastbp.Sequential([fastbp.Dense(2, activation)], loss="mse").fit(X, np.ones((3, 2)), epochs=1)
