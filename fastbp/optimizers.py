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

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _aligned, _codes
from . import _validation as val
from ._backend import core

OPT_SGD = _codes.OPTIMIZERS["sgd"]
OPT_ADAM = _codes.OPTIMIZERS["adam"]
OPT_RMSPROP = _codes.OPTIMIZERS["rmsprop"]
OPT_ADAGRAD = _codes.OPTIMIZERS["adagrad"]


def _check_number(value, name, low=None, high=None, low_open=False, high_open=True):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return float(value)


class OptimizerState:
    """The state of an optimizer for one flat parameter buffer: its step count and its
    buffers, one row each of one array (so that the fused update reads them in one
    pass and a model file stores them as one array), named as torch.optim names
    them (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``, ...).

    A model owns one (``model.optimizer_state``); the Optimizer instance it was given
    holds configuration only, so one instance can configure several models.
    """

    def __init__(self, optimizer: Optimizer, size: int, dtype: DTypeLike) -> None:
        self.names = optimizer.state_names()
        self.rows = _aligned.full((len(self.names), size), optimizer._initial_state(), dtype)
        self.step = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A copied or unpickled state's rows start a cache line, as new ones do.
        self.__dict__.update(state)
        self.rows = _aligned.copy(self.rows)

    @property
    def buffers(self) -> dict[str, NDArray[np.floating[Any]]]:
        """The state buffers by name (views into ``rows``)."""
        return dict(zip(self.names, self.rows))

    def __repr__(self) -> str:
        return f"OptimizerState(step={self.step}, buffers={list(self.names)})"


class Optimizer:
    """Base class: hyperparameters, and ``step`` for hand-written loops.

    An instance is configuration: in a model, the state (moments, step count) lives
    in ``model.optimizer_state``, so one instance may serve several models. By hand,
    ``step`` keeps the state of the arrays it updates in the instance (as
    torch.optim does), with its step count in ``iterations``.

    Attributes
    ----------
    lr : float
        The learning rate (a learning-rate scheduler changes it between epochs).
    iterations : int
        Steps taken by hand with ``step``. An optimizer given to a model that has
        never stepped by hand raises AttributeError here, naming where the model's
        count is (``model.optimizer_state.step``), rather than answer 0.
    """

    code = None
    _serves_models = False  # set by Sequential

    @property
    def iterations(self) -> int:
        if self._serves_models and not self._hand_steps:
            raise AttributeError(
                f"{type(self).__name__}.iterations counts hand-written step() calls; this"
                " optimizer configures a model, whose step count is"
                " model.optimizer_state.step"
            )
        return self._hand_steps

    @iterations.setter
    def iterations(self, value: int) -> None:
        self._hand_steps = value

    def __init__(
        self, lr: float, clipnorm: float | None = None, clipvalue: float | None = None
    ) -> None:
        self.lr = _check_number(lr, "lr", low=0, low_open=True)
        self.clipnorm = (
            None
            if clipnorm is None
            else _check_number(clipnorm, "clipnorm", low=0, low_open=True, high=None)
        )
        self.clipvalue = (
            None
            if clipvalue is None
            else _check_number(clipvalue, "clipvalue", low=0, low_open=True, high=None)
        )
        self.reset()

    # -- the update rule, as the kernel reads it -------------------------------------
    def _fields(self):
        """This optimizer's fields of the OptimizerConfig struct: by default its
        constructor arguments, where they have the struct's names."""
        return self._config()

    def state_names(self) -> tuple[str, ...]:
        """The names of the state buffers this rule keeps, in row order."""
        raise NotImplementedError

    def _initial_state(self):
        return 0.0

    def config(self) -> NDArray[np.void]:
        """The rule as the compiled update reads it: an OptimizerConfig (see
        ``fastbp/_core.pxd``) filled by field name, in an array of one (made again
        only when a hyperparameter changed; read it, do not write it)."""
        key = (tuple(self._fields().items()), self.clipnorm, self.clipvalue, self.state_names())
        if getattr(self, "_config_key", None) != key:
            self._config_array, self._config_key = self._make_config(), key
        return self._config_array

    def _make_config(self):
        fields = dict.fromkeys(_codes.OPTIMIZER_CONFIG.names, 0)
        fields.update(dict.fromkeys(_codes.STATE_ROWS, -1))
        fields.update((name, row) for row, name in enumerate(self.state_names()))
        fields.update(
            kind=self.code, clipnorm=self.clipnorm or 0.0, clipvalue=self.clipvalue or 0.0
        )
        fields.update(self._fields())
        return np.array([tuple(fields.values())], dtype=_codes.OPTIMIZER_CONFIG)

    def new_state(self, size: int, dtype: DTypeLike) -> OptimizerState:
        """Fresh state for a flat parameter buffer of ``size`` entries."""
        return OptimizerState(self, size, dtype)

    def reset(self) -> None:
        """Forget the hand-written loop's state and step count."""
        self._hand_state = None
        self._signature = None
        self.iterations = 0

    # -- hand-written use ---------------------------------------------------------
    def step(
        self,
        params: NDArray[np.floating[Any]] | Sequence[NDArray[np.floating[Any]]],
        grads: ArrayLike | Sequence[ArrayLike],
    ) -> None:
        """Update ``params`` in place from ``grads`` (clipped in place first when
        clipnorm or clipvalue is set), by the same compiled update as a model's.

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
        dtypes = set()
        for i, (p, g) in enumerate(zip(params, grads)):
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise TypeError(f"parameter {i} must be a float32 or float64 ndarray")
            if not p.flags.c_contiguous or not p.flags.writeable:
                raise ValueError(f"parameter {i} must be C-contiguous and writeable")
            if np.shape(g) != p.shape:
                raise ValueError(f"gradient {i} has shape {np.shape(g)}, parameter has {p.shape}")
            dtypes.add(p.dtype)
        if len(dtypes) > 1:
            raise TypeError("all parameters must have one dtype")
        # One flat buffer, as in a model, so that clipping and the update are the
        # model's own compiled ones.
        flat_p = np.concatenate([p.ravel() for p in params]) if params else np.empty(0)
        flat_g = (
            np.concatenate([np.ravel(g) for g in grads]).astype(flat_p.dtype)
            if grads
            else np.empty(0)
        )
        signature = [(p.size, p.dtype) for p in params]
        if self._signature != signature:
            self.reset()
            self._hand_state = self.new_state(flat_p.size, flat_p.dtype)
            self._signature = signature
        self._hand_steps += 1
        segments = np.array([[0, flat_p.size]], dtype=np.intp)
        core().apply_update(
            flat_p, flat_g, self._hand_state.rows, self.config(), segments, self._hand_steps
        )
        start = 0
        for p, g in zip(params, grads):
            p.ravel()[...] = flat_p[start : start + p.size]
            if isinstance(g, np.ndarray) and g.flags.writeable and g.flags.c_contiguous:
                g.ravel()[...] = flat_g[start : start + p.size]  # clipped, as documented
            start += p.size

    def get_config(self) -> dict[str, Any]:
        config = self._config()
        if self.clipnorm is not None:
            config["clipnorm"] = self.clipnorm
        if self.clipvalue is not None:
            config["clipvalue"] = self.clipvalue
        return config

    def _config(self):
        raise NotImplementedError

    def __repr__(self) -> str:
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

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue)
        self.momentum = _check_number(momentum, "momentum", low=0, high=1)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)
        self.nesterov = val.flag(nesterov, "nesterov")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")

    def state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _config(self):
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    r"""Adam; PyTorch's ``torch.optim.Adam`` (L2 weight decay added to the gradient,
    not decoupled: see AdamW for that).

    For step t = 1, 2, ..., with gradient g_t::

        g = g_t + weight_decay * p
        m = beta1 * m + (1 - beta1) * g          (m, v start at 0)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - (lr / (1 - beta1**t)) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    With ``eps_uncorrected=True`` the last line is scikit-learn's:
    ``p = p - lr * sqrt(1 - beta2**t) / (1 - beta1**t) * m / (sqrt(v) + eps)``.

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
    eps_uncorrected : bool, default False
        Add ``eps`` to ``sqrt(v)`` before its bias correction, as scikit-learn's MLP
        does, instead of after it, as PyTorch does.
    """

    code = OPT_ADAM
    _decoupled = False
    eps_uncorrected = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        eps_uncorrected: bool = False,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue)
        self.eps_uncorrected = val.flag(eps_uncorrected, "eps_uncorrected")
        try:
            beta1, beta2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (
            _check_number(beta1, "beta1", low=0, high=1),
            _check_number(beta2, "beta2", low=0, high=1),
        )
        self.eps = _check_number(eps, "eps", low=0, high=None)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)

    def _fields(self):
        return {
            "lr": self.lr,
            "beta1": self.betas[0],
            "beta2": self.betas[1],
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "decoupled": self._decoupled,
            "eps_uncorrected": self.eps_uncorrected,
        }

    def state_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _config(self):
        config = {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }
        if self.eps_uncorrected:
            config["eps_uncorrected"] = True
        return config


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

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
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

    def __init__(
        self,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue)
        self.alpha = _check_number(alpha, "alpha", low=0, high=1)
        self.eps = _check_number(eps, "eps", low=0, high=None)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)
        self.momentum = _check_number(momentum, "momentum", low=0, high=1)
        self.centered = val.flag(centered, "centered")

    def state_names(self) -> tuple[str, ...]:
        return (
            ("square_avg",)
            + (("momentum_buffer",) if self.momentum != 0 else ())
            + (("grad_avg",) if self.centered else ())
        )

    def _config(self):
        return {
            "lr": self.lr,
            "alpha": self.alpha,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "momentum": self.momentum,
            "centered": self.centered,
        }


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

    def __init__(
        self,
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
    ) -> None:
        super().__init__(lr, clipnorm, clipvalue)
        self.lr_decay = _check_number(lr_decay, "lr_decay", low=0, high=None)
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0, high=None)
        self.initial_accumulator_value = _check_number(
            initial_accumulator_value, "initial_accumulator_value", low=0, high=None
        )
        self.eps = _check_number(eps, "eps", low=0, high=None)

    def _fields(self):
        return {
            "lr": self.lr,
            "lr_decay": self.lr_decay,
            "weight_decay": self.weight_decay,
            "eps": self.eps,
        }

    def state_names(self) -> tuple[str, ...]:
        return ("sum",)

    def _initial_state(self):
        return self.initial_accumulator_value

    def _config(self):
        return {
            "lr": self.lr,
            "lr_decay": self.lr_decay,
            "weight_decay": self.weight_decay,
            "initial_accumulator_value": self.initial_accumulator_value,
            "eps": self.eps,
        }


# The state rows that accumulate squared gradients: never negative (their square
# roots divide the step).
SQUARED_STATE = frozenset({"exp_avg_sq", "square_avg", "sum"})

OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSProp, "adagrad": Adagrad}


def get_optimizer(optimizer: str | Optimizer | type[Optimizer]) -> Optimizer:
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
