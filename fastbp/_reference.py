"""fastbp's training algorithm stated once, in plain NumPy and float64.

The compiled step (``fastbp._core``) fuses, threads and preallocates; this module
says what it computes, as directly as NumPy allows, so that tests and benchmarks
can check fastbp (or anything else) against it. Clarity over speed: it imports
nothing from fastbp, only NumPy (and ``math.erf`` for the exact GELU).

A network is described by arguments shared by the functions below:

- ``weights``: a list of (W, b) per Dense layer, W of shape (n_in, units) and b of
  shape (units,), float64; training updates them in place.
- ``activations``: one name per layer (``ACTIVATIONS``). The last one is the output
  activation *as trained*: where fastbp fuses it into the loss (``FUSED``: softmax
  with cross_entropy, sigmoid with binary_cross_entropy, exponential with poisson,
  the last layer not ending a residual block) pass "identity": the loss takes logits.
- ``skips``: None, or per layer None or the source of a residual connection added
  to the layer's output, ``f(z) + source``: -1 the network input, j what layer j
  passes on.
- ``act_params``: None, or per layer leaky_relu's negative slope (default 0.01) or
  ELU's alpha (default 1.0); None or ignored for the other activations.
- ``penalties``: None, or per layer None or (l1 and l2 of W, l1 and l2 of b): adds
  ``l1 sum|w| + l2 sum w^2`` to the loss and ``l1 sign(w) + 2 l2 w`` to its gradient.
- ``loss``: "mse", "mae", "huber" (``loss_param``: its delta), "cross_entropy"
  (integer labels, or rows of class probabilities), "binary_cross_entropy", "poisson".

Training, for example two epochs of Adam over minibatches of 32 rows in storage order::

    optimizer = Optimizer("adam", lr=1e-3, clipnorm=1.0)
    for epoch in range(2):
        train_epoch(weights, X, y, 32, optimizer, activations=["relu", "identity"],
                    loss="cross_entropy")

Each step: forward, loss and delta, backward, penalties, then clipping and the
update of the trainable layers (``trainable``: frozen layers are neither updated nor
counted in the clipping norm), the step count shared by all parameters.

Not covered: dropout (fastbp draws its masks from a counter-based hash of seed,
step, layer, row and column, which this reference does not reproduce), float32
arithmetic, threads, and shuffling (``train_epoch`` takes the epoch's row order).
"""

import math

import numpy as np

LOSSES = ("mse", "mae", "huber", "cross_entropy", "binary_cross_entropy", "poisson")
FUSED = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid", "poisson": "exponential"}
DEFAULT_PARAM = {"leaky_relu": 0.01, "elu": 1.0}  # negative slope, alpha
_erf = np.vectorize(math.erf, otypes=[float])


def sigmoid(z):
    with np.errstate(over="ignore"):  # exp(-z) = inf gives 0, as it should
        return 1 / (1 + np.exp(-z))


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _Phi(z):  # the standard normal distribution function, and below its density
    return 0.5 * (1 + _erf(z / math.sqrt(2)))


def _phi(z):
    return np.exp(-z * z / 2) / math.sqrt(2 * math.pi)


# f(z, p), elementwise except softmax (over each row); p: leaky_relu's slope, ELU's alpha.
FORWARD = {
    "identity": lambda z, p: z,
    "sigmoid": lambda z, p: sigmoid(z),
    "tanh": lambda z, p: np.tanh(z),
    "relu": lambda z, p: np.maximum(z, 0),
    "leaky_relu": lambda z, p: np.where(z > 0, z, p * z),
    "softmax": lambda z, p: softmax(z),
    "elu": lambda z, p: np.where(z > 0, z, p * np.expm1(np.minimum(z, 0))),
    "gelu": lambda z, p: z * _Phi(z),  # exact, with erf
    "softplus": lambda z, p: np.where(z > 20, z, np.log1p(np.exp(np.minimum(z, 20)))),  # torch's
    "exponential": lambda z, p: np.exp(z),
}
# f'(z) from z and a = f(z) (softmax: see activation_backward).
DERIVATIVE = {
    "identity": lambda z, a, p: 1.0,
    "sigmoid": lambda z, a, p: a * (1 - a),
    "tanh": lambda z, a, p: 1 - a * a,
    "relu": lambda z, a, p: np.where(z > 0, 1.0, 0.0),
    "leaky_relu": lambda z, a, p: np.where(z > 0, 1.0, p),
    "elu": lambda z, a, p: np.where(z > 0, 1.0, a + p),  # p e^z = a + p below 0
    "gelu": lambda z, a, p: _Phi(z) + z * _phi(z),
    "softplus": lambda z, a, p: sigmoid(z),
    "exponential": lambda z, a, p: a,
}
ACTIVATIONS = tuple(FORWARD)


def activate(name, z, param=None):
    """f(z)."""
    return FORWARD[name](z, DEFAULT_PARAM.get(name) if param is None else param)


def activation_backward(name, z, a, d, param=None):
    """dL/dz from dL/da = d, where a = f(z)."""
    if name == "softmax":  # the Jacobian-vector product, row by row
        return a * (d - (d * a).sum(axis=1, keepdims=True))
    return d * DERIVATIVE[name](z, a, DEFAULT_PARAM.get(name) if param is None else param)


def _forward(weights, activations, X, skips, act_params):
    """Per layer: its input x, its pre-activation z, f(z), and what it passes on."""
    n = len(weights)
    skips, act_params = skips or [None] * n, act_params or [None] * n
    X = x = np.asarray(X, dtype=np.float64)
    layers, outputs = [], []
    for (W, b), name, skip, param in zip(weights, activations, skips, act_params):
        z = x @ np.asarray(W, dtype=np.float64) + np.asarray(b, dtype=np.float64)
        a = activate(name, z, param)
        out = a if skip is None else a + (X if skip == -1 else outputs[skip])
        layers.append((x, z, a))
        outputs.append(out)
        x = out
    return layers, outputs


def forward(weights, activations, X, skips=None, act_params=None):
    """What each layer passes on for the rows of X: a list, the network's output last."""
    return _forward(weights, activations, X, skips, act_params)[1]


def backward(weights, activations, X, d_output, skips=None, act_params=None):
    """Backpropagate dL/d(network output): return ([(dL/dW, dL/db), ...], dL/dX).
    (The forward pass is run again: clarity over speed.)"""
    n = len(weights)
    skips, act_params = skips or [None] * n, act_params or [None] * n
    layers, outputs = _forward(weights, activations, X, skips, act_params)
    d_out = [np.zeros_like(out) for out in outputs]  # dL/d(what layer l passes on)
    d_out[-1] = np.array(d_output, dtype=np.float64)
    d_X = np.zeros_like(layers[0][0])
    grads = [None] * n
    for l in reversed(range(n)):  # every layer above l has added its share to d_out[l]
        x, z, a = layers[l]
        if skips[l] is not None:  # out = f(z) + source: the source gets d_out[l] as it is
            source = d_X if skips[l] == -1 else d_out[skips[l]]
            source += d_out[l]
        dz = activation_backward(activations[l], z, a, d_out[l], act_params[l])
        grads[l] = (x.T @ dz, dz.sum(axis=0))
        below = d_out[l - 1] if l > 0 else d_X
        below += dz @ np.asarray(weights[l][0], dtype=np.float64).T
    return grads, d_X


def loss_and_delta(
    loss, output, y, sample_weight=None, param=1.0, row_scale=None, half_deviance=False
):
    """The mean loss of ``output`` (logits for the fused losses) against ``y``, and
    dL/d output. Cross-entropy averages over samples, the others over every element
    (``row_scale``, when given, replaces that 1 / k: a sample's loss is row_scale times
    the sum over its outputs); with sample weights w the mean is
    sum_i w_i loss_i / sum_i w_i. Poisson with ``half_deviance`` adds t log t - t to
    the value."""
    z = np.asarray(output, dtype=np.float64)
    n, k = z.shape
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    if loss == "cross_entropy":
        t = np.eye(k)[y] if np.ndim(y) == 1 else np.asarray(y, dtype=np.float64)
        log_p = z - z.max(axis=1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        per_sample = -(t * log_p).sum(axis=1)
        grad = np.exp(log_p) * t.sum(axis=1, keepdims=True) - t
        scale = 1 / w.sum()
    else:
        t = np.asarray(y, dtype=np.float64).reshape(n, k)
        r = z - t
        if loss == "mse":
            value, grad = r * r, 2 * r
        elif loss == "mae":
            value, grad = np.abs(r), np.sign(r)
        elif loss == "huber":
            value = np.where(np.abs(r) <= param, r * r / 2, param * (np.abs(r) - param / 2))
            grad = np.clip(r, -param, param)
        elif loss == "binary_cross_entropy":  # on logits, stable for any z
            value, grad = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))), sigmoid(z) - t
        elif loss == "poisson":  # on log-rates
            value, grad = np.exp(z) - t * z, np.exp(z) - t
            if half_deviance:
                value = value + np.where(t > 0, t * np.log(np.where(t > 0, t, 1)), 0) - t
        else:
            raise ValueError(f"unknown loss {loss!r}")
        per_sample = value.sum(axis=1)
        scale = (1 / k if row_scale is None else row_scale) / w.sum()
    return float(scale * (w @ per_sample)), scale * w[:, None] * grad


def loss_and_gradients(
    weights,
    X,
    y,
    activations,
    loss="mse",
    skips=None,
    act_params=None,
    penalties=None,
    loss_param=1.0,
    sample_weight=None,
    row_scale=None,
    per_sample_penalty=False,
    half_deviance=False,
):
    """The mean loss plus the penalties (divided by the total sample weight when
    ``per_sample_penalty``), and its gradient [(dW, db), ...]."""
    output = forward(weights, activations, X, skips, act_params)[-1]
    value, delta = loss_and_delta(
        loss, output, y, sample_weight, loss_param, row_scale, half_deviance
    )
    if per_sample_penalty:
        total = len(X) if sample_weight is None else float(np.sum(sample_weight))
        penalties = [None if p is None else tuple(c / total for c in p) for p in (penalties or [])]
    grads, _ = backward(weights, activations, X, delta, skips, act_params)
    for l, penalty in enumerate(penalties or []):
        if penalty is None:
            continue
        l1_w, l2_w, l1_b, l2_b = penalty
        for p, dp, l1, l2 in (
            (weights[l][0], grads[l][0], l1_w, l2_w),
            (weights[l][1], grads[l][1], l1_b, l2_b),
        ):
            value += l1 * np.abs(p).sum() + l2 * (p * p).sum()
            dp += l1 * np.sign(p) + 2 * l2 * p
    return value, grads


DEFAULTS = {  # torch.optim's hyperparameters besides lr (fastbp's defaults)
    "sgd": dict(momentum=0.0, nesterov=False, weight_decay=0.0),
    "adam": dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),
    "adamw": dict(betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01),
    "rmsprop": dict(alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False),
    "adagrad": dict(lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10),
}


class Optimizer:
    """torch.optim's update rule ``name`` (a key of DEFAULTS) with its keyword
    hyperparameters, after gradient clipping: clipnorm (the global norm over the
    trainable gradients; factor clipnorm / (norm + 1e-6) when below 1), then clipvalue."""

    def __init__(self, name, lr, clipnorm=None, clipvalue=None, **hyper):
        self.name, self.clipnorm, self.clipvalue = name, clipnorm, clipvalue
        self.h = dict(DEFAULTS[name], lr=lr, **hyper)
        self.iterations = 0
        self.state = {}  # (layer, 0 for W or 1 for b) -> that array's buffers

    def step(self, weights, grads, trainable=None):
        """Update the trainable layers' weights in place (all when trainable is None)."""
        live = [
            (l, j) for l in range(len(weights)) if trainable is None or trainable[l] for j in (0, 1)
        ]
        g = {key: np.array(grads[key[0]][key[1]], dtype=np.float64) for key in live}
        if self.clipnorm:
            factor = self.clipnorm / (math.sqrt(sum((v * v).sum() for v in g.values())) + 1e-6)
            g = {key: v * factor for key, v in g.items()} if factor < 1 else g
        if self.clipvalue:
            g = {key: np.clip(v, -self.clipvalue, self.clipvalue) for key, v in g.items()}
        self.iterations += 1
        for l, j in live:
            self._update(weights[l][j], g[l, j], self.state.setdefault((l, j), {}))

    def _update(self, p, g, s):
        h, t = self.h, self.iterations
        lr, wd = h["lr"], h["weight_decay"]
        if self.name == "adamw":  # decoupled weight decay
            p *= 1 - lr * wd
        elif wd:
            g = g + wd * p
        if self.name == "sgd":  # dampening 0; the buffer starts at 0, so b_1 = g
            if h["momentum"]:
                b = s["b"] = h["momentum"] * s.get("b", 0) + g
                g = g + h["momentum"] * b if h["nesterov"] else b
            p -= lr * g
        elif self.name in ("adam", "adamw"):
            beta1, beta2 = h["betas"]
            m = s["m"] = beta1 * s.get("m", 0) + (1 - beta1) * g
            v = s["v"] = beta2 * s.get("v", 0) + (1 - beta2) * g * g
            if h.get("eps_uncorrected"):  # scikit-learn's form
                p -= lr * math.sqrt(1 - beta2**t) / (1 - beta1**t) * m / (np.sqrt(v) + h["eps"])
            else:
                p -= lr / (1 - beta1**t) * m / (np.sqrt(v) / math.sqrt(1 - beta2**t) + h["eps"])
        elif self.name == "rmsprop":
            v = s["v"] = h["alpha"] * s.get("v", 0) + (1 - h["alpha"]) * g * g
            if h["centered"]:
                mean = s["mean"] = h["alpha"] * s.get("mean", 0) + (1 - h["alpha"]) * g
                v = v - mean * mean
            g = g / (np.sqrt(v) + h["eps"])
            if h["momentum"]:
                g = s["b"] = h["momentum"] * s.get("b", 0) + g
            p -= lr * g
        elif self.name == "adagrad":
            total = s["sum"] = s.get("sum", h["initial_accumulator_value"]) + g * g
            p -= lr / (1 + (t - 1) * h["lr_decay"]) * g / (np.sqrt(total) + h["eps"])
        else:
            raise ValueError(f"unknown optimizer {self.name!r}")


def train_step(weights, X, y, optimizer, trainable=None, sample_weight=None, **network):
    """One minibatch step, weights updated in place; returns the batch's loss (with
    the penalties) before the update."""
    value, grads = loss_and_gradients(weights, X, y, sample_weight=sample_weight, **network)
    optimizer.step(weights, grads, trainable)
    return value


def train_epoch(
    weights, X, y, batch_size, optimizer, order=None, trainable=None, sample_weight=None, **network
):
    """One epoch: minibatch b holds rows ``order[b * batch_size:(b + 1) * batch_size]``
    (the last one smaller). Returns the epoch's loss as fit reports it: the mean
    over the samples of their minibatch's loss."""
    order = np.arange(len(X)) if order is None else np.asarray(order)
    total = 0.0
    for start in range(0, len(X), batch_size):
        rows = order[start : start + batch_size]
        weight = None if sample_weight is None else np.asarray(sample_weight)[rows]
        total += len(rows) * train_step(
            weights,
            np.asarray(X)[rows],
            np.asarray(y)[rows],
            optimizer,
            trainable,
            weight,
            **network,
        )
    return total / len(X)
