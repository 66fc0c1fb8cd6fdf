"""Learning-rate schedules: callables of the epoch (from 0) that return the rate.

Use one with ``callbacks.LearningRateScheduler``::

    fit(..., callbacks=[LearningRateScheduler(CosineDecay(0.1, total_epochs=50,
                                                          warmup_epochs=5))])

Any ``f(epoch) -> lr`` works the same way.
"""

from __future__ import annotations

import math
import numbers


def _positive(value, name, allow_zero=False):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        raise ValueError(
            f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value!r}"
        )
    return float(value)


def _count(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Schedule:
    """Base class: ``schedule(epoch)`` gives the learning rate of that epoch."""

    def __call__(self, epoch: int) -> float:
        epoch = _count(epoch, "epoch", 0)
        return self.rate(epoch)

    def rate(self, epoch: int) -> float:
        raise NotImplementedError

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """lr at every epoch."""

    def __init__(self, lr: float) -> None:
        self.lr = _positive(lr, "lr")

    def rate(self, epoch: int) -> float:
        return self.lr


class StepDecay(Schedule):
    """lr * gamma ** (epoch // step_size): multiply by gamma every step_size epochs."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        self.lr = _positive(lr, "lr")
        self.step_size = _count(step_size, "step_size", 1)
        self.gamma = _positive(gamma, "gamma")

    def rate(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(Schedule):
    """lr * gamma ** epoch."""

    def __init__(self, lr: float, gamma: float) -> None:
        self.lr = _positive(lr, "lr")
        self.gamma = _positive(gamma, "gamma")

    def rate(self, epoch: int) -> float:
        return self.lr * self.gamma**epoch


class InverseScaling(Schedule):
    """lr / (epoch + 1) ** power (scikit-learn's "invscaling", counted in epochs)."""

    def __init__(self, lr: float, power: float = 0.5) -> None:
        self.lr = _positive(lr, "lr")
        self.power = _positive(power, "power", allow_zero=True)

    def rate(self, epoch: int) -> float:
        return self.lr / (epoch + 1) ** self.power


class CosineDecay(Schedule):
    """Linear warm-up from lr / warmup_epochs to lr over ``warmup_epochs``, then a
    half cosine from lr down to ``min_lr`` at ``total_epochs`` (and min_lr after)."""

    def __init__(
        self, lr: float, total_epochs: int, warmup_epochs: int = 0, min_lr: float = 0.0
    ) -> None:
        self.lr = _positive(lr, "lr")
        self.total_epochs = _count(total_epochs, "total_epochs", 1)
        self.warmup_epochs = _count(warmup_epochs, "warmup_epochs", 0)
        if self.warmup_epochs >= self.total_epochs:
            raise ValueError("warmup_epochs must be below total_epochs")
        self.min_lr = _positive(min_lr, "min_lr", allow_zero=True)
        if self.min_lr >= self.lr:
            raise ValueError("min_lr must be below lr")

    def rate(self, epoch: int) -> float:
        if epoch < self.warmup_epochs:
            return self.lr * (epoch + 1) / self.warmup_epochs
        span = self.total_epochs - self.warmup_epochs
        progress = min(1.0, (epoch - self.warmup_epochs) / span)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))
