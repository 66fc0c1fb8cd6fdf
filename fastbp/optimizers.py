"""Optimizers: update rules exactly as PyTorch's ``torch.optim.SGD`` and ``torch.optim.Adam``.

In a ``Sequential`` model every parameter lives in one flat buffer, and the
optimizer updates that whole buffer in one compiled call per minibatch, inside the
fused training step. By hand, ``step(params, grads)`` takes matching lists of
arrays (or two flat arrays) and updates the parameters in place.

Learning-rate schedules and early stopping are not the optimizer's concern.
"""
import math
import numbers

import numpy as np

from ._backend import core

# Mirrors ``fastbp._core.OPTIMIZER_CODES``.
OPT_SGD = 0
OPT_ADAM = 1


def _check_number(value, name, low=None, high=None, low_open=False, high_open=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return float(value)


class Optimizer:
    """Base class: hyperparameters, lazily created state, ``step``.

    Attributes
    ----------
    iterations : int
        Number of steps taken so far.
    """

    code = None

    def __init__(self, lr):
        self.lr = _check_number(lr, "lr", low=0, low_open=True)
        self.iterations = 0
        self._state = []
        self._signature = None

    # -- used by the model --------------------------------------------------------
    def hyperparameters(self):
        """The hyperparameters as the kernel reads them (a float64 array)."""
        raise NotImplementedError

    def n_state_buffers(self):
        raise NotImplementedError

    def flat_state(self, size, dtype):
        """Return the state buffers for a flat parameter buffer of ``size`` entries,
        creating them (zeroed) on first use or when the buffer changed.

        The buffers that the rule does not need are empty arrays.
        """
        signature = [(size, np.dtype(dtype))]
        if self._signature != signature:
            self.reset()
            self._state = [self._new_state(size, dtype)]
            self._signature = signature
        return self._state[0]

    def _new_state(self, size, dtype):
        n = self.n_state_buffers()
        return tuple(np.zeros(size if i < n else 0, dtype=dtype) for i in range(2))

    def reset(self):
        """Forget the state (momentum, moments) and the step count."""
        self._state = []
        self._signature = None
        self.iterations = 0

    # -- hand-written use ---------------------------------------------------------
    def step(self, params, grads):
        """Update ``params`` in place from ``grads``.

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
            flat.append((p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1)))
        signature = [(p.size, p.dtype) for p, _ in flat]
        if self._signature != signature:
            self.reset()
            self._state = [self._new_state(p.size, p.dtype) for p, _ in flat]
            self._signature = signature
        self.iterations += 1
        for (p, g), (s1, s2) in zip(flat, self._state):
            self._update(p, g, s1, s2, self.iterations)

    def _update(self, p, g, s1, s2, step):
        raise NotImplementedError

    def get_config(self):
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
    """

    code = OPT_SGD

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = _check_number(momentum, "momentum", low=0, high=1)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ValueError(f"nesterov must be True or False, got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = bool(nesterov)

    def hyperparameters(self):
        return np.array([self.lr, self.momentum, self.weight_decay, float(self.nesterov)])

    def n_state_buffers(self):
        return 1 if self.momentum != 0 else 0

    def _update(self, p, g, s1, s2, step):
        core().sgd_update(p, g, s1, self.lr, self.momentum, self.weight_decay, self.nesterov)

    def get_config(self):
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
    """

    code = OPT_ADAM

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (_check_number(beta1, "beta1", low=0, high=1),
                      _check_number(beta2, "beta2", low=0, high=1))
        self.eps = _check_number(eps, "eps", low=0, high=None)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)

    def hyperparameters(self):
        return np.array([self.lr, self.betas[0], self.betas[1], self.eps, self.weight_decay])

    def n_state_buffers(self):
        return 2

    def _update(self, p, g, s1, s2, step):
        core().adam_update(p, g, s1, s2, step, self.lr, self.betas[0], self.betas[1],
                           self.eps, self.weight_decay)

    def get_config(self):
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps,
                "weight_decay": self.weight_decay}


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


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
