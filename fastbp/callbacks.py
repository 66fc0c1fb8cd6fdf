"""Callbacks: code that runs at points of ``fit`` (Keras conventions).

``fit(..., callbacks=[...])`` calls, on each callback:

- ``on_train_begin(logs)`` and ``on_train_end(logs)``,
- ``on_epoch_begin(epoch, logs)`` and ``on_epoch_end(epoch, logs)``, where the end's
  ``logs`` holds the epoch's metrics ("loss", "accuracy", "val_loss", ...),
- ``on_batch_chunk_end(batch, logs)`` after each run of minibatches that the
  compiled step trained in one call (``batch`` counts the epoch's minibatches done).

A callback stops training by setting ``model.stop_training = True``. Learning-rate
schedules and early stopping live here, not in the optimizer; so does ``History``,
the record of the epochs that ``fit`` returns.
"""

from __future__ import annotations

import inspect
import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _validation as val


class History:
    """Per-epoch metrics of ``fit``.

    Attributes
    ----------
    history : dict of str to list of float
        "loss" (the mean training loss over each epoch's minibatches), "accuracy"
        for classification, and "val_loss" (and "val_accuracy") when validation data
        is given.
    epoch : list of int
        The epoch numbers, from 0 (continuing across repeated ``fit`` calls).
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def _append(self, epoch, metrics):
        self.epoch.append(epoch)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))

    def _mark(self):
        """What ``_restore`` needs to forget the epochs recorded after now."""
        return len(self.epoch), {key: len(values) for key, values in self.history.items()}

    def _restore(self, mark):
        """Forget the epochs recorded since ``mark`` (their updates were rolled back)."""
        n_epochs, lengths = mark
        del self.epoch[n_epochs:]
        for key in list(self.history):
            if key in lengths:
                del self.history[key][lengths[key] :]
            else:
                del self.history[key]

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def plot(
        self,
        metrics: str | Sequence[str] | None = None,
        ax: Any = None,
        path: str | os.PathLike[str] | None = None,
    ) -> Any:
        """Draw the training and validation curves with matplotlib.

        Parameters
        ----------
        metrics : str or list of str, optional
            A base name ("loss") or several to draw, each with its "val_" twin when
            present; default: every recorded metric except the learning rate.
        ax : matplotlib Axes or array of Axes, optional
            Where to draw; default: a new figure with one panel per metric.
        path : str, optional
            Also save the figure there (PNG, SVG, PDF: by the file's ending) and
            close it, in the same call.

        Returns
        -------
        array of matplotlib Axes
        """
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from None
        if not self.epoch:
            raise ValueError("the History is empty: nothing to plot")
        if isinstance(metrics, str):
            metrics = [metrics]
        names = metrics or [k for k in self.history if not k.startswith("val_") and k != "lr"]
        names = [name[4:] if name.startswith("val_") else name for name in names]
        names = list(dict.fromkeys(names))  # "loss" and "val_loss" draw one panel
        missing = [n for n in names if n not in self.history and "val_" + n not in self.history]
        if missing:
            raise ValueError(f"no metric {missing} in the History; it has {sorted(self.history)}")
        if ax is None:
            _, ax = plt.subplots(
                1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False, layout="constrained"
            )
        axes = np.atleast_1d(ax).ravel()
        if len(axes) < len(names):
            raise ValueError(f"{len(names)} metrics need {len(names)} axes, got {len(axes)}")
        epochs = [epoch + 1 for epoch in self.epoch]  # numbered from 1, as fit shows them
        for axis, name in zip(axes, names):
            for key, label in ((name, "training"), ("val_" + name, "validation")):
                if key in self.history:
                    axis.plot(
                        epochs,
                        self.history[key],
                        label=label,
                        marker="." if len(epochs) < 30 else None,
                    )
            axis.set_xlabel("epoch")
            axis.set_title(name.replace("_", " "))
            axis.xaxis.get_major_locator().set_params(integer=True)
            axis.grid(alpha=0.3)
            axis.legend(fontsize="small")
        if path is not None:
            figure = axes[0].figure
            figure.savefig(os.fspath(path), dpi=120, bbox_inches="tight")
            plt.close(figure)
        return axes

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class Callback:
    """Base class: every hook does nothing. ``self.model`` is the model being fit.

    ``self.params`` (set by fit before ``on_train_begin``, as Keras's ``set_params``)
    holds "epochs", "verbose" and "metrics": the keys of the epoch logs this
    callback's ``on_epoch_end`` will receive (fit's metrics, then the keys that
    callbacks before it in the list add). A callback that adds keys to the epoch logs
    names them in ``logged``.
    """

    logged: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        pass

    def on_batch_chunk_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        pass


def _mode_for(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    return "max" if any(word in monitor for word in ("accuracy", "acc", "r2")) else "min"


class _Monitor:
    """Tracks the best value of a monitored metric."""

    def __init__(self, monitor, mode, min_delta):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name, got {monitor!r}")
        if (
            isinstance(min_delta, bool)
            or not isinstance(min_delta, numbers.Real)
            or not min_delta >= 0
        ):
            raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
        self.monitor = monitor
        self.mode = _mode_for(monitor, mode)
        self.min_delta = float(min_delta)
        self.best = math.inf if self.mode == "min" else -math.inf

    def value(self, logs, who):
        if self.monitor not in logs:
            raise ValueError(
                f"{who} monitors {self.monitor!r}, which fit does not report (it reports"
                f" {sorted(logs)}); give validation_data or validation_split for 'val_*'"
                " metrics"
            )
        return logs[self.monitor]

    def improved(self, value):
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


def _check_int(value, name, minimum=0):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class EarlyStopping(Callback):
    """Stop when a monitored metric stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        A key of the epoch logs ("loss", "val_loss", "val_accuracy", ...).
    patience : int, default 0
        Epochs without improvement to wait before stopping.
    min_delta : float, default 0
        The least change that counts as an improvement.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better; "auto" takes higher for accuracy and R^2.
    restore_best_weights : bool, default False
        At the end of training, set the weights to those of the best epoch.

    Attributes
    ----------
    stopped_epoch : int or None
        The epoch after which training stopped, None when it ran to the end.
    best_epoch : int or None
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        super().__init__()
        self._monitor = _Monitor(monitor, mode, min_delta)
        self.monitor = monitor
        self.patience = _check_int(patience, "patience")
        self.restore_best_weights = val.flag(restore_best_weights, "restore_best_weights")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._monitor.best = math.inf if self._monitor.mode == "min" else -math.inf
        self.wait = 0
        self.stopped_epoch = None
        self.best_epoch = None
        self._best_weights = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = self._monitor.value(logs, "EarlyStopping")
        if self._monitor.improved(value):
            self._monitor.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self._best_weights = self.model.flat_params.copy()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.restore_best_weights and self._best_weights is not None:
            np.copyto(self.model.flat_params, self._best_weights)

    @property
    def best(self) -> float:
        return self._monitor.best


class ModelCheckpoint(Callback):
    """Save the model after epochs (``model.save``).

    Parameters
    ----------
    path : str
        File to write; may hold ``{epoch}`` (from 1) and metric fields, as in
        ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``: any of the metrics fit reports
        (``params["metrics"]``), checked when training begins.
    monitor : str, default "val_loss"
    save_best_only : bool, default False
        Save only when the monitored metric improves.
    mode : {"auto", "min", "max"}, default "auto"
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
    ) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self._monitor = _Monitor(monitor, mode, 0.0)
        self.save_best_only = val.flag(save_best_only, "save_best_only")
        self.saved = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._monitor.best = math.inf if self._monitor.mode == "min" else -math.inf
        # A path naming a metric that fit does not report (or a bad format) fails
        # now, not after a whole epoch.
        metrics = getattr(self, "params", {}).get("metrics")
        if metrics is None:  # not run by fit: nothing to check against
            return
        if self.save_best_only:
            self._monitor.value(dict.fromkeys(metrics, 0.0), "ModelCheckpoint")
        try:
            self.path.format(epoch=1, **dict.fromkeys(metrics, 0.0))
        except KeyError as exc:
            raise ValueError(
                f"ModelCheckpoint's path {self.path!r} names {exc.args[0]!r}, which fit"
                f" does not report: it may name 'epoch' and {sorted(metrics)}"
                + (
                    ""
                    if any(m.startswith("val_") for m in metrics)
                    else " (give validation_data or validation_split for 'val_*' metrics)"
                )
            ) from None
        except (IndexError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"ModelCheckpoint's path {self.path!r} cannot be filled in with the"
                f" epoch and the metrics ({exc}): use fields such as {{epoch:03d}} and"
                " {val_loss:.3f}"
            ) from None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.save_best_only:
            value = self._monitor.value(logs, "ModelCheckpoint")
            if not self._monitor.improved(value):
                return
            self._monitor.best = value
        self.saved.append(self.model.save(self.path.format(epoch=epoch + 1, **logs)))


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate at the start of every epoch.

    Parameters
    ----------
    schedule : callable
        ``schedule(epoch) -> lr``, epoch counted from 0 across fit calls (for
        example a schedule from ``fastbp.schedules``), or, as in Keras,
        ``schedule(epoch, lr) -> lr`` with the current learning rate: a callable
        that accepts two positional arguments gets both.
    """

    logged = ("lr",)

    def __init__(self, schedule: Callable[..., float]) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable, got {schedule!r}")
        self.schedule = schedule
        self._takes_lr = _accepts(schedule, 2)
        if not self._takes_lr and not _accepts(schedule, 1):
            raise TypeError(
                f"schedule must take the epoch, schedule(epoch), or the epoch and the"
                f" learning rate, schedule(epoch, lr); {schedule!r} takes neither"
            )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        lr = (
            self.schedule(epoch, self.model.optimizer.lr)
            if self._takes_lr
            else self.schedule(epoch)
        )
        if (
            isinstance(lr, bool)
            or not isinstance(lr, numbers.Real)
            or not (math.isfinite(lr) and lr >= 0)
        ):
            raise ValueError(
                f"the schedule gave learning rate {lr!r} for epoch {epoch}:"
                " it must be a finite number >= 0"
            )
        self.model.optimizer.lr = float(lr)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs["lr"] = self.model.optimizer.lr


def _accepts(function, n_positional):
    """Whether ``function`` can be called with ``n_positional`` positional arguments
    (True when its signature cannot be read: it is then called with one)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return n_positional == 1
    try:
        signature.bind(*range(n_positional))
    except TypeError:
        return False
    return True


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when a metric stops improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
    factor : float, default 0.1
        In (0, 1).
    patience : int, default 10
        Epochs without improvement before a reduction.
    min_delta : float, default 1e-4
    min_lr : float, default 0
        The learning rate never goes below it.
    mode : {"auto", "min", "max"}, default "auto"
    """

    logged = ("lr",)

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor!r}")
        if isinstance(min_lr, bool) or not isinstance(min_lr, numbers.Real) or not min_lr >= 0:
            raise ValueError(f"min_lr must be a number >= 0, got {min_lr!r}")
        self._monitor = _Monitor(monitor, mode, min_delta)
        self.factor = float(factor)
        self.patience = _check_int(patience, "patience")
        self.min_lr = float(min_lr)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._monitor.best = math.inf if self._monitor.mode == "min" else -math.inf
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = self._monitor.value(logs, "ReduceLROnPlateau")
        if self._monitor.improved(value):
            self._monitor.best = value
            self.wait = 0
        else:
            self.wait += 1
            if self.wait > self.patience:
                optimizer = self.model.optimizer
                optimizer.lr = max(optimizer.lr * self.factor, self.min_lr)
                self.wait = 0
        logs["lr"] = self.model.optimizer.lr
