"""The fit loop: epochs of compiled runs of minibatches, and what happens between
them (thread plan, rollback on divergence, metrics, callbacks, progress, Ctrl-C,
``tol``); and the training step in two halves for callers that reduce gradients
between them (data-parallel training, full-batch optimizers).

Divergence, the one statement of the rule (``Sequential.fit`` documents it): a
minibatch loss or weights that are NaN or infinite, or an epoch's training loss
above ``EXPLOSION`` times the fit's reference loss (the largest of its first
minibatch's loss, the loss at its starting weights on the first rows, and the loss
of an all-zero output). The first minibatch's loss alone bounds the reference from
below, and a loss under ``EXPLOSION`` times that bound passes whatever the other
two are: they are computed only for a loss above it, from the fit's starting
weights, which the fit keeps (almost no fit computes them). The rollback point is the
start of the latest epoch whose first minibatch, whose loss is taken at exactly
those weights, had a finite and sane loss: the start of the failing epoch may
already hold the diverged result of the epoch before.

The trainer works on its model's parts (the network plan, the optimizer and its
state, the loss, the guard) and on data that ``fastbp.data`` has checked.
"""

import math
import time
import warnings
from typing import NamedTuple

import numpy as np

from . import _codes, _interrupt, _progress, _sparse, _threads, inference
from . import _validation as val
from . import data as fitdata
from ._backend import core
from .callbacks import Callback
from .losses import LOSS_BCE

# Floating-point operations per compiled training call (about 10 ms of work):
# enough to make the Python between calls (callbacks, Ctrl-C, progress)
# negligible, little enough to answer Ctrl-C and waiting readers within
# milliseconds.
CHUNK_FLOPS = 4e9

# Divergence (see Trainer): an epoch whose training loss exceeds this many times
# the fit's reference loss. A working fit's epoch losses stay near or below where
# they started; diverging SGD multiplies them by 1e5 to 1e100 before (if ever) they
# overflow, so that four orders of magnitude catch it early without mistaking a
# noisy first minibatch or unscaled inputs for it (the reference takes the larger
# of two scales, below).
EXPLOSION = 1e4

# Rows of the training data over which the loss of an all-zero output and the loss
# at the starting weights are taken: scales of the data, not estimates that need
# every row (a first minibatch of one row is no scale: one row of unscaled inputs
# may lose 1e6 times more than another before any step).
_ZERO_OUTPUT_ROWS = 256


class Settings(NamedTuple):
    """fit's arguments of the loop, checked."""

    epochs: int
    batch_size: int
    shuffle: bool
    callbacks: list
    verbose: int
    tol: float
    n_iter_no_change: int
    validation_split: float


def settings(
    epochs,
    batch_size,
    shuffle,
    callbacks,
    verbose,
    tol,
    n_iter_no_change,
    validation_split,
    validation_data,
):
    """Check fit's loop arguments once, at the boundary."""
    epochs = val.positive_int(epochs, "epochs", minimum=0)
    batch_size = val.positive_int(batch_size, "batch_size")
    shuffle = val.flag(shuffle, "shuffle")
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(
                f"callbacks must be fastbp.callbacks.Callback instances, got"
                f" {type(callback).__name__}"
            )
    if tol is not None:
        tol = val.nonnegative_float(tol, "tol")
        n_iter_no_change = val.positive_int(n_iter_no_change, "n_iter_no_change")
    split = val.fraction(validation_split, "validation_split")
    if split and validation_data is not None:
        raise ValueError("give validation_data or validation_split, not both")
    return Settings(epochs, batch_size, shuffle, callbacks, verbose, tol, n_iter_no_change, split)


def _buffers(network, workspace, data):
    """What every compiled training call takes, by name: the flat buffers, the
    workspace, the plan and the checked data."""
    return dict(
        params=network.params,
        grads=network.grads,
        work=workspace.buffer,
        capacity=workspace.capacity,
        label_work=workspace.labels,
        weight_work=workspace.weights,
        plan=network.compiled,
        X=data.X,
        targets=data.targets,
        labels=data.labels,
        sample_weight=data.weights,
        loss_kind=data.kind,
    )


def _step_flops(network, rows):
    return 6 * network.params.size * rows


class _Epochs:
    """One fit's buffers and settings, prepared once: the row order, per-minibatch
    statistics, the trainable segments, the thread plan and the rollback copies."""

    def __init__(self, model, data, batch_size, shuffle, orders=None):
        network, state = model._network, model.optimizer_state
        self.model, self.data, self.state, self.orders = model, data, state, orders
        shuffle = shuffle or orders is not None
        self.shuffle = shuffle
        self.n = n = data.X.shape[0]
        self.batch = min(batch_size, n)
        self.n_batches = -(-n // self.batch)
        self.workspace = network.training_workspace(self.batch, _sparse.is_csr(data.X))
        self.segments = network.sync_trainable()
        self.order = np.empty(n if shuffle else 0, dtype=np.intp)
        self.stats = np.zeros(self.n_batches, dtype=_codes.BATCH_STATS)
        # Each minibatch's share of the epoch's loss: its rows, or the sum of its
        # sample weights (one whose weights are all zero, skipped, counts for nothing).
        self.starts = np.arange(0, n, self.batch)
        self.weights = data.weights.astype(np.float64) if data.weights.size else None
        self.batch_rows = np.diff(np.append(self.starts, n)).astype(np.float64)
        self.batch_weight = self.batch_rows.copy()
        flops = _step_flops(network, self.batch)
        self.step_threads, self.blas_threads = _threads.plan(flops, model.threads)
        self.chunk = max(1, int(CHUNK_FLOPS // flops))
        # Rollback points: the start of this epoch, and the latest epoch start whose
        # first minibatch's loss was finite and sane (None until one is); a spare
        # for the next start (None: a new one then); and the fit's start
        # (``origin``), kept until its loss is known (``start_loss``), which is all
        # the reference needs of it. So a fit holds at most two checkpoints: the
        # start of the epoch and the latest sane one.
        self.start = self.good = self.origin = self.spare = None
        # The fit's reference loss (see the module): its lower bound, the first
        # minibatch's loss, and the reference itself once a loss exceeds that.
        self.floor = self.reference = self.start_loss = None
        self.opt = model.optimizer.config()
        self.total_squares = (
            0.0 if model.loss.is_classifier else fitdata.total_squares(data.targets)
        )

    def begin(self):
        """The start of an epoch: the rollback point, the rule (a callback may have
        changed the learning rate), a new row order."""
        model = self.model
        self.begin_checkpoint()
        self.opt = model.optimizer.config()
        if self.orders is not None:
            np.copyto(self.order, self.orders(), casting="same_kind")
        elif self.shuffle:
            # A new permutation each epoch, a function of the model's random stream
            # alone: a fit resumed from a saved model draws the orders it would have.
            core().permutation(self.order, int(model._rng.integers(2**63)))
        if self.weights is not None:
            weights = self.weights[self.order] if self.shuffle else self.weights
            self.batch_weight = np.add.reduceat(weights, self.starts)

    def begin_checkpoint(self):
        """The epoch's start: the spare (or a new checkpoint) takes the model; the
        first is the fit's start (``origin``, until its loss is known)."""
        model = self.model
        self.start = self.spare or _Checkpoint(model._network.params, self.state.rows)
        self.spare = None
        self.start.take(model)
        if self.origin is None and self.start_loss is None:
            self.origin = self.start

    def stop_rule(self, requested):
        """The test the loop asks whether to stop (Ctrl-C): ``requested``, this
        process's own (a data-parallel run agrees on it with the other ranks)."""
        return requested

    def validate(self, validation):
        """The epoch's validation metrics (without "val_"), {} without validation."""
        return {} if validation is None else self.model._evaluate_data(validation)

    def sane(self, loss):
        """Whether a training loss is finite and at most ``EXPLOSION`` times the
        fit's reference loss (any finite loss before the reference's bound is known),
        computing the reference only for a loss above its bound."""
        if not math.isfinite(loss):
            return False
        if self.floor is None or loss <= EXPLOSION * self.floor:
            return True
        if self.reference is None:
            with _threads.blas_limited(self.blas_threads):
                scales = self.reference_scales()
            self.reference = max([self.floor] + [abs(s) for s in scales])
        return loss <= EXPLOSION * self.reference

    def reference_scales(self):
        """The reference's other terms: the loss of an all-zero output and the loss
        at the fit's starting weights (``fastbp.distributed`` takes rank 0's)."""
        return _zero_output_loss(self.model, self.data), self.loss_at_origin()

    def loss_at_origin(self):
        """The loss at the fit's starting weights, computed once (from ``origin``)."""
        if self.start_loss is None:
            self.start_loss = _start_loss(self.model, self.data, self.origin.params)
        return self.start_loss

    def judge_start(self):
        """After the epoch's first run of minibatches: its first minibatch's loss,
        taken at the weights of the epoch's start, bounds the fit's reference from
        below (on the first epoch) and tells whether that start is a sane rollback
        point."""
        first = float(self.stats["loss"][0])
        if self.floor is None and math.isfinite(first):
            self.floor = max(abs(first), _TINY)
        if self.sane(first):
            self.spare, self.good = self._reusable(self.good), self.start
        else:
            self.spare = self._reusable(self.start)

    def _reusable(self, point):
        """``point`` to take the next epoch's start (None: a new checkpoint then).
        The fit's start is reused once its loss, all that the reference needs of
        it, is known (taken now if need be)."""
        if point is not None and point is self.origin:
            self.loss_at_origin()
            self.origin = None
        return point

    def roll_back(self, to_epoch_start=False):
        """Restore the latest sane rollback point (``to_epoch_start``: this epoch's
        start); returns its epoch."""
        point = self.start if to_epoch_start or self.good is None else self.good
        point.restore(self.model)
        return point.epoch

    def train(self, first):
        """Minibatches from ``first``, one compiled call; returns (status, batches run)."""
        model, data, ws, state = self.model, self.data, self.workspace, self.state
        network = model._network
        status, ran, state.step = core().train_run(
            **_buffers(network, ws, data),
            loss_param=model.loss.param,
            order=self.order,
            batch_size=self.batch,
            first_batch=first,
            stop_batch=min(self.n_batches, first + self.chunk),
            opt=self.opt,
            state=state.rows,
            segments=self.segments,
            step=state.step,
            stats=self.stats,
            n_threads=self.step_threads,
        )
        return status, ran

    def metrics(self):
        """The epoch's running metrics from the minibatches' statistics (frozen
        layers' penalties are constants the step does not compute)."""
        model, stats, data = self.model, self.stats, self.data
        metrics = {
            "loss": float(stats["loss"] @ self.batch_weight) / self.batch_weight.sum()
            + model._network.penalty(frozen_only=True, total_weight=self.n / self.n_batches)
        }
        if model.loss.is_classifier:
            per_sample = data.targets.shape[1] if data.kind == LOSS_BCE else 1
            metrics["accuracy"] = stats["correct"].sum() / (self.n * per_sample)
        else:
            metrics["mae"] = stats["abs_residual"].sum() / data.targets.size
            metrics["r2"] = (
                1 - stats["sq_residual"].sum() / self.total_squares
                if self.total_squares > 0
                else 0.0
            )
        return metrics


_TINY = float(np.finfo(np.float64).tiny)


class _Checkpoint:
    """A rollback point: the weights, the optimizer state and step count, and the
    epochs and History as they were at the start of an epoch."""

    def __init__(self, params, rows):
        self.params, self.rows = np.empty_like(params), np.empty_like(rows)
        self.step = self.epoch = 0
        self.history = None

    def take(self, model):
        state = model.optimizer_state
        np.copyto(self.params, model._network.params)
        np.copyto(self.rows, state.rows)
        self.step, self.epoch = state.step, model._epochs_done
        self.history = model.history._mark()

    def restore(self, model):
        state = model.optimizer_state
        np.copyto(model._network.params, self.params)
        np.copyto(state.rows, self.rows)
        state.step, model._epochs_done = self.step, self.epoch
        model.history._restore(self.history)


def _zero_output_loss(model, data):
    """The loss of an all-zero network output (logits, log-rates) on the first rows:
    what the targets alone make of the loss, a scale that does not depend on the
    weights. 0 when not finite (NaN targets fail later, by name)."""
    rows = min(data.X.shape[0], _ZERO_OUTPUT_ROWS)
    zeros = np.zeros((rows, model.n_outputs), dtype=data.X.dtype)
    value, _ = core().loss_delta(
        data.kind,
        zeros,
        data.targets[:rows],
        data.labels[:rows],
        np.empty_like(zeros),
        model.loss.param,
    )
    return value if math.isfinite(value) else 0.0


def _start_loss(model, data, params):
    """The loss at ``params`` (the weights fit started from) on the first rows, with
    their penalties (without dropout or sample weights): what the data make of the
    loss before training. 0 when not finite (NaN inputs fail later, by name)."""
    first = data.rows(slice(0, min(data.X.shape[0], _ZERO_OUTPUT_ROWS)))  # views of dense data
    value = inference.evaluate(model._network, model._guard, model.loss, first, params)["loss"]
    return value if math.isfinite(value) else 0.0


class _Tolerance:
    """scikit-learn's ``tol`` and ``n_iter_no_change``: stop after that many epochs
    in a row without an improvement of at least ``tol``."""

    def __init__(self, tol, patience):
        self.tol, self.patience, self.best, self.stale = tol, patience, math.inf, 0

    def exhausted(self, value):
        if self.tol is None:
            return False
        self.stale = self.stale + 1 if value > self.best - self.tol else 0
        self.best = min(self.best, value)
        return self.stale >= self.patience


class Trainer:
    """Trains its model (see the module)."""

    def __init__(self, model):
        self.model = model

    def fit(self, data, validation, settings, orders=None):
        """Run the epochs of ``settings`` on checked ``data``; return the History.

        ``orders`` (None: shuffle as ``settings`` says), called at the start of each
        epoch, returns that epoch's row order (a permutation of the rows): a caller
        with its own random stream (``fastbp.sklearn``) draws the orders itself.
        ``self.run`` is the fit's ``_Epochs`` while it runs (its per-minibatch
        statistics are what callbacks of the package read)."""
        model, epochs, callbacks = self.model, settings.epochs, settings.callbacks
        # The run in progress, for callbacks of the package that read its
        # per-minibatch statistics (fastbp.sklearn), whichever trainer runs it.
        run = self.run = model._run = self._new_run(data, settings, orders)
        progress = _progress.make(settings.verbose, epochs, run.n_batches, model._epochs_done)
        tolerance = _Tolerance(settings.tol, settings.n_iter_no_change)
        model.stop_training = False
        names = list(inference.metric_names(model.loss))
        names += ["val_" + name for name in names] if validation is not None else []
        with model._guard.writing():  # callbacks may write the weights
            for callback in callbacks:
                callback.set_model(model)
                # What its on_epoch_end will find in the logs: fit's metrics and
                # what the callbacks before it add.
                params = {"epochs": epochs, "verbose": settings.verbose, "metrics": list(names)}
                callback.set_params(params)
                names += [key for key in callback.logged if key not in names]
            for callback in callbacks:
                callback.on_train_begin({})
        interrupted = None
        try:
            with _threads.blas_limited(run.blas_threads), _interrupt.requests() as requested:
                stop_requested = run.stop_rule(requested)
                for _ in range(epochs):
                    interrupted = self._epoch(
                        run, validation, callbacks, progress, stop_requested, tolerance
                    )
                    if interrupted is None and stop_requested():  # came in the last run
                        interrupted = (model._epochs_done - 1, run.n_batches)
                    if interrupted or model.stop_training:
                        break
        finally:
            progress.close()
        with model._guard.writing():  # EarlyStopping restores the best weights here
            for callback in callbacks:
                callback.on_train_end({})
        if interrupted:
            epoch, done = interrupted
            where = (
                f"at the end of epoch {epoch}, the last in the History"
                if done == run.n_batches
                else f"in epoch {epoch} after {done} of {run.n_batches} minibatches: the"
                " weights keep those updates (and the optimizer counts them); the History"
                " holds the completed epochs"
            )
            warnings.warn(f"training interrupted (Ctrl-C) {where}", stacklevel=3)
        return model.history

    def _new_run(self, data, settings, orders):
        """The fit's ``_Epochs`` (``fastbp.distributed`` makes its own)."""
        return _Epochs(self.model, data, settings.batch_size, settings.shuffle, orders)

    def _epoch(self, run, validation, callbacks, progress, stop_requested, tolerance):
        """One epoch; returns (epoch, minibatches done) when Ctrl-C stopped it before
        its end. The weights are written only inside the guard's write sections,
        which readers wait for; they get in between the compiled runs.

        Once all its minibatches have run and it has not diverged, the epoch is
        complete: it enters the History and the count of epochs even when one of
        its callbacks then raises, so that the History always matches the weights.
        """
        model, guard = self.model, self.model._guard
        epoch, started = model._epochs_done, time.perf_counter()
        with guard.writing():
            for callback in callbacks:
                callback.on_epoch_begin(epoch, {})
            run.begin()
        done, metrics = 0, None
        try:
            while done < run.n_batches:
                with guard.writing():
                    status, ran = run.train(done)
                    if done == 0:
                        run.judge_start()
                    done += ran
                    if status != _codes.STATUS_OK:
                        self._diverged(
                            run,
                            epoch,
                            f"the training loss became"
                            f" {run.stats['loss'][done]} at minibatch {done}",
                        )
                    if done == run.n_batches:
                        metrics = self._complete(run, epoch)
                    progress.batches(ran)
                    for callback in callbacks:
                        callback.on_batch_chunk_end(done, {"batch": done})
                if done < run.n_batches and stop_requested():
                    return epoch, done
            with guard.writing():
                for key, value in run.validate(validation).items():
                    metrics["val_" + key] = value
                for callback in callbacks:
                    callback.on_epoch_end(epoch, metrics)
        finally:
            if metrics is not None:
                model.history._append(epoch, metrics)
                model._epochs_done += 1
        progress.epoch_end(epoch, metrics, time.perf_counter() - started)
        if tolerance.exhausted(metrics["val_loss" if validation is not None else "loss"]):
            model.stop_training = True
        return None

    def _complete(self, run, epoch):
        """The end of an epoch's minibatches: its training metrics, once it is known
        not to have diverged."""
        if not val.all_finite(self.model._network.params):
            self._diverged(run, epoch, "the weights became NaN or infinite")
        metrics = run.metrics()
        loss = metrics["loss"]
        if not run.sane(loss):
            self._diverged(
                run,
                epoch,
                f"the epoch's training loss {loss:.4g} exceeds {EXPLOSION:g} times the"
                f" fit's reference loss {run.reference:.4g} (the largest of its first"
                " minibatch's loss, the loss at its starting weights and the loss of an"
                " all-zero output)"
                if math.isfinite(loss)
                else f"the epoch's training loss became {loss}",
            )
        return metrics

    def _diverged(self, run, epoch, what):
        """Restore the latest sane rollback point and raise, blaming the data if it
        holds NaN or infinity (then the start of this epoch: the weights are not at
        fault), else the step size."""
        try:
            fitdata.check_finite_inputs(run.data.X, "X")
            val.check_finite(run.data.targets, "y")
        except ValueError:
            run.roll_back(to_epoch_start=True)
            raise
        sane = run.good is not None
        restored = run.roll_back()
        raise FloatingPointError(
            f"training diverged in epoch {epoch}: {what}. The weights, optimizer state"
            f" and History are restored to the start of epoch {restored}"
            + (
                ", the last point whose training loss was finite and sane."
                if sane
                else ", where this fit began."
            )
            + f" Try a smaller learning rate (now {self.model.optimizer.lr}) or scale"
            " the inputs."
        )

    # -- the step in two halves ---------------------------------------------------
    def gradients(self, data, budget=None):
        """The first half of a step on ``data`` as one minibatch: the mean loss (with
        the trainable layers' penalties) and its gradient into the model's flat
        gradient buffer (zero for frozen layers), with the dropout masks of the next
        step. ``budget``: the threads it may use (None: the model's ``threads``).
        Returns the minibatch's BatchStats."""
        model = self.model
        network, n = model._network, data.X.shape[0]
        ws = network.training_workspace(n, _sparse.is_csr(data.X))
        network.sync_trainable()
        stats = np.zeros(1, dtype=_codes.BATCH_STATS)
        threads, blas = _threads.plan(
            _step_flops(network, n), model.threads if budget is None else budget
        )
        with _threads.blas_limited(blas):
            status = core().batch_gradients(
                **_buffers(network, ws, data),
                loss_param=model.loss.param,
                order=np.empty(0, dtype=np.intp),
                batch_size=n,
                batch=0,
                step=model.optimizer_state.step,
                stats=stats,
                n_threads=threads,
            )
        if status != _codes.STATUS_OK:
            fitdata.check_finite_inputs(data.X, "X")
            val.check_finite(data.targets, "y")
            raise FloatingPointError(
                f"the loss is {stats[0]['loss']}: the weights are not"
                " finite or too large for these inputs"
            )
        return stats[0]

    def apply(self):
        """The second half: clip the model's flat gradient buffer and take one
        optimizer step on the trainable layers."""
        model = self.model
        network, state = model._network, model.optimizer_state
        segments = network.sync_trainable()
        threads, blas = _threads.plan(2 * network.params.size, model.threads)
        core().apply_update(
            network.params,
            network.grads,
            state.rows,
            model.optimizer.config(),
            segments,
            state.step + 1,
            threads,
        )
        state.step += 1
