"""fastbp._reference, the NumPy statement of the training algorithm: checked itself
(finite differences, worked examples, PyTorch where installed), then fastbp's public
API checked against it (loss_and_gradients, predict, evaluate, fit)."""

import zlib

import numpy as np
import pytest

import fastbp
from fastbp import _reference as ref
from fastbp.regularizers import L1, L1L2, L2

import _refmodel
from _models import make_targets, suited_outputs, suits

ACTIVATIONS = list(ref.ACTIVATIONS)
LOSSES = list(ref.LOSSES)


def rng_for(*key):
    return np.random.default_rng(zlib.crc32("-".join(map(str, key)).encode()))


def random_weights(sizes, rng):
    # Positive biases keep ReLU's z off its kink at 0 (where no finite difference
    # applies) and most units alive.
    return [
        (rng.normal(size=(a, b)) / np.sqrt(a), rng.uniform(0.1, 0.4, size=b))
        for a, b in zip(sizes[:-1], sizes[1:])
    ]


# -- the reference itself -------------------------------------------------------------
def numeric_gradient(f, weights, h=1e-6):
    """Central differences of f() over every entry of every W and b (changed in place)."""
    grads = []
    for pair in weights:
        grads.append([])
        for p in pair:
            g = np.empty_like(p)
            for i in np.ndindex(p.shape):
                saved = p[i]
                p[i] = saved + h
                up = f()
                p[i] = saved - h
                down = f()
                p[i] = saved
                g[i] = (up - down) / (2 * h)
            grads[-1].append(g)
    return grads


def flat(grads):
    return np.concatenate([np.ravel(a) for pair in grads for a in pair])


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


def check_gradient(weights, X, y, **network):
    """The reference's gradient against central finite differences of its loss. In
    float64 with h = 1e-6 their difference is O(h^2) truncation plus O(1e-16 / h)
    rounding, about 1e-9 relative: 1e-6 leaves room and still catches any wrong term."""
    value, grads = ref.loss_and_gradients(weights, X, y, **network)
    assert np.isfinite(value)
    numeric = numeric_gradient(lambda: ref.loss_and_gradients(weights, X, y, **network)[0], weights)
    assert np.abs(flat(grads)).max() > 0
    assert relative_error(flat(grads), flat(numeric)) < 1e-6


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["same", "identity"])
def test_reference_gradient_matches_finite_differences(activation, loss, output):
    rng = rng_for(activation, loss, output)
    weights = random_weights([5, 6, 5, 3], rng)
    if activation == "exponential":  # exp(exp(exp(z))) overflows unless z is small
        weights = [(w * 0.3, b * 0.3) for w, b in weights]
    X = rng.normal(size=(7, 5))
    y = make_targets(loss, 7, 3, rng)
    check_gradient(
        weights,
        X,
        y,
        activations=[activation, activation, activation if output == "same" else "identity"],
        loss=loss,
        act_params=[0.2, 0.7, None],
    )


@pytest.mark.parametrize("n,sizes", [(1, [11, 13, 9, 7]), (3, [1, 1]), (9, [2, 17, 3])])
def test_reference_gradient_odd_shapes(n, sizes):
    rng = rng_for(n, sizes)
    weights = random_weights(sizes, rng)
    X, y = rng.normal(size=(n, sizes[0])), rng.normal(size=(n, sizes[-1]))
    check_gradient(
        weights,
        X,
        y,
        activations=["tanh"] * (len(sizes) - 2) + ["identity"],
        loss="huber",
        loss_param=0.5,
    )


@pytest.mark.parametrize(
    "skips", [[None, -1, None], [None, 0, None], [-1, None, 1], [None, None, 1]]
)
def test_reference_gradient_through_skips_penalties_and_weights(skips):
    rng = rng_for(skips)
    weights = random_weights([4, 4, 4, 4], rng)
    X = rng.normal(size=(6, 4))
    y = make_targets("cross_entropy", 6, 4, rng, soft=True)
    check_gradient(
        weights,
        X,
        y,
        activations=["gelu", "elu", "identity"],
        skips=skips,
        loss="cross_entropy",
        penalties=[(0.01, 0.02, 0.03, 0.04), None, (0.0, 0.1, 0.05, 0.0)],
        sample_weight=rng.uniform(0.1, 2.0, 6),
    )


def test_reference_input_gradient_matches_finite_differences():
    rng = rng_for("input")
    weights = random_weights([3, 5, 3, 2], rng)
    weights[1] = (rng.normal(size=(5, 3)), rng.normal(size=3))
    X = rng.normal(size=(4, 3))
    activations, skips = ["softplus", "tanh", "identity"], [None, -1, None]
    seed = rng.normal(size=(4, 2))  # L = sum(seed * output)

    def value():
        return float((seed * ref.forward(weights, activations, X, skips)[-1]).sum())

    _, d_X = ref.backward(weights, activations, X, seed, skips)
    numeric = np.empty_like(X)
    for i in np.ndindex(X.shape):
        saved = X[i]
        X[i] = saved + 1e-6
        up = value()
        X[i] = saved - 1e-6
        down = value()
        X[i] = saved
        numeric[i] = (up - down) / 2e-6
    np.testing.assert_allclose(d_X, numeric, rtol=1e-6, atol=1e-9)


def test_reference_residual_forward_is_x_plus_f_of_x():
    rng = rng_for("residual")
    weights = random_weights([3, 4, 3, 3], rng)
    X = rng.normal(size=(5, 3))
    h1, h2, out = ref.forward(weights, ["tanh", "relu", "identity"], X, skips=[None, None, -1])
    (w1, b1), (w2, b2), (w3, b3) = weights
    np.testing.assert_allclose(h1, np.tanh(X @ w1 + b1), rtol=1e-14)
    np.testing.assert_allclose(h2, np.maximum(h1 @ w2 + b2, 0), rtol=1e-14)
    np.testing.assert_allclose(out, X + h2 @ w3 + b3, rtol=1e-14, atol=1e-15)


def test_reference_loss_definitions_worked_by_hand():
    out = np.array([[0.0, 3.0], [1.0, -2.0]])
    y = np.array([[1.0, 0.5], [1.0, 0.0]])  # residuals [[-1, 2.5], [0, -2]]
    assert ref.loss_and_delta("mse", out, y)[0] == pytest.approx((1 + 6.25 + 0 + 4) / 4)
    assert ref.loss_and_delta("mae", out, y)[0] == pytest.approx((1 + 2.5 + 0 + 2) / 4)
    # Huber with delta 1.5: 0.5, 1.5 (2.5 - 0.75), 0, 1.5 (2 - 0.75).
    value, delta = ref.loss_and_delta("huber", out, y, param=1.5)
    assert value == pytest.approx((0.5 + 2.625 + 0 + 1.875) / 4)
    np.testing.assert_allclose(delta, [[-0.25, 0.375], [0, -0.375]])
    # Weighted: sample weights 3 and 1 make the mean (3 * row 0 + row 1) / (4 * 2).
    assert ref.loss_and_delta("mae", out, y, sample_weight=[3.0, 1.0])[0] == pytest.approx(
        (3 * 3.5 + 2) / 8
    )
    # Cross-entropy of equal logits over 4 classes is log 4, the delta (1/4 - onehot) / n.
    value, delta = ref.loss_and_delta("cross_entropy", np.zeros((2, 4)), np.array([1, 3]))
    assert value == pytest.approx(np.log(4))
    np.testing.assert_allclose(delta, (0.25 - np.eye(4)[[1, 3]]) / 2)
    # Binary cross-entropy at z = 0 is log 2 whatever the target; Poisson exp(z) - t z.
    assert ref.loss_and_delta("binary_cross_entropy", np.zeros((1, 2)), np.array([[0.0, 1.0]]))[
        0
    ] == pytest.approx(np.log(2))
    assert ref.loss_and_delta("poisson", np.array([[0.0, 1.0]]), np.array([[2.0, 3.0]]))[
        0
    ] == pytest.approx((1 + np.e - 3) / 2)


def test_reference_train_epoch_is_minibatch_gradient_descent():
    """Plain SGD over minibatches order[b * 4:(b + 1) * 4] of 11 rows (the last has 3),
    each step by the finite-difference gradient of that minibatch's loss."""
    rng = rng_for("epoch")
    weights = random_weights([3, 5, 2], rng)
    X, y = rng.normal(size=(11, 3)), rng.normal(size=(11, 2))
    network = dict(activations=["sigmoid", "identity"], loss="mse")
    order = rng.permutation(11)
    expected = [(w.copy(), b.copy()) for w, b in weights]
    losses = []
    for start in (0, 4, 8):
        rows = order[start : start + 4]

        def batch_loss(rows=rows):
            return ref.loss_and_gradients(expected, X[rows], y[rows], **network)[0]

        losses.append(batch_loss() * len(rows))
        for pair, grad in zip(expected, numeric_gradient(batch_loss, expected)):
            for p, g in zip(pair, grad):
                p -= 0.3 * g
    epoch_loss = ref.train_epoch(
        weights, X, y, 4, ref.Optimizer("sgd", lr=0.3), order=order, **network
    )
    # The finite-difference steps move the weights by ~1e-10 from the exact ones.
    assert epoch_loss == pytest.approx(sum(losses) / 11, rel=1e-8)
    np.testing.assert_allclose(flat(weights), flat(expected), rtol=1e-8, atol=1e-10)


def test_reference_frozen_layers_and_clipping():
    """A frozen layer keeps its weights and takes no part in the clipping norm."""
    rng = rng_for("frozen")
    weights = random_weights([3, 4, 2], rng)
    X, y = rng.normal(size=(5, 3)) * 10, rng.normal(size=(5, 2))
    network = dict(activations=["tanh", "identity"], loss="mse")
    _, grads = ref.loss_and_gradients(weights, X, y, **network)
    norm = np.linalg.norm(flat(grads[1:]))
    before = [(w.copy(), b.copy()) for w, b in weights]
    ref.train_step(
        weights,
        X,
        y,
        ref.Optimizer("sgd", lr=1.0, clipnorm=0.5),
        trainable=[False, True],
        **network,
    )
    np.testing.assert_array_equal(weights[0][0], before[0][0])
    step = flat(before[1:]) - flat(weights[1:])
    np.testing.assert_allclose(step, flat(grads[1:]) * 0.5 / (norm + 1e-6), rtol=1e-12)


# -- the reference against PyTorch ----------------------------------------------------
def torch_activation(torch, name, z, param):
    F = torch.nn.functional
    return {
        "identity": lambda: z,
        "sigmoid": lambda: torch.sigmoid(z),
        "tanh": lambda: torch.tanh(z),
        "relu": lambda: torch.relu(z),
        "leaky_relu": lambda: F.leaky_relu(z, param or 0.01),
        "softmax": lambda: torch.softmax(z, dim=1),
        "elu": lambda: F.elu(z, param or 1.0),
        "gelu": lambda: F.gelu(z),
        "softplus": lambda: F.softplus(z),
        "exponential": lambda: torch.exp(z),
    }[name]()


def torch_loss(torch, loss, z, y, w, delta=1.0):
    """fastbp's weighted mean losses, from PyTorch's unreduced ones."""
    F = torch.nn.functional
    if loss == "cross_entropy":
        return (w * F.cross_entropy(z, y, reduction="none")).sum() / w.sum()
    each = {
        "mse": lambda: F.mse_loss(z, y, reduction="none"),
        "mae": lambda: F.l1_loss(z, y, reduction="none"),
        "huber": lambda: F.huber_loss(z, y, reduction="none", delta=delta),
        "poisson": lambda: F.poisson_nll_loss(z, y, log_input=True, full=False, reduction="none"),
        "binary_cross_entropy": lambda: F.binary_cross_entropy_with_logits(z, y, reduction="none"),
    }[loss]()
    return (w[:, None] * each).sum() / (w.sum() * z.shape[1])


@pytest.mark.parametrize("loss", LOSSES)
def test_reference_matches_torch_autograd(loss):
    torch = pytest.importorskip("torch")
    rng = rng_for("torch", loss)
    activations = [
        "gelu",
        "elu",
        "softplus",
        "leaky_relu",
        "sigmoid",
        "tanh",
        "softmax",
        "relu",
        "exponential",
        "identity",
    ]
    act_params = [None, 0.5, None, 0.1] + [None] * 6
    skips = [None, 0, None, -1, None, None, None, 5, None, None]
    sizes = [4, 4, 4, 4, 4, 6, 5, 5, 5, 4, 3]  # layer i maps sizes[i] to sizes[i + 1]
    weights = [(w * 0.5, b) for w, b in random_weights(sizes, rng)]
    X = rng.normal(size=(8, 4))
    y = make_targets(loss, 8, 3, rng)
    w = rng.uniform(0.2, 2.0, 8)
    network = dict(
        activations=activations,
        skips=skips,
        act_params=act_params,
        loss=loss,
        loss_param=0.7,
        penalties=[(0.01, 0.02, 0.03, 0.04)] * 10,
    )
    value, grads = ref.loss_and_gradients(weights, X, y, sample_weight=w, **network)

    params = [
        (torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True))
        for W, b in weights
    ]
    outputs, h = [], torch.tensor(X)
    for (W, b), name, param, skip in zip(params, activations, act_params, skips):
        h = torch_activation(torch, name, h @ W + b, param)
        if skip is not None:
            h = h + (torch.tensor(X) if skip == -1 else outputs[skip])
        outputs.append(h)
    target = torch.tensor(y)
    total = torch_loss(torch, loss, h, target, torch.tensor(w), delta=0.7)
    for W, b in params:
        total = (
            total
            + 0.01 * W.abs().sum()
            + 0.02 * (W * W).sum()
            + 0.03 * b.abs().sum()
            + 0.04 * (b * b).sum()
        )
    total.backward()
    assert value == pytest.approx(total.item(), rel=1e-12)
    for (gw, gb), (W, b) in zip(grads, params):
        np.testing.assert_allclose(gw, W.grad.numpy(), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-10, atol=1e-13)


OPTIMIZERS = {
    "sgd-momentum": ("sgd", dict(lr=0.1, momentum=0.9)),
    "sgd-nesterov-wd": ("sgd", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)),
    "sgd-plain-wd": ("sgd", dict(lr=0.1, weight_decay=0.1)),
    "adam-wd": ("adam", dict(lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.001)),
    "adamw": ("adamw", dict(lr=0.01, weight_decay=0.1)),
    "rmsprop": ("rmsprop", dict(lr=0.01)),
    "rmsprop-centered-momentum-wd": (
        "rmsprop",
        dict(lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01),
    ),
    "adagrad": (
        "adagrad",
        dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
    ),
}
TORCH_NAMES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
}


@pytest.mark.parametrize(
    "clip",
    [{}, dict(clipnorm=0.05), dict(clipnorm=0.05, clipvalue=0.01)],
    ids=["noclip", "clipnorm", "clipnorm-clipvalue"],
)
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_reference_optimizers_match_torch_optim(kind, clip):
    """Two epochs of minibatches of 5 from 23 rows (the last has 3) step by step."""
    torch = pytest.importorskip("torch")
    name, hyper = OPTIMIZERS[kind]
    rng = rng_for("optim", kind)
    weights = random_weights([5, 8, 3], rng)
    X, y = rng.normal(size=(23, 5)) * 2, rng.integers(0, 3, 23)
    params = [torch.tensor(a, requires_grad=True) for pair in weights for a in pair]
    torch_opt = getattr(torch.optim, TORCH_NAMES[name])(params, **hyper)
    optimizer = ref.Optimizer(name, **hyper, **clip)
    network = dict(activations=["tanh", "identity"], loss="cross_entropy")
    for _ in range(2):
        ref.train_epoch(weights, X, y, 5, optimizer, **network)
        for start in range(0, 23, 5):
            torch_opt.zero_grad()
            h = torch.tanh(torch.tensor(X[start : start + 5]) @ params[0] + params[1])
            torch.nn.functional.cross_entropy(
                h @ params[2] + params[3], torch.tensor(y[start : start + 5])
            ).backward()
            if "clipnorm" in clip:
                torch.nn.utils.clip_grad_norm_(params, clip["clipnorm"])
            if "clipvalue" in clip:
                torch.nn.utils.clip_grad_value_(params, clip["clipvalue"])
            torch_opt.step()
    for got, want in zip([a for pair in weights for a in pair], params):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-9, atol=1e-12)


# -- fastbp's public API against the reference -----------------------------------------
# Both compute in float64 the same formulas, in different orders (BLAS blocking, fused
# kernels, m + (1 - beta)(g - m) for beta m + (1 - beta) g): they agree to a few units
# of 1e-16 per operation (measured: below 1e-14 relative after 15 training steps). The
# tolerances, rtol 1e-10 for one gradient and 1e-9 after a few epochs, leave orders of
# magnitude of room for that rounding, and none for a wrong term, factor or step.
# atol is relative to each array's largest entry (entries that nearly cancel).
def assert_close(got, want, rtol):
    want = np.asarray(want)
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(np.abs(want).max(), 1e-300))


def assert_weights_close(got, want, rtol):
    for (gw, gb), (ww, wb) in zip(got, want):
        assert_close(gw, ww, rtol)
        assert_close(gb, wb, rtol)


def model_with(layers, loss, optimizer=None, n_in=5, seed=1):
    return fastbp.Sequential(
        layers,
        loss=loss,
        optimizer=optimizer or fastbp.SGD(lr=0.1),
        dtype="float64",
        seed=seed,
        input_dim=n_in,
    )


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fastbp_activation_helpers_match_reference(activation):
    """fastbp.activations.apply and derivative over [-30, 30] (beyond softplus's
    threshold 20, into the saturation of sigmoid and tanh)."""
    z = np.linspace(-30, 30, 81)[:80].reshape(4, 20)
    d = rng_for("helpers", activation).normal(size=z.shape)
    param = {"leaky_relu": 0.2, "elu": 0.7}.get(activation)
    kwargs = dict(negative_slope=param or 0.01, alpha=param or 1.0)
    a = fastbp.activations.apply(z, activation, **kwargs)
    want = ref.activate(activation, z, param)
    assert_close(a, want, 1e-13)
    assert_close(
        fastbp.activations.derivative(a, d, activation, z=z, **kwargs),
        ref.activation_backward(activation, z, want, d, param),
        1e-13,
    )


@pytest.mark.parametrize("activation,loss,output", suited_outputs(ACTIVATIONS, LOSSES))
def test_fastbp_loss_and_gradients_match_reference(activation, loss, output):
    rng = rng_for("api", activation, loss, output)
    model = model_with(
        [
            fastbp.Dense(6, activation, bias_init=0.05),
            fastbp.Dense(5, activation, bias_init=0.05, negative_slope=0.2, alpha=0.6),
            fastbp.Dense(3, activation if output == "same" else None),
        ],
        loss,
    )
    if activation == "exponential":  # exp(exp(exp(z))) overflows unless z is small
        model.set_weights([(w * 0.3, b) for w, b in model.get_weights()])
    X, y = rng.normal(size=(7, 5)), make_targets(loss, 7, 3, rng)
    value, grads = model.loss_and_gradients(X, y)
    want_value, want_grads = ref.loss_and_gradients(
        model.get_weights(), X, y, **_refmodel.network(model)
    )
    assert value == pytest.approx(want_value, rel=1e-10)
    assert_weights_close(grads, want_grads, 1e-10)
    assert_close(model.predict(X), _refmodel.predict(model, X), 1e-10)


# Each network's last activation: the losses it suits (fastbp refuses the others).
LAST_ACTIVATION = {
    "block-of-one": None,
    "block-of-two": "sigmoid",
    "from-input": "softplus",
    "consecutive": None,
    "last": "sigmoid",
    "penalties": "softmax",
}


@pytest.mark.parametrize(
    "name,loss",
    [
        (name, loss)
        for name, last in LAST_ACTIVATION.items()
        for loss in ("mse", "cross_entropy", "binary_cross_entropy")
        if suits(last, loss)
    ],
)
def test_fastbp_residual_and_penalties_match_reference(name, loss):
    Dense, Residual = fastbp.Dense, fastbp.Residual
    layers = {
        "block-of-one": [Dense(5, "tanh"), Residual(Dense(5, "relu", bias_init=0.1)), Dense(3)],
        "block-of-two": [
            Dense(5, "sigmoid"),
            Residual([Dense(4, "elu"), Dense(5, "tanh")]),
            Dense(3, "sigmoid"),
        ],
        "from-input": [Residual([Dense(6, "gelu"), Dense(5)]), Dense(3, "softplus")],
        "consecutive": [
            Dense(5, "tanh"),
            Residual(Dense(5, "tanh")),
            Residual([Dense(3, "leaky_relu"), Dense(5, "softmax")]),
            Dense(3),
        ],
        "last": [Dense(3, "tanh"), Residual(Dense(3, "sigmoid"))],
        "penalties": [
            Dense(7, "tanh", kernel_regularizer=L1L2(0.01, 0.02), bias_regularizer=L1(0.03)),
            Residual(Dense(7, "elu", kernel_regularizer=L2(0.05))),
            Dense(3, "softmax", bias_regularizer=L2(0.1)),
        ],
    }[name]
    rng = rng_for("residual", name, loss)
    model = model_with(layers, loss)
    X, y = rng.normal(size=(9, 5)), make_targets(loss, 9, 3, rng)
    value, grads = model.loss_and_gradients(X, y)
    weights = model.get_weights()
    want_value, want_grads = ref.loss_and_gradients(weights, X, y, **_refmodel.network(model))
    assert value == pytest.approx(want_value, rel=1e-10)
    assert model.evaluate(X, y)["loss"] == pytest.approx(want_value, rel=1e-10)
    assert_weights_close(grads, want_grads, 1e-10)


def fit_and_compare(model, X, y, epochs, batch_size, sample_weight=None, rtol=1e-9):
    """fit with shuffle=False against the reference's epochs from the same weights:
    the weights, the optimizer's step count and the History's losses."""
    weights = model.get_weights()
    network, optimizer = _refmodel.network(model), _refmodel.optimizer(model)
    trainable = _refmodel.trainable(model)
    losses = [
        ref.train_epoch(
            weights,
            X,
            y,
            batch_size,
            optimizer,
            trainable=trainable,
            sample_weight=sample_weight,
            **network,
        )
        for _ in range(epochs)
    ]
    model.fit(
        X, y, epochs=epochs, batch_size=batch_size, shuffle=False, sample_weight=sample_weight
    )
    assert_weights_close(model.get_weights(), weights, rtol)
    assert model.optimizer_state.step == optimizer.iterations
    np.testing.assert_allclose(model.history["loss"], losses, rtol=rtol)
    return weights


FASTBP_OPTIMIZERS = {
    "sgd-momentum": lambda **clip: fastbp.SGD(lr=0.1, momentum=0.9, **clip),
    "sgd-nesterov-wd": lambda **clip: fastbp.SGD(
        lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01, **clip
    ),
    "adam-wd": lambda **clip: fastbp.Adam(
        lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.001, **clip
    ),
    "adamw": lambda **clip: fastbp.AdamW(lr=0.01, weight_decay=0.1, **clip),
    "rmsprop-centered-momentum": lambda **clip: fastbp.RMSProp(
        lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01, **clip
    ),
    "rmsprop": lambda **clip: fastbp.RMSProp(lr=0.005, **clip),
    "adagrad": lambda **clip: fastbp.Adagrad(
        lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1, **clip
    ),
    # eps large enough against sqrt(v) that adding it before or after the bias
    # correction moves the weights far beyond the tolerance.
    "adam-eps-uncorrected": lambda **clip: fastbp.Adam(
        lr=0.01, eps=1e-3, eps_uncorrected=True, **clip
    ),
}


@pytest.mark.parametrize(
    "clip",
    [{}, dict(clipnorm=0.05), dict(clipvalue=0.01), dict(clipnorm=0.05, clipvalue=0.01)],
    ids=["noclip", "clipnorm", "clipvalue", "both"],
)
@pytest.mark.parametrize("kind", list(FASTBP_OPTIMIZERS))
def test_fastbp_fit_matches_reference_optimizers(kind, clip):
    rng = rng_for("fit", kind)
    model = model_with(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(3, "softmax")],
        "cross_entropy",
        FASTBP_OPTIMIZERS[kind](**clip),
    )
    X, y = rng.normal(size=(23, 5)) * 2, rng.integers(0, 3, 23)
    fit_and_compare(model, X, y, epochs=3, batch_size=5)


@pytest.mark.parametrize(
    "case",
    [
        "residual-penalties-weights",
        "weights-with-weightless-batches",
        "frozen-first",
        "frozen-in-block",
        "frozen-last",
        "batch-of-one",
        "full-batch",
        "huber-gelu",
        "poisson",
        "bce-soft",
        "ce-probabilities",
    ],
)
def test_fastbp_fit_matches_reference(case):
    Dense, Residual = fastbp.Dense, fastbp.Residual
    rng = rng_for("fit", case)
    n, loss, batch = 23, "cross_entropy", 5
    optimizer = fastbp.Adam(lr=0.01, clipnorm=0.5)
    layers = [
        Dense(8, "tanh", kernel_regularizer=L1(0.01)),
        Residual([Dense(6, "relu", bias_init=0.1), Dense(8, "gelu")]),
        Dense(3, "softmax", bias_regularizer=L2(0.1)),
    ]
    if case == "batch-of-one":
        n, batch, optimizer = 7, 1, fastbp.SGD(lr=0.05, momentum=0.9)
    elif case == "full-batch":
        batch, optimizer = 50, fastbp.RMSProp(lr=0.01, momentum=0.3)
    elif case == "huber-gelu":
        loss, layers = fastbp.losses.Huber(delta=0.4), [Dense(9, "gelu"), Dense(3, "elu")]
    elif case == "poisson":
        loss, layers = "poisson", [Dense(9, "softplus"), Dense(3, "exponential")]
    elif case == "bce-soft":
        loss, layers = "binary_cross_entropy", [Dense(9, "leaky_relu"), Dense(3, "sigmoid")]
    model = model_with(layers, loss, optimizer)
    if case.startswith("frozen"):
        index = {"frozen-first": 0, "frozen-in-block": 1, "frozen-last": 3}[case]
        _refmodel.dense_layers(model)[0][index].trainable = False
    X = rng.normal(size=(n, 5))
    y = make_targets(model.loss.name, n, 3, rng, soft=case == "ce-probabilities")
    sample_weight = rng.uniform(0.1, 3.0, n) if case == "residual-penalties-weights" else None
    if case == "weights-with-weightless-batches":  # minibatches 1 and 3 are skipped
        sample_weight = np.where((np.arange(n) // batch) % 2 == 1, 0.0, rng.uniform(0.1, 3.0, n))
    before = model.get_weights()
    after = fit_and_compare(model, X, y, epochs=3, batch_size=batch, sample_weight=sample_weight)
    for trains, (w, b), (w0, b0) in zip(_refmodel.trainable(model), after, before):
        if not trains:  # a frozen layer keeps its weights exactly
            np.testing.assert_array_equal(w, w0)
            np.testing.assert_array_equal(b, b0)


def test_fastbp_fit_continues_like_the_reference():
    """Two fit calls continue the optimizer state, as the reference's one optimizer does."""
    rng = rng_for("continue")
    model = model_with(
        [fastbp.Dense(6, "tanh"), fastbp.Dense(2)], "mse", fastbp.Adam(lr=0.02, weight_decay=0.01)
    )
    X, y = rng.normal(size=(10, 5)), rng.normal(size=(10, 2))
    weights = model.get_weights()
    network, optimizer = _refmodel.network(model), _refmodel.optimizer(model)
    for batch in (4, 3):
        ref.train_epoch(weights, X, y, batch, optimizer, **network)
        model.fit(X, y, epochs=1, batch_size=batch, shuffle=False)
    assert_weights_close(model.get_weights(), weights, 1e-9)


# -- scikit-learn's conventions: a loss summed over outputs, penalties per sample ------
SKLEARN_LOSSES = {
    "squared_error": lambda: fastbp.losses.SquaredError(),
    "mse-sum-outputs": lambda: fastbp.losses.MSE(reduction="sum_outputs"),
    "bce-sum-outputs": lambda: fastbp.losses.BinaryCrossEntropy(reduction="sum_outputs"),
    "poisson-half-deviance": lambda: fastbp.losses.Poisson(
        half_deviance=True, reduction="sum_outputs"
    ),
    "huber-sum-outputs": lambda: fastbp.losses.Huber(0.5, reduction="sum_outputs"),
}


@pytest.mark.parametrize("name", list(SKLEARN_LOSSES))
def test_reference_gradient_with_row_scale_and_per_sample_penalty(name):
    rng = rng_for("sklearn-ref", name)
    weights = random_weights([4, 5, 3], rng)
    X = rng.normal(size=(6, 4))
    loss = {"squared_error": "mse"}.get(name.split("-")[0], name.split("-")[0])
    loss = "binary_cross_entropy" if loss == "bce" else loss
    y = make_targets(loss, 6, 3, rng)
    check_gradient(
        weights,
        X,
        y,
        activations=["tanh", "identity"],
        loss=loss,
        penalties=[(0.0, 0.3, 0.0, 0.0), (0.1, 0.2, 0.0, 0.05)],
        row_scale=0.5,
        per_sample_penalty=True,
        sample_weight=rng.uniform(0.5, 2.0, size=6),
        half_deviance=name.startswith("poisson"),
    )


def test_reference_sklearn_conventions_by_hand():
    """Numbers worked by hand: half the squared error summed over 2 outputs, and an
    L2 penalty of 0.5 per unit of sample weight."""
    out, y = np.array([[1.0, 2.0], [0.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 3.0]])
    value, delta = ref.loss_and_delta("mse", out, y, sample_weight=[1.0, 3.0], row_scale=0.5)
    # row losses 0.5 * 5 and 0.5 * 9, weighted mean (2.5 + 3 * 4.5) / 4
    assert value == pytest.approx(4.0)
    np.testing.assert_allclose(delta, [[0.25, 0.5], [0.0, -2.25]])
    value, _ = ref.loss_and_delta(
        "poisson", np.zeros((1, 2)), np.array([[1.0, 2.0]]), half_deviance=True
    )
    # exp(0) - 0 + 1 log 1 - 1 = 0, and exp(0) + 2 log 2 - 2
    assert value == pytest.approx((0.0 + 1 + 2 * np.log(2) - 2) / 2)


@pytest.mark.parametrize("name", list(SKLEARN_LOSSES))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_fastbp_fit_with_sklearn_conventions_matches_reference(name, weighted):
    """fit with a loss summed over outputs and per-sample penalties (the penalty of
    each minibatch divided by its weight: the last, smaller minibatch's differs)
    against the reference, epoch losses included."""
    rng = rng_for("sklearn-fit", name, weighted)
    penalty = fastbp.regularizers.L2(0.05, per_sample=True)
    model = model_with(
        [
            fastbp.Dense(6, "tanh", kernel_regularizer=penalty),
            fastbp.Dense(3, kernel_regularizer=penalty, bias_regularizer=L2(0.02, per_sample=True)),
        ],
        SKLEARN_LOSSES[name](),
        fastbp.SGD(lr=0.05, momentum=0.9),
    )
    loss = model.loss
    kind = {"squared_error": "mse"}.get(loss.name, loss.name)
    X, y = rng.normal(size=(11, 5)), make_targets(kind, 11, 3, rng)
    weights = rng.uniform(0.2, 3.0, size=11) if weighted else None
    fit_and_compare(model, X, y, epochs=3, batch_size=4, sample_weight=weights)
    want = ref.loss_and_gradients(model.get_weights(), X, y, **_refmodel.network(model))[0]
    assert model.evaluate(X, y)["loss"] == pytest.approx(want, rel=1e-10)


def test_penalty_conventions_do_not_mix():
    with pytest.raises(ValueError, match="per_sample"):
        model_with(
            [
                fastbp.Dense(4, kernel_regularizer=L2(0.1, per_sample=True)),
                fastbp.Dense(2, kernel_regularizer=L2(0.1)),
            ],
            "mse",
        )
