"""Optimizers: update rules exactly as PyTorch's ``torch.optim`` defines them.

In a ``Sequential`` model every parameter lives in one flat buffer, and the
optimizer updates that whole buffer (its trainable parts) in one compiled call per
minibatch, inside the fused training step. By hand, ``step(params, grads)`` takes
matching lists of arrays (or two flat arrays) and updates the parameters in place.

Every optimizer takes ``clipnorm`` (rescale the gradient when its global L2 norm,
over all trainable parameters, exceeds it: ``torch.nn.utils.clip_grad_norm_``) and
``clipvalue`` (clamp every gradient entry to [-clipvalue, clipvalue]:
``clip_grad_value_``), applied in that order before the update, and before weight
decay is added.

Learning-rate schedules and early stopping are not the optimizer's concern (see
``fastbp.callbacks``).
"""
import math
import numbers

import numpy as np

from ._backend import core

# Mirrors ``fastbp._core.OPTIMIZER_CODES``.
OPT_SGD = 0
OPT_ADAM = 1
OPT_RMSPROP = 2
OPT_ADAGRAD = 3
# Length of the hyperparameter vector; clipping sits at its end (``_core``).
HYPERPARAMETERS = 10
_CLIPNORM, _CLIPVALUE = 8, 9


def _check_number(value, name, low=None, high=None, low_open=False, high_open=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return float(value)


def _check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


class Optimizer:
    """Base class: hyperparameters, lazily created state, ``step``.

    Attributes
    ----------
    lr : float
        The learning rate (a learning-rate scheduler changes it between epochs).
    iterations : int
        Number of steps taken so far.
    """

    code = None

    def __init__(self, lr, clipnorm=None, clipvalue=None):
        self.lr = _check_number(lr, "lr", low=0, low_open=True)
        self.clipnorm = None if clipnorm is None else _check_number(
            clipnorm, "clipnorm", low=0, low_open=True, high=None)
        self.clipvalue = None if clipvalue is None else _check_number(
            clipvalue, "clipvalue", low=0, low_open=True, high=None)
        self.iterations = 0
        self._state = []
        self._signature = None

    # -- the update rule, as the kernel reads it -------------------------------------
    def _rule(self):
        """This optimizer's hyperparameters (the first entries of the vector)."""
        raise NotImplementedError

    def n_state_buffers(self):
        raise NotImplementedError

    def _initial_state(self):
        return 0.0

    def hyperparameters(self):
        """The hyperparameter vector the compiled update reads (float64)."""
        vector = np.zeros(HYPERPARAMETERS)
        rule = self._rule()
        vector[:len(rule)] = rule
        vector[_CLIPNORM] = self.clipnorm or 0.0
        vector[_CLIPVALUE] = self.clipvalue or 0.0
        return vector

    # -- state ------------------------------------------------------------------
    def flat_state(self, size, dtype):
        """Return the state for a flat parameter buffer of ``size`` entries: an array
        of shape (n_state_buffers, size), created on first use or when the buffer
        changed."""
        signature = [(size, np.dtype(dtype))]
        if self._signature != signature:
            self.reset()
            self._state = [self._new_state(size, dtype)]
            self._signature = signature
        return self._state[0]

    def _new_state(self, size, dtype):
        return np.full((self.n_state_buffers(), size), self._initial_state(), dtype=dtype)

    def reset(self):
        """Forget the state (momentum, moments) and the step count."""
        self._state = []
        self._signature = None
        self.iterations = 0

    # -- hand-written use ---------------------------------------------------------
    def step(self, params, grads):
        """Update ``params`` in place from ``grads`` (clipped in place first when
        clipnorm or clipvalue is set).

        Parameters
        ----------
        params, grads : ndarray or list of ndarray
            Matching arrays (float32 or float64, C-contiguous), for example
            ``layer.params`` and ``layer.grads`` of each layer, concatenated.
        """
        if isinstance(params, np.ndarray):
            params, grads = [params], [grads]
        params, grads = list(params), list(grads)
        if len(params) != len(grads):
            raise ValueError(f"got {len(params)} parameter arrays but {len(grads)} gradients")
        flat = []
        for i, (p, g) in enumerate(zip(params, grads)):
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"parameter {i} must be a float32 or float64 ndarray")
            if not p.flags.c_contiguous or not p.flags.writeable:
                raise ValueError(f"parameter {i} must be C-contiguous and writeable")
            g = np.asarray(g)
            if g.shape != p.shape:
                raise ValueError(f"gradient {i} has shape {g.shape}, parameter has {p.shape}")
            g = np.ascontiguousarray(g, dtype=p.dtype)
            if not g.flags.writeable:
                g = g.copy()
            flat.append((p.reshape(-1), g.reshape(-1)))
        signature = [(p.size, p.dtype) for p, _ in flat]
        if self._signature != signature:
            self.reset()
            self._state = [self._new_state(p.size, p.dtype) for p, _ in flat]
            self._signature = signature
        if self.clipnorm is not None:
            norm = math.sqrt(sum(float(np.dot(g, g)) for _, g in flat))
            factor = self.clipnorm / (norm + 1e-6)
            if factor < 1:
                for _, g in flat:
                    g *= g.dtype.type(factor)
        if self.clipvalue is not None:
            for _, g in flat:
                np.clip(g, -self.clipvalue, self.clipvalue, out=g)
        self.iterations += 1
        hyper = self.hyperparameters()
        for (p, g), state in zip(flat, self._state):
            core().optimizer_update(self.code, p, g, state, hyper, self.iterations)

    def get_config(self):
        config = self._config()
        if self.clipnorm is not None:
            config["clipnorm"] = self.clipnorm
        if self.clipvalue is not None:
            config["clipvalue"] = self.clipvalue
        return config

    def _config(self):
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    r"""Stochastic gradient descent, with optional momentum, Nesterov momentum and
    L2 weight decay; PyTorch's ``torch.optim.SGD`` with dampening 0.

    For each step t, with gradient g_t of the loss with respect to parameters p::

        g = g_t + weight_decay * p
        if momentum != 0:
            b = momentum * b + g          (b starts at 0, so b_1 = g)
            g = g + momentum * b  if nesterov  else  b
        p = p - lr * g

    Parameters
    ----------
    lr : float, default 0.01
        Learning rate, > 0.
    momentum : float, default 0
        Momentum factor, in [0, 1).
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0).
    weight_decay : float, default 0
        L2 penalty coefficient, >= 0 (adds ``weight_decay * p`` to the gradient).
    clipnorm, clipvalue : float, optional
        Gradient clipping (see the module).
    """

    code = OPT_SGD

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0,
                 clipnorm=None, clipvalue=None):
        super().__init__(lr, clipnorm, clipvalue)
        self.momentum = _check_number(momentum, "momentum", low=0, high=1)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)
        self.nesterov = _check_flag(nesterov, "nesterov")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")

    def _rule(self):
        return [self.lr, self.momentum, self.weight_decay, float(self.nesterov)]

    def n_state_buffers(self):
        return 1 if self.momentum != 0 else 0

    def _config(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}


class Adam(Optimizer):
    r"""Adam; PyTorch's ``torch.optim.Adam`` (L2 weight decay added to the gradient,
    not decoupled: see AdamW for that).

    For step t = 1, 2, ..., with gradient g_t::

        g = g_t + weight_decay * p
        m = beta1 * m + (1 - beta1) * g          (m, v start at 0)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    lr : float, default 1e-3
        Learning rate, > 0.
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator for numerical stability, >= 0.
    weight_decay : float, default 0
        L2 penalty coefficient, >= 0.
    clipnorm, clipvalue : float, optional
        Gradient clipping (see the module).
    """

    code = OPT_ADAM
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 clipnorm=None, clipvalue=None):
        super().__init__(lr, clipnorm, clipvalue)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (_check_number(beta1, "beta1", low=0, high=1),
                      _check_number(beta2, "beta2", low=0, high=1))
        self.eps = _check_number(eps, "eps", low=0, high=None)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)

    def _rule(self):
        return [self.lr, self.betas[0], self.betas[1], self.eps, self.weight_decay,
                float(self._decoupled)]

    def n_state_buffers(self):
        return 2

    def _config(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay}


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay; PyTorch's ``torch.optim.AdamW``.

    For step t = 1, 2, ...::

        p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g_t
        v = beta2 * v + (1 - beta2) * g_t * g_t
        p = p - (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters as Adam's, with ``weight_decay`` defaulting to 0.01.
    """

    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                 clipnorm=None, clipvalue=None):
        super().__init__(lr, betas, eps, weight_decay, clipnorm, clipvalue)


class RMSProp(Optimizer):
    r"""RMSProp; PyTorch's ``torch.optim.RMSprop``.

    For each step, with gradient g_t::

        g = g_t + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g                     (v starts at 0)
        if centered:  a = alpha * a + (1 - alpha) * g;  d = sqrt(v - a * a) + eps
        else:         d = sqrt(v) + eps
        if momentum:  b = momentum * b + g / d;  p = p - lr * b
        else:         p = p - lr * g / d

    Parameters
    ----------
    lr : float, default 0.01
    alpha : float, default 0.99
        Smoothing constant, in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0
    momentum : float, default 0
        In [0, 1).
    centered : bool, default False
        Normalize by the estimated variance of the gradient instead of its second
        moment.
    clipnorm, clipvalue : float, optional
    """

    code = OPT_RMSPROP

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False, clipnorm=None, clipvalue=None):
        super().__init__(lr, clipnorm, clipvalue)
        self.alpha = _check_number(alpha, "alpha", low=0, high=1)
        self.eps = _check_number(eps, "eps", low=0, high=None)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)
        self.momentum = _check_number(momentum, "momentum", low=0, high=1)
        self.centered = _check_flag(centered, "centered")

    def _rule(self):
        return [self.lr, self.alpha, self.eps, self.weight_decay, self.momentum,
                float(self.centered)]

    def n_state_buffers(self):
        return 1 + (self.momentum != 0) + self.centered

    def _config(self):
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "centered": self.centered}


class Adagrad(Optimizer):
    r"""Adagrad; PyTorch's ``torch.optim.Adagrad``.

    For step t = 1, 2, ..., with gradient g_t::

        g = g_t + weight_decay * p
        s = s + g * g                      (s starts at initial_accumulator_value)
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)

    Parameters
    ----------
    lr : float, default 0.01
    lr_decay : float, default 0
    weight_decay : float, default 0
    initial_accumulator_value : float, default 0
    eps : float, default 1e-10
    clipnorm, clipvalue : float, optional
    """

    code = OPT_ADAGRAD

    def __init__(self, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, clipnorm=None, clipvalue=None):
        super().__init__(lr, clipnorm, clipvalue)
        self.lr_decay = _check_number(lr_decay, "lr_decay", low=0, high=None)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)
        self.initial_accumulator_value = _check_number(
            initial_accumulator_value, "initial_accumulator_value", low=0, high=None)
        self.eps = _check_number(eps, "eps", low=0, high=None)

    def _rule(self):
        return [self.lr, self.lr_decay, self.weight_decay, self.eps]

    def n_state_buffers(self):
        return 1

    def _initial_state(self):
        return self.initial_accumulator_value

    def _config(self):
        return {"lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay,
                "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps}


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp, "adagrad": Adagrad}


def get_optimizer(optimizer):
    """Return an Optimizer for a name (default hyperparameters) or an instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, type) and issubclass(optimizer, Optimizer):
        return optimizer()
    if not isinstance(optimizer, str):
        raise TypeError(
            f"optimizer must be a name or an Optimizer instance, not {type(optimizer).__name__}"
        )
    key = optimizer.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[key]()
