"""fastbp against PyTorch autograd and torch.optim (skipped where torch is absent)."""

import numpy as np
import pytest

import fastbp

torch = pytest.importorskip("torch")

TORCH_ACT = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, 0.01),
    "softmax": lambda z: torch.softmax(z, dim=1),
    "elu": torch.nn.functional.elu,
    "gelu": torch.nn.functional.gelu,
    "softplus": torch.nn.functional.softplus,
}


def torch_loss(name, output, y):
    if name == "mse":
        return torch.nn.functional.mse_loss(output, y)
    if name == "mae":
        return torch.nn.functional.l1_loss(output, y)
    if name == "huber":
        return torch.nn.functional.huber_loss(output, y, delta=1.0)
    if name == "poisson":
        return torch.nn.functional.poisson_nll_loss(output, y, log_input=True)
    if name == "cross_entropy":
        return torch.nn.functional.cross_entropy(output, y)
    return torch.nn.functional.binary_cross_entropy_with_logits(output, y)


def torch_forward(weights, activations, X):
    h = X
    for (w, b), act in zip(weights, activations):
        h = TORCH_ACT[act](h @ w + b)
    return h


@pytest.mark.parametrize(
    "loss,activations",
    [
        ("mse", ["tanh", "relu", "identity"]),
        ("mse", ["sigmoid", "softmax"]),
        ("cross_entropy", ["relu", "leaky_relu", "identity"]),
        ("cross_entropy", ["tanh", "sigmoid", "identity"]),
        ("binary_cross_entropy", ["relu", "identity"]),
        ("binary_cross_entropy", ["leaky_relu", "tanh", "identity"]),
        ("mse", ["elu", "gelu", "softplus"]),
        ("cross_entropy", ["gelu", "elu", "identity"]),
        ("binary_cross_entropy", ["softplus", "identity"]),
        ("mae", ["tanh", "identity"]),
        ("huber", ["relu", "elu", "identity"]),
        ("poisson", ["tanh", "identity"]),
    ],
)
def test_loss_and_gradients_match_autograd(loss, activations):
    rng = np.random.default_rng(0)
    n, d, k = 13, 6, 4
    widths = [9, 7][: len(activations) - 1] + [k]
    model = fastbp.Sequential(
        [fastbp.Dense(w, a) for w, a in zip(widths, activations)],
        loss=loss,
        dtype="float64",
        seed=3,
        input_dim=d,
    )
    X = rng.normal(size=(n, d))
    if loss in ("mse", "mae", "huber"):
        y = rng.normal(size=(n, k)) * 2
        y_torch = torch.tensor(y)
    elif loss == "poisson":
        y = rng.poisson(2.0, size=(n, k)).astype(float)
        y_torch = torch.tensor(y)
    elif loss == "cross_entropy":
        y = rng.integers(0, k, n)
        y_torch = torch.tensor(y)
    else:
        y = rng.uniform(0, 1, size=(n, k))
        y_torch = torch.tensor(y)
    weights = [
        (torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True))
        for w, b in model.get_weights()
    ]
    value = torch_loss(loss, torch_forward(weights, activations, torch.tensor(X)), y_torch)
    value.backward()
    ours, grads = model.loss_and_gradients(X, y)
    assert ours == pytest.approx(value.item(), rel=1e-12)
    for (gw, gb), (w, b) in zip(grads, weights):
        np.testing.assert_allclose(gw, w.grad.numpy(), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(gb, b.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "make",
    [
        lambda: (fastbp.SGD(lr=0.1, momentum=0.9), dict(lr=0.1, momentum=0.9), "SGD"),
        lambda: (
            fastbp.SGD(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
            dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
            "SGD",
        ),
        lambda: (
            fastbp.Adam(lr=0.01, weight_decay=0.001),
            dict(lr=0.01, weight_decay=0.001),
            "Adam",
        ),
        lambda: (
            fastbp.Adam(lr=0.003, betas=(0.8, 0.95), eps=1e-6),
            dict(lr=0.003, betas=(0.8, 0.95), eps=1e-6),
            "Adam",
        ),
        lambda: (fastbp.AdamW(lr=0.01, weight_decay=0.1), dict(lr=0.01, weight_decay=0.1), "AdamW"),
        lambda: (fastbp.RMSProp(lr=0.01), dict(lr=0.01), "RMSprop"),
        lambda: (
            fastbp.RMSProp(lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01),
            dict(lr=0.005, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01),
            "RMSprop",
        ),
        lambda: (fastbp.RMSProp(lr=0.005, centered=True), dict(lr=0.005, centered=True), "RMSprop"),
        lambda: (fastbp.RMSProp(lr=0.005, momentum=0.9), dict(lr=0.005, momentum=0.9), "RMSprop"),
        lambda: (
            fastbp.Adagrad(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
            dict(lr=0.1, lr_decay=0.01, weight_decay=0.01, initial_accumulator_value=0.1),
            "Adagrad",
        ),
    ],
    ids=[
        "momentum",
        "nesterov-wd",
        "adam-wd",
        "adam-betas",
        "adamw",
        "rmsprop",
        "rmsprop-centered-momentum",
        "rmsprop-centered",
        "rmsprop-momentum",
        "adagrad",
    ],
)
def test_training_steps_match_torch_optim(make):
    """Ten minibatch steps (last batch smaller) match torch.optim step by step."""
    optimizer, kwargs, name = make()
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(23, 5)), rng.integers(0, 3, 23)
    model = fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(3, "softmax")],
        loss="cross_entropy",
        optimizer=optimizer,
        dtype="float64",
        seed=0,
        input_dim=5,
    )
    params = [torch.tensor(a, requires_grad=True) for pair in model.get_weights() for a in pair]
    torch_opt = getattr(torch.optim, name)(params, **kwargs)
    for _ in range(2):
        for start in range(0, 23, 5):
            torch_opt.zero_grad()
            out = torch_forward(
                [(params[0], params[1]), (params[2], params[3])],
                ["tanh", "identity"],
                torch.tensor(X[start : start + 5]),
            )
            torch.nn.functional.cross_entropy(out, torch.tensor(y[start : start + 5])).backward()
            torch_opt.step()
    model.fit(X, y, epochs=2, batch_size=5, shuffle=False)
    ours = [a for pair in model.get_weights() for a in pair]
    for got, want in zip(ours, params):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_float32_training_close_to_torch_float32():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(64, 10)).astype(np.float32), rng.normal(size=(64, 2)).astype(np.float32)
    model = fastbp.Sequential(
        [fastbp.Dense(16, "relu"), fastbp.Dense(2)],
        loss="mse",
        optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
        seed=0,
        input_dim=10,
    )
    params = [torch.tensor(a, requires_grad=True) for pair in model.get_weights() for a in pair]
    torch_opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    for start in range(0, 64, 16):
        torch_opt.zero_grad()
        out = torch_forward(
            [(params[0], params[1]), (params[2], params[3])],
            ["relu", "identity"],
            torch.tensor(X[start : start + 16]),
        )
        torch.nn.functional.mse_loss(out, torch.tensor(y[start : start + 16])).backward()
        torch_opt.step()
    model.fit(X, y, epochs=1, batch_size=16, shuffle=False)
    for got, want in zip([a for pair in model.get_weights() for a in pair], params):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "clip",
    [
        dict(clipnorm=0.05),
        dict(clipvalue=0.01),
        dict(clipnorm=0.05, clipvalue=0.01),
        dict(clipnorm=100.0),
    ],
    ids=["norm", "value", "both", "norm-inactive"],
)
@pytest.mark.parametrize("threads", [1, 2])
def test_gradient_clipping_matches_torch(clip, threads, monkeypatch):
    from fastbp import _threads

    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(20, 4)) * 3, rng.integers(0, 3, 20)
    model = fastbp.Sequential(
        [fastbp.Dense(6, "relu"), fastbp.Dense(3)],
        loss="cross_entropy",
        optimizer=fastbp.SGD(lr=0.5, momentum=0.5, **clip),
        dtype="float64",
        seed=0,
        input_dim=4,
        threads=threads,
    )
    params = [torch.tensor(a, requires_grad=True) for pair in model.get_weights() for a in pair]
    torch_opt = torch.optim.SGD(params, lr=0.5, momentum=0.5)
    for start in range(0, 20, 5):
        torch_opt.zero_grad()
        out = torch_forward(
            [(params[0], params[1]), (params[2], params[3])],
            ["relu", "identity"],
            torch.tensor(X[start : start + 5]),
        )
        torch.nn.functional.cross_entropy(out, torch.tensor(y[start : start + 5])).backward()
        if "clipnorm" in clip:
            torch.nn.utils.clip_grad_norm_(params, clip["clipnorm"])
        if "clipvalue" in clip:
            torch.nn.utils.clip_grad_value_(params, clip["clipvalue"])
        torch_opt.step()
    model.fit(X, y, epochs=1, batch_size=5, shuffle=False)
    for got, want in zip([a for pair in model.get_weights() for a in pair], params):
        np.testing.assert_allclose(got, want.detach().numpy(), rtol=1e-9, atol=1e-12)
