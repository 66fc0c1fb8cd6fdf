"""Optimizer steps worked by hand, through the model's fused step and by hand; names,
types and hyperparameters: every bad one gets a clear exception."""

import numpy as np
import pytest

import fastbp
from fastbp import _reference


def one_weight_model(optimizer, w=0.5, b=0.0):
    """y_hat = w * x + b, MSE, float64."""
    model = fastbp.Sequential(
        [fastbp.Dense(1)], loss="mse", optimizer=optimizer, dtype="float64", input_dim=1
    )
    model.set_weights([(np.array([[w]]), np.array([b]))])
    return model


# One sample x = 2, y = 3 with w = 0.5, b = 0: y_hat = 1, loss = (1 - 3)^2 = 4,
# dL/dw = 2 (y_hat - y) x = -8, dL/db = 2 (y_hat - y) = -4.
X1, Y1, GW, GB = np.array([[2.0]]), np.array([3.0]), -8.0, -4.0


def weights_after(model, steps):
    model.fit(X1, Y1, epochs=steps, batch_size=1, shuffle=False)
    ((w, b),) = model.get_weights()
    return w[0, 0], b[0]


def test_gradient_worked_by_hand():
    model = one_weight_model(fastbp.SGD(lr=0.1))
    loss, [(gw, gb)] = model.loss_and_gradients(X1, Y1)
    assert loss == 4.0 and gw[0, 0] == GW and gb[0] == GB


def test_sgd_one_step():
    w, b = weights_after(one_weight_model(fastbp.SGD(lr=0.1)), 1)
    assert w == 0.5 - 0.1 * GW and b == 0.0 - 0.1 * GB  # 1.3 and 0.4


def test_sgd_weight_decay_one_step():
    w, b = weights_after(one_weight_model(fastbp.SGD(lr=0.1, weight_decay=0.5), b=0.2), 1)
    # y_hat = 1.2: dL/dw = 2 (1.2 - 3) 2 = -7.2, dL/db = -3.6; decay adds 0.5 * p
    assert w == pytest.approx(0.5 - 0.1 * (-7.2 + 0.5 * 0.5), rel=1e-15)
    assert b == pytest.approx(0.2 - 0.1 * (-3.6 + 0.5 * 0.2), rel=1e-15)


def test_momentum_two_steps():
    w, b = weights_after(one_weight_model(fastbp.SGD(lr=0.1, momentum=0.9)), 2)
    # step 1: buf = g = (-8, -4); p = (1.3, 0.4)
    # step 2: y_hat = 1.3 * 2 + 0.4 = 3.0, so g = 0; buf = 0.9 * buf; p -= 0.1 * buf
    assert w == pytest.approx(1.3 - 0.1 * 0.9 * GW, rel=1e-15)
    assert b == pytest.approx(0.4 - 0.1 * 0.9 * GB, rel=1e-15)


def test_nesterov_two_steps():
    w, b = weights_after(one_weight_model(fastbp.SGD(lr=0.1, momentum=0.9, nesterov=True)), 2)
    # step 1: buf = g; p -= lr (g + 0.9 g) -> w = 0.5 + 0.1 * 15.2 = 2.02, b = 0.76
    w1, b1 = 0.5 - 0.1 * 1.9 * GW, 0.0 - 0.1 * 1.9 * GB
    # step 2: y_hat = 2 w1 + b1; g = 2 (y_hat - 3) (x, 1); buf = 0.9 buf + g
    r = 2 * (2 * w1 + b1 - 3)
    buf_w, buf_b = 0.9 * GW + 2 * r, 0.9 * GB + r
    assert w == pytest.approx(w1 - 0.1 * (2 * r + 0.9 * buf_w), rel=1e-14)
    assert b == pytest.approx(b1 - 0.1 * (r + 0.9 * buf_b), rel=1e-14)


def test_adam_one_step_moves_by_lr():
    # Step 1: m = 0.1 g, v = 0.001 g^2; m / (1 - 0.9) = g, sqrt(v / (1 - 0.999)) = |g|:
    # p -= lr * g / (|g| + eps).
    w, b = weights_after(one_weight_model(fastbp.Adam(lr=0.01)), 1)
    assert w == pytest.approx(0.5 + 0.01 * 8 / (8 + 1e-8), rel=1e-14)
    assert b == pytest.approx(0.0 + 0.01 * 4 / (4 + 1e-8), rel=1e-14)


def test_adam_two_steps():
    lr, b1, b2, eps = 0.05, 0.8, 0.9, 1e-3
    model = one_weight_model(fastbp.Adam(lr=lr, betas=(b1, b2), eps=eps))
    w, b = weights_after(model, 2)
    weights = [(np.array([[0.5]]), np.array([0.0]))]
    optimizer = _reference.Optimizer("adam", lr=lr, betas=(b1, b2), eps=eps)
    for _ in range(2):
        _reference.train_step(weights, X1, Y1, optimizer, activations=["identity"], loss="mse")
    assert w == pytest.approx(weights[0][0][0, 0], rel=1e-14)
    assert b == pytest.approx(weights[0][1][0], rel=1e-14)
    assert model.optimizer_state.step == optimizer.iterations == 2


def test_adam_continues_across_fit_calls():
    """Two fit calls of one epoch equal one fit call of two epochs (state is kept)."""
    a = one_weight_model(fastbp.Adam(lr=0.05))
    b = one_weight_model(fastbp.Adam(lr=0.05))
    a.fit(X1, Y1, epochs=2, batch_size=1, shuffle=False)
    b.fit(X1, Y1, epochs=1, batch_size=1, shuffle=False)
    b.fit(X1, Y1, epochs=1, batch_size=1, shuffle=False)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)


@pytest.mark.parametrize(
    "optimizer",
    [
        fastbp.SGD(lr=0.1),
        fastbp.SGD(lr=0.1, momentum=0.9, weight_decay=0.01),
        fastbp.SGD(lr=0.1, momentum=0.5, nesterov=True),
        fastbp.Adam(lr=0.02, weight_decay=0.1),
    ],
    ids=["sgd", "momentum", "nesterov", "adam"],
)
def test_hand_written_loop_equals_fused_step(optimizer):
    """Layers, loss and optimizer used one by one reproduce the model's fused step."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(10, 3)), rng.normal(size=(10, 2))
    model = fastbp.Sequential(
        [fastbp.Dense(4, "tanh"), fastbp.Dense(2)],
        loss="mse",
        optimizer=type(optimizer)(**optimizer.get_config()),
        dtype="float64",
        seed=0,
        input_dim=3,
    )
    hidden, out = fastbp.Dense(4, "tanh"), fastbp.Dense(2)
    hidden.build(3, dtype=np.float64)
    out.build(4, dtype=np.float64)
    (w1, b1), (w2, b2) = model.get_weights()
    hidden.weight[...], hidden.bias[...], out.weight[...], out.bias[...] = w1, b1, w2, b2
    mse, opt = fastbp.MSE(), type(optimizer)(**optimizer.get_config())
    for _ in range(3):
        for start in (0, 4, 8):  # batches of 4, 4 and 2 rows
            xb, yb = X[start : start + 4], y[start : start + 4]
            mse.forward(out.forward(hidden.forward(xb)), yb)
            hidden.backward(out.backward(mse.backward()))
            opt.step(hidden.params + out.params, hidden.grads + out.grads)
    model.fit(X, y, epochs=3, batch_size=4, shuffle=False)
    for (w, b), layer in zip(model.get_weights(), (hidden, out)):
        np.testing.assert_allclose(w, layer.weight, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b, layer.bias, rtol=1e-12, atol=1e-14)
    assert opt.iterations == model.optimizer_state.step == 9


def test_update_rules_in_docstrings():
    assert "momentum * b + g" in fastbp.SGD.__doc__
    assert "(lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)" in fastbp.Adam.__doc__


def test_optimizer_by_name():
    model = fastbp.Sequential([fastbp.Dense(1)], optimizer="sgd", input_dim=2)
    assert isinstance(model.optimizer, fastbp.SGD) and model.optimizer.lr == 0.01
    assert isinstance(fastbp.Sequential([fastbp.Dense(1)]).optimizer, fastbp.Adam)


def test_adamw_one_step_decays_then_moves_by_lr():
    w, b = weights_after(one_weight_model(fastbp.AdamW(lr=0.01, weight_decay=0.5)), 1)
    assert w == pytest.approx(0.5 * (1 - 0.01 * 0.5) + 0.01 * 8 / (8 + 1e-8), rel=1e-14)


def test_adagrad_one_step():
    w, b = weights_after(one_weight_model(fastbp.Adagrad(lr=0.1, initial_accumulator_value=1.0)), 1)
    assert w == pytest.approx(0.5 + 0.1 * 8 / (np.sqrt(1 + 64) + 1e-10), rel=1e-14)
    assert b == pytest.approx(0.0 + 0.1 * 4 / (np.sqrt(1 + 16) + 1e-10), rel=1e-14)


def test_rmsprop_one_step():
    w, _ = weights_after(one_weight_model(fastbp.RMSProp(lr=0.01, alpha=0.9)), 1)
    assert w == pytest.approx(0.5 + 0.01 * 8 / (np.sqrt(0.1 * 64) + 1e-8), rel=1e-14)


def test_clipnorm_by_hand():
    # Gradient (-8, -4) has norm sqrt(80); clipped to norm 1 it is (-8, -4) / sqrt(80).
    w, b = weights_after(one_weight_model(fastbp.SGD(lr=1.0, clipnorm=1.0)), 1)
    scale = 1.0 / (np.sqrt(80) + 1e-6)
    assert w == pytest.approx(0.5 + 8 * scale, rel=1e-12)
    assert b == pytest.approx(0.0 + 4 * scale, rel=1e-12)


def test_clipvalue_by_hand():
    w, b = weights_after(one_weight_model(fastbp.SGD(lr=0.1, clipvalue=5.0)), 1)
    assert w == pytest.approx(0.5 + 0.1 * 5.0) and b == pytest.approx(0.0 + 0.1 * 4.0)


@pytest.mark.parametrize(
    "optimizer",
    [
        fastbp.SGD(lr=0.1, momentum=0.9, weight_decay=0.1),
        fastbp.AdamW(lr=0.1),
        fastbp.RMSProp(lr=0.1, momentum=0.5),
        fastbp.Adagrad(lr=0.1),
    ],
    ids=str,
)
def test_frozen_layer_is_not_updated(optimizer):
    """trainable=False: the layer's weights stay exactly as they were (no update, no
    momentum, no weight decay) while the other layers train."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 3, 40)
    model = fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(6, "tanh"), fastbp.Dense(3, "softmax")],
        optimizer=optimizer,
        seed=0,
        dtype="float64",
        input_dim=4,
    )
    before = model.get_weights()
    model.layers[1].trainable = False
    model.fit(X, y, epochs=3, batch_size=8)
    after = model.get_weights()
    np.testing.assert_array_equal(after[1][0], before[1][0])
    np.testing.assert_array_equal(after[1][1], before[1][1])
    assert not np.array_equal(after[0][0], before[0][0])
    assert not np.array_equal(after[2][0], before[2][0])
    # loss_and_gradients still reports the frozen layer's true gradient.
    _, grads = model.loss_and_gradients(X, y)
    assert np.abs(grads[1][0]).max() > 0
    # Unfrozen, it trains again.
    model.layers[1].trainable = True
    model.fit(X, y, epochs=1, batch_size=8)
    assert not np.array_equal(model.get_weights()[1][0], before[1][0])


def test_frozen_first_layers_equal_training_on_their_features():
    """Freezing the first layer (transfer learning) trains the rest exactly as a model
    fed the frozen layer's outputs would."""
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 3)), rng.normal(size=30)
    model = fastbp.Sequential(
        [fastbp.Dense(5, "tanh"), fastbp.Dense(1)],
        loss="mse",
        optimizer=fastbp.SGD(lr=0.1),
        seed=0,
        dtype="float64",
        input_dim=3,
    )
    model.layers[0].trainable = False
    (w1, b1), (w2, b2) = model.get_weights()
    head = fastbp.Sequential(
        [fastbp.Dense(1)], loss="mse", optimizer=fastbp.SGD(lr=0.1), dtype="float64", input_dim=5
    )
    head.set_weights([(w2, b2)])
    model.fit(X, y, epochs=2, batch_size=10, shuffle=False)
    features = _reference.forward([(w1, b1)], ["tanh"], X)[0]
    head.fit(features, y, epochs=2, batch_size=10, shuffle=False)
    np.testing.assert_allclose(model.get_weights()[1][0], head.get_weights()[0][0], rtol=1e-12)


@pytest.mark.parametrize("bad", [dict(clipnorm=0), dict(clipvalue=-1), dict(clipnorm=float("nan"))])
def test_clipping_arguments_checked(bad):
    with pytest.raises(ValueError, match="clip"):
        fastbp.Adam(**bad)


# ---------------------------------------------------------------------------
# names, types and hyperparameters: every bad one is a clear exception
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nadam", "lbfgs", ""])
def test_unknown_optimizer(name):
    with pytest.raises(ValueError, match=r"unknown optimizer.*expected one of"):
        fastbp.Sequential([fastbp.Dense(1)], optimizer=name)


@pytest.mark.parametrize("bad", [3, None, 0.01, fastbp.MSE()])
def test_optimizer_of_wrong_type(bad):
    with pytest.raises(TypeError, match=r"optimizer must be a name or an Optimizer instance"):
        fastbp.Sequential([fastbp.Dense(1)], optimizer=bad)


@pytest.mark.parametrize("cls", [fastbp.SGD, fastbp.Adam])
@pytest.mark.parametrize(
    "lr,pattern",
    [
        (0, r"lr must be > 0"),
        (0.0, r"lr must be > 0"),
        (-0.1, r"lr must be > 0"),
        (float("nan"), r"lr must be a finite number"),
        (np.float32("nan"), r"lr must be a finite number"),
        (float("inf"), r"lr must be a finite number"),
        ("0.1", r"lr must be a finite number"),
        (None, r"lr must be a finite number"),
        (True, r"lr must be a finite number"),
    ],
)
def test_learning_rate(cls, lr, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(lr=lr)


@pytest.mark.parametrize(
    "momentum,pattern",
    [
        (-0.1, r"momentum must be >= 0"),
        (1.0, r"momentum must be < 1"),
        (1.5, r"momentum must be < 1"),
        (float("nan"), r"momentum must be a finite number"),
    ],
)
def test_sgd_momentum(momentum, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastbp.SGD(momentum=momentum)


def test_sgd_nesterov_needs_momentum():
    with pytest.raises(ValueError, match=r"nesterov=True needs a momentum > 0"):
        fastbp.SGD(nesterov=True)
    with pytest.raises(TypeError, match=r"nesterov must be True or False"):
        fastbp.SGD(momentum=0.9, nesterov="yes")
    assert fastbp.SGD(momentum=0.9, nesterov=True).nesterov is True


@pytest.mark.parametrize(
    "betas,pattern",
    [
        ((1.0, 0.999), r"beta1 must be < 1"),
        ((-0.1, 0.999), r"beta1 must be >= 0"),
        ((0.9, 1.0), r"beta2 must be < 1"),
        ((0.9, -0.5), r"beta2 must be >= 0"),
        ((0.9, float("nan")), r"beta2 must be a finite number"),
        ((0.9,), r"betas must be a pair"),
        ((0.9, 0.99, 0.999), r"betas must be a pair"),
        (0.9, r"betas must be a pair"),
    ],
)
def test_adam_betas(betas, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastbp.Adam(betas=betas)


@pytest.mark.parametrize(
    "eps,pattern",
    [
        (-1e-8, r"eps must be >= 0"),
        (float("inf"), r"eps must be a finite number"),
    ],
)
def test_adam_eps(eps, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastbp.Adam(eps=eps)


@pytest.mark.parametrize("cls", [fastbp.SGD, fastbp.Adam])
@pytest.mark.parametrize(
    "wd,pattern",
    [
        (-0.01, r"weight_decay must be >= 0"),
        (float("nan"), r"weight_decay must be a finite number"),
    ],
)
def test_weight_decay(cls, wd, pattern):
    with pytest.raises(ValueError, match=pattern):
        cls(weight_decay=wd)
