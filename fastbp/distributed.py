"""Data-parallel training over an MPI communicator: ``Sequential.fit(..., comm=comm)``.

Every rank of ``comm`` (an mpi4py communicator; mpi4py is imported here only, never
to import fastbp) runs the same fit on its own copy of the model. The rules, stated
once:

- Start. Every rank checks its arguments and data; the ranks then exchange an ok
  flag and message (one ``allgather``): when one rank's fail, every rank raises the
  same ValueError naming that rank and its message, never a hang. Then a signature
  of the architecture, dtype, loss, optimizer and loop settings (and, with
  ``shard="global"``, a checksum of the data) is compared; a mismatch raises on
  every rank. Rank 0's parameters, optimizer state and step, random generator
  state, dropout seed and epoch count are then broadcast to all.
- Data. ``shard="global"``: every rank passes the full data. The global row order
  of each epoch is drawn from the model's random generator (the same on every rank
  after the broadcast), so it does not depend on the number of ranks; minibatch k
  of B_k rows (the last may be smaller) is split in contiguous shares: rank r of N
  takes positions [B_k r // N, B_k (r + 1) // N). The result equals one process's
  fit at the same ``batch_size`` to rounding. ``shard="local"``: every rank passes
  only its own rows, n_r of n in all; the global dataset is their concatenation in
  rank order; an epoch has K = ceil(n / batch_size) steps, and step k takes from
  rank r the positions [n_r k // K, n_r (k + 1) // K) of that rank's own order (its
  storage order, or with ``shuffle`` a permutation drawn from a seed that the
  model's generator gives every rank alike, mixed with the rank). Every rank's rows
  are then spread evenly over the epoch; a global minibatch holds about
  ``batch_size`` rows. No equivalence with one process is promised for "local"
  beyond this rule.
- A step. Each rank computes the weighted mean gradient of its share
  (``batch_gradients``; dropout masks by the rows' positions in the global
  minibatch, per-sample penalties divided by the global minibatch's weight), puts
  it times its share's weight W_r into one buffer with W_r, its loss, its metric
  sums and flags, and ONE in-place ``Allreduce`` sums the buffer over the ranks;
  every rank then divides by W = sum W_r and applies the same update
  (``apply_update``), so the weights stay identical on every rank. A rank with an
  empty share adds zeros.
- Metrics and decisions. The training metrics come from the reduced buffer, the
  validation metrics from each rank's share of the validation rows (contiguous
  shares with "global", its own rows with "local") summed by one small
  ``Allreduce`` per epoch: every rank sees the same History and takes the same
  decisions (divergence, EarlyStopping, ReduceLROnPlateau, ``tol``, Ctrl-C).
  Callbacks that decide must be the same on every rank: a fit whose ranks stop
  after different numbers of steps, or whose optimizer settings drift apart, raises
  on every rank. Only rank 0 prints progress and runs ModelCheckpoint; every
  rank's History is the same, read rank 0's.
- Faults. An exception on one rank during training (a callback raising, say) would
  leave the others waiting in the next ``Allreduce`` forever: that rank prints the
  error with its rank and calls ``comm.Abort(1)``, which ends the whole job as
  mpirun does when a rank dies. Divergence and the agreement checks raise on every
  rank alike and end no job. A checkpoint (ModelCheckpoint on rank 0 saves the
  weights, optimizer state and random state) lets a new job resume.
- Threads. Each rank runs fastbp's own threads on its share (``threads=`` of the
  model, by default what BLAS would use): keep ranks per machine times threads per
  rank at most the machine's cores, e.g. ``Sequential(..., threads=cores //
  ranks_per_machine)``.
"""

import math
import sys
import traceback
import zlib

import numpy as np

from . import _codes, _sparse, _threads
from . import data as fitdata
from . import trainer as fittrainer
from ._backend import core
from .callbacks import ModelCheckpoint
from .losses import LOSS_BCE, LOSS_CE_LABELS

SHARDS = ("global", "local")

# The step buffer: the flat gradient (times the share's weight), then these sums.
_TAIL = (
    "weight",  # the share's sum of sample weights (rows when unweighted)
    "loss",  # its loss (with the penalties) times its weight
    "penalty",  # its penalty times its weight
    "correct",
    "abs_residual",
    "sq_residual",
    "nonfinite",  # 1: its loss was NaN or infinite
    "stop",  # 1: Ctrl-C came on this rank
    "finished",  # 1: this rank has finished training (see _Shards.finish)
)
# Each epoch's small reduce (float64): validation sums and the optimizer settings.
_EPOCH = ("val_loss", "val_correct", "val_abs", "val_sq", "opt_tag", "opt_tag_sq")
# Optimizer settings compared through a tag below 2**20: its square, times any
# realistic number of ranks, stays an exact integer in float64.
_TAG_BITS = 20


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            "fit(comm=...) needs mpi4py and an MPI library: pip install 'fastbp[mpi]'"
        ) from error
    return MPI


def _collective(error):
    """Mark an exception that every rank raises alike (nothing to abort)."""
    error.fastbp_collective = True
    return error


def _agree(comm, error, what):
    """One collective of every rank's outcome: when any failed, every rank raises
    the same ValueError naming the ranks and their messages."""
    report = None if error is None else f"{type(error).__name__}: {error}"
    failed = [(rank, text) for rank, text in enumerate(comm.allgather(report)) if text]
    if failed:
        detail = "; ".join(f"rank {rank}: {text}" for rank, text in failed)
        raise ValueError(
            f"distributed fit failed {what} on {len(failed)} of {comm.Get_size()} ranks"
            f" ({detail}); every rank raises this error: fix the input of the rank named"
        ) from error


def _attempt(function):
    try:
        return function(), None
    except Exception as error:  # reported to every rank by _agree
        return None, error


def _checksum(*arrays):
    total = 0
    for array in arrays:
        if _sparse.is_csr(array):
            total = _checksum(*(array.matrix.data, array.matrix.indices, array.matrix.indptr))
        else:
            total = zlib.crc32(np.ascontiguousarray(array).view(np.uint8), total)
    return total


def _signature(model, loop, data, validation, shard):
    """What every rank must share: the model without its weights and state, the
    loop's settings, and with "global" the data themselves (by checksum)."""
    config = model.get_config()
    for private in ("seed", "threads", "rng_state", "dropout_seed", "history", "epochs_done"):
        config.pop(private)
    config["optimizer"].pop("iterations")
    signature = {
        "model": repr(config),
        "parameters": model.count_params(),
        "settings": repr(loop._replace(callbacks=None, verbose=None)),
        "shard": shard,
        "data": repr((data.kind, data.X.shape[1:], data.targets.shape[1:], data.weights.size > 0)),
        "validation": validation is not None,
    }
    if shard == "global":
        signature["rows"] = data.X.shape[0]
        signature["data checksum"] = _checksum(data.X, data.targets, data.labels, data.weights)
        if validation is not None:
            signature["validation checksum"] = _checksum(
                validation.X, validation.targets, validation.labels
            )
    return signature


def _check_signatures(comm, signature):
    """Every rank's signature against rank 0's: the same error on every rank, built
    from the gathered signatures alone."""
    signatures = comm.allgather(signature)
    reference = signatures[0]

    def shown(value, versus):
        """``value`` where it departs from ``versus`` (long texts around that point)."""
        text, other = str(value), str(versus)
        at = next((i for i, (a, b) in enumerate(zip(text, other)) if a != b), 0)
        start = max(0, at - 60)
        return (
            ("..." if start else "")
            + text[start : at + 60]
            + ("..." if at + 60 < len(text) else "")
        )

    differences = [
        f"rank {rank}'s {key} is {shown(other.get(key), reference[key])!r}, rank 0's"
        f" {shown(reference[key], other.get(key))!r}"
        for rank, other in enumerate(signatures)
        for key in reference
        if other.get(key) != reference[key]
    ]
    if differences:
        raise ValueError(
            "the ranks of a distributed fit must share the model (architecture, dtype,"
            " loss, optimizer), the fit's settings and, with shard='global', the data:"
            f" {'; '.join(differences)}. Every rank raises this error."
        )


def _broadcast(comm, model):
    """Rank 0's parameters, optimizer state and step, random state, dropout seed and
    epoch count to every rank."""
    network, state = model._network, model.optimizer_state
    comm.Bcast(network.params, root=0)
    if state.rows.size:
        comm.Bcast(state.rows, root=0)
    meta = comm.bcast(
        {
            "step": state.step,
            "rng": model._rng.bit_generator.state,
            "dropout_seed": network.dropout_seed,
            "epochs_done": model._epochs_done,
        },
        root=0,
    )
    state.step = meta["step"]
    model._rng.bit_generator.state = meta["rng"]
    network.dropout_seed = meta["dropout_seed"]
    model._epochs_done = meta["epochs_done"]


def _segment_sums(values, bounds):
    """Sums of values[bounds[i]:bounds[i + 1]], 0 for empty segments."""
    sums = np.zeros(bounds.size - 1)
    filled = bounds[1:] > bounds[:-1]
    if values.size and filled.any():
        sums[filled] = np.add.reduceat(values, bounds[:-1][filled])
    return sums


def _total_squares(comm, targets):
    """sum((targets - global column means)^2) over every rank's targets, combined
    from each rank's count, sums and own total squares (the same on every rank)."""
    parts = comm.allgather(
        (targets.shape[0], targets.sum(axis=0, dtype=np.float64), fitdata.total_squares(targets))
    )
    n = sum(count for count, _, _ in parts)
    mean = sum(sums for _, sums, _ in parts) / n
    return float(
        sum(
            squares + (count * np.sum((sums / count - mean) ** 2) if count else 0.0)
            for count, sums, squares in parts
        )
    )


class _Group:
    """The communicator and what a fit keeps of it."""

    def __init__(self, comm, shard, check_replicas):
        self.comm, self.shard, self.check_replicas = comm, shard, bool(check_replicas)
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.MPI = _mpi()

    def sum(self, buffer):
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)


class _Shards(fittrainer._Epochs):
    """The distributed fit's epochs (see the module): the trainer's loop, rollback
    and metrics, with each step taken on this rank's share and reduced."""

    def __init__(self, model, data, batch_size, shuffle, group, validation, orders=None):
        super().__init__(model, data, batch_size, shuffle, orders)
        self.group = group
        network = model._network
        rank, size, local = group.rank, group.size, group.shard == "local"
        counts = np.array(group.comm.allgather(self.n) if local else [self.n])
        self.n_rows = int(counts.sum())  # the global dataset's rows
        self.target_count = self.n_rows * (
            data.targets.shape[1] if data.kind != LOSS_CE_LABELS else 1
        )
        if local:  # the rule of the module: K steps, proportional shares
            self.n_batches = -(-self.n_rows // batch_size)
            steps = np.arange(self.n_batches + 1)
            bounds = counts[:, None] * steps[None, :] // self.n_batches  # (ranks, K + 1)
            shares = np.diff(bounds, axis=1)
            self.bounds = bounds[rank]
            self.mask_row0 = shares[:rank].sum(axis=0)
            self.batch_rows = shares.sum(axis=0).astype(np.float64)
            self.batch_weight = self.batch_rows.copy()
            self.stats = np.zeros(self.n_batches, dtype=_codes.BATCH_STATS)
            if not model.loss.is_classifier:
                self.total_squares = _total_squares(group.comm, data.targets)
            capacity = int(shares[rank].max())
        else:
            rows = self.batch_rows.astype(np.intp)
            self.mask_row0 = rows * rank // size
            capacity = int(max((rows * (rank + 1) // size - self.mask_row0).max(), 1))
        self.workspace = network.training_workspace(capacity, _sparse.is_csr(data.X))
        self.share_stats = np.zeros(1, dtype=_codes.BATCH_STATS)
        self.per_sample = bool(network.net[0]["penalty_per_weight"])
        # A share's rows, gathered (dense input), or its order at the front of a
        # full-length order (CSR input, read in place).
        if _sparse.is_csr(data.X):
            self.share_order = np.arange(self.n, dtype=np.intp)
        else:
            self.share_x = np.empty((capacity, data.X.shape[1]), dtype=data.X.dtype)
        self.share_targets = np.empty((capacity,) + data.targets.shape[1:], data.targets.dtype)
        self.share_labels = np.empty(capacity if data.labels.size else 0, dtype=np.intp)
        self.share_weights = np.empty(capacity if data.weights.size else 0, data.X.dtype)
        if local and not shuffle:
            self.order = np.arange(self.n, dtype=np.intp)
        self.buffer = np.zeros(network.params.size + len(_TAIL), dtype=network.dtype)
        self.tail = self.buffer[network.params.size :].view(
            np.dtype([(name, network.dtype) for name in _TAIL])
        )
        flops = fittrainer._step_flops(network, capacity)
        self.step_threads, self.blas_threads = _threads.plan(flops, model.threads)
        self.chunk = max(1, int(fittrainer.CHUNK_FLOPS // flops))
        self.validation = validation
        self.local_stop = lambda: False
        self.agreed_stop = False

    def reference_scales(self):
        # Every rank asks at the same point (the losses it judges are global); with
        # local shards each scores its own first rows, so all take rank 0's.
        scales = super().reference_scales()
        return self.group.comm.bcast(scales, root=0) if self.group.shard == "local" else scales

    # -- the epoch ------------------------------------------------------------------
    def begin(self):
        if self.group.shard == "global":
            super().begin()
            return
        model = self.model
        self.begin_checkpoint()
        self.opt = model.optimizer.config()
        if self.shuffle:
            seed = int(model._rng.integers(2**63))  # alike on every rank
            self.order = np.random.default_rng([seed, self.group.rank]).permutation(self.n)
        if self.weights is not None:
            self.batch_weight = _segment_sums(self.weights[self.order], self.bounds)
            self.group.sum(self.batch_weight)

    def _share(self, k):
        """Step k's rows of this rank: positions [lo, hi) of ``self.order``."""
        if self.group.shard == "local":
            return int(self.bounds[k]), int(self.bounds[k + 1])
        start = int(self.starts[k])
        rows = int(self.batch_rows[k])
        size, rank = self.group.size, self.group.rank
        return start + rows * rank // size, start + rows * (rank + 1) // size

    def _gradients(self, k, lo, hi):
        """This rank's share of step k into the step buffer; False when its loss is
        not finite."""
        data, model, ws = self.data, self.model, self.workspace
        network, m = model._network, hi - lo
        buffer, tail = self.buffer, self.tail
        buffer[:] = 0
        if m == 0:
            return True
        index = self.order[lo:hi] if self.shuffle or self.group.shard == "local" else None
        if index is None:
            index = np.arange(lo, hi)
        share = self._gather(index, m)
        stats = self.share_stats
        status = core().batch_gradients(
            params=network.params,
            grads=network.grads,
            work=ws.buffer,
            capacity=ws.capacity,
            label_work=ws.labels,
            weight_work=ws.weights,
            plan=network.compiled,
            X=share["X"],
            targets=share["targets"],
            labels=share["labels"],
            sample_weight=share["weights"],
            order=share["order"],
            batch_size=m,
            batch=0,
            loss_kind=data.kind,
            loss_param=model.loss.param,
            step=self.state.step,
            stats=stats,
            n_threads=self.step_threads,
            mask_row0=int(self.mask_row0[k]),
            penalty_weight=float(self.batch_weight[k]) if self.per_sample else 0.0,
        )
        weight = float(m)
        if data.weights.size:
            weights = share["weights"] if share["order"].size == 0 else data.weights[index]
            weight = float(weights.sum(dtype=np.float64))
        tail["correct"] = stats["correct"][0]
        tail["abs_residual"] = stats["abs_residual"][0]
        tail["sq_residual"] = stats["sq_residual"][0]
        if status != _codes.STATUS_OK:
            tail["nonfinite"] = 1
            tail["loss"] = stats["loss"][0]
            return False
        if weight > 0:
            np.multiply(network.grads, weight, out=buffer[: network.params.size])
            tail["weight"] = weight
            tail["loss"] = stats["loss"][0] * weight
            tail["penalty"] = stats["penalty"][0] * weight
        return True

    def _gather(self, index, m):
        data = self.data
        empty = np.empty(0, dtype=np.intp)
        if _sparse.is_csr(data.X):  # CSR rows are read in place, in this order
            self.share_order[:m] = index
            return dict(
                X=data.X,
                targets=data.targets,
                labels=data.labels,
                weights=data.weights,
                order=self.share_order,
            )
        share = dict(X=self.share_x[:m], order=empty)
        np.take(data.X, index, axis=0, out=share["X"], mode="clip")
        share["targets"] = self.share_targets[: m if data.targets.shape[0] else 0]
        if data.targets.shape[0]:
            np.take(data.targets, index, axis=0, out=share["targets"], mode="clip")
        share["labels"] = self.share_labels[: m if data.labels.size else 0]
        if data.labels.size:
            np.take(data.labels, index, out=share["labels"], mode="clip")
        share["weights"] = self.share_weights[: m if data.weights.size else 0]
        if data.weights.size:
            np.take(data.weights, index, out=share["weights"], mode="clip")
        return share

    def train(self, first):
        """Steps from ``first`` (a chunk, or up to an agreed Ctrl-C): each rank's
        share, one Allreduce, the same update everywhere."""
        model, state = self.model, self.state
        network = model._network
        stop = min(self.n_batches, first + self.chunk)
        for k in range(first, stop):
            lo, hi = self._share(k)
            self._gradients(k, lo, hi)
            self.tail["stop"] = 1 if self.local_stop() else 0
            self.group.sum(self.buffer)
            tail = self.tail[0]
            if tail["finished"]:
                raise self._mismatched_steps()
            out = self.stats[k]
            out["correct"] = int(round(float(tail["correct"])))
            out["abs_residual"] = tail["abs_residual"]
            out["sq_residual"] = tail["sq_residual"]
            weight = float(tail["weight"])
            self.agreed_stop = self.agreed_stop or bool(tail["stop"])
            if tail["nonfinite"]:
                out["loss"] = tail["loss"] if not math.isfinite(tail["loss"]) else math.nan
                return _codes.STATUS_NONFINITE_LOSS, k - first
            if weight == 0:  # no weight: no update and no step, as one process
                out["loss"] = out["penalty"] = 0
            else:
                out["loss"] = tail["loss"] / weight
                out["penalty"] = tail["penalty"] / weight
                np.divide(self.buffer[: network.params.size], weight, out=network.grads)
                core().apply_update(
                    network.params,
                    network.grads,
                    state.rows,
                    self.opt,
                    self.segments,
                    state.step + 1,
                    self.step_threads,
                )
                state.step += 1
            if self.agreed_stop:
                return _codes.STATUS_OK, k + 1 - first
        return _codes.STATUS_OK, stop - first

    def stop_rule(self, requested):
        self.local_stop = requested
        return lambda: self.agreed_stop

    def metrics(self):
        model, stats, data = self.model, self.stats, self.data
        metrics = {
            "loss": float(stats["loss"] @ self.batch_weight) / self.batch_weight.sum()
            + model._network.penalty(frozen_only=True, total_weight=self.n_rows / self.n_batches)
        }
        if model.loss.is_classifier:
            per_sample = data.targets.shape[1] if data.kind == LOSS_BCE else 1
            metrics["accuracy"] = stats["correct"].sum() / (self.n_rows * per_sample)
        else:
            metrics["mae"] = stats["abs_residual"].sum() / self.target_count
            metrics["r2"] = (
                1 - stats["sq_residual"].sum() / self.total_squares
                if self.total_squares > 0
                else 0.0
            )
        if self.group.check_replicas:
            self._check_replicas()
        return metrics

    def _check_replicas(self):
        network, state = self.model._network, self.state
        mine = (_checksum(network.params, state.rows), state.step)
        seen = self.group.comm.allgather(mine)
        if any(other != seen[0] for other in seen):
            differ = [rank for rank, other in enumerate(seen) if other != seen[0]]
            raise _collective(
                RuntimeError(
                    f"check_replicas: after epoch {self.model._epochs_done} the weights,"
                    f" optimizer state or step of ranks {differ} differ from rank 0's;"
                    " every rank raises this error (a bug, or an MPI whose Allreduce"
                    " gives ranks different sums)"
                )
            )

    def validate(self, validation):
        """This rank's share of the validation sums and its optimizer settings, in
        one small Allreduce (every epoch, with validation or not)."""
        model, network = self.model, self.model._network
        sums = np.zeros(len(_EPOCH))
        tag = float(zlib.crc32(self.opt.tobytes()) % (1 << _TAG_BITS))
        sums[_EPOCH.index("opt_tag")], sums[_EPOCH.index("opt_tag_sq")] = tag, tag * tag
        part = self.validation_part
        if part is not None:
            ws = network.inference_workspace(part.X.shape[0])
            stats = np.zeros(1, dtype=_codes.BATCH_STATS)
            with model._guard.reading():
                core().evaluate_run(
                    network.params,
                    ws.buffer,
                    ws.capacity,
                    network.compiled,
                    part.X,
                    part.targets,
                    part.labels,
                    part.kind,
                    model.loss.param,
                    stats,
                )
            count = part.X.shape[0]
            sums[:4] = (
                stats["loss"][0] * count,
                stats["correct"][0],
                stats["abs_residual"][0],
                stats["sq_residual"][0],
            )
        self.group.sum(sums)
        size = self.group.size
        mean_tag, mean_sq = sums[4] / size, sums[5] / size
        if mean_tag != tag or mean_sq != tag * tag:  # equal means and squares: all equal
            raise _collective(
                RuntimeError(
                    f"the optimizer's settings differ between ranks in epoch"
                    f" {self.model._epochs_done} (a callback or the script changed them"
                    " on some ranks only): give every rank the same callbacks and"
                    " settings. Every rank raises this error."
                )
            )
        if validation is None:
            return {}
        n = self.validation_count
        metrics = {"loss": sums[0] / n + network.penalty(total_weight=n)}
        if model.loss.is_classifier:
            per_sample = validation.targets.shape[1] if validation.kind == LOSS_BCE else 1
            metrics["accuracy"] = sums[1] / (n * per_sample)
        else:
            metrics["mae"] = sums[2] / (n * validation.targets.shape[1])
            spread = self.validation_squares
            metrics["r2"] = 1.0 - sums[3] / spread if spread > 0 else 0.0
        return metrics

    def prepare_validation(self, validation):
        """Once per fit: this rank's validation rows and the global counts."""
        self.validation_part, self.validation_count, self.validation_squares = None, 0, 0.0
        if validation is None:
            return
        n, group = validation.X.shape[0], self.group
        regression = not self.model.loss.is_classifier
        if group.shard == "global":
            rank, size = group.rank, group.size
            lo, hi = n * rank // size, n * (rank + 1) // size
            if hi > lo:
                self.validation_part = validation.rows(np.arange(lo, hi))
            self.validation_count = n
            if regression:
                self.validation_squares = fitdata.total_squares(validation.targets)
        else:
            self.validation_part = validation
            self.validation_count = int(sum(group.comm.allgather(n)))
            if regression:
                self.validation_squares = _total_squares(group.comm, validation.targets)

    def finish(self):
        """The last collective of a fit that ran to its end: the step buffer with
        "finished" set. A rank still training receives it in its next step and every
        rank raises (``_mismatched_steps``), instead of waiting forever."""
        self.buffer[:] = 0
        self.tail["finished"] = 1
        self.group.sum(self.buffer)
        if float(self.tail[0]["finished"]) != self.group.size:
            raise self._mismatched_steps()

    def _mismatched_steps(self):
        return _collective(
            RuntimeError(
                "the ranks of a distributed fit did not take the same number of steps:"
                " some finished training while others went on (callbacks that stop"
                " training, or change the epochs, on some ranks only?). Give every rank"
                " the same callbacks and settings. Every rank raises this error."
            )
        )


class _Trainer(fittrainer.Trainer):
    """The trainer's loop on a ``_Shards`` run; its divergence errors are raised by
    every rank alike."""

    def __init__(self, model, group, validation):
        super().__init__(model)
        self.group, self.validation = group, validation

    def _new_run(self, data, settings, orders):
        run = _Shards(
            self.model,
            data,
            settings.batch_size,
            settings.shuffle,
            self.group,
            self.validation,
            orders,
        )
        run.prepare_validation(self.validation)
        return run

    def _diverged(self, run, epoch, what):
        try:
            super()._diverged(run, epoch, what)
        except Exception as error:
            _collective(error)
            raise


def _abort(group, error):
    """End the job: another rank would wait for this one forever."""
    print(
        f"fastbp: rank {group.rank} of {group.size} failed during distributed training;"
        " ending the job with comm.Abort(1) so that no rank waits forever:",
        file=sys.stderr,
    )
    traceback.print_exception(error, file=sys.stderr)
    sys.stderr.flush()
    group.comm.Abort(1)


def fit(model, comm, shard, check_replicas, loop_args, prepare, orders=None):
    """``Sequential.fit`` with ``comm`` (see the module); ``loop_args`` are
    ``fastbp.trainer.settings``'s arguments, ``prepare()`` checks the data and
    returns ``(data, validation)``; ``orders`` (shard "global" only) is the
    trainer's: each epoch's row order, the same on every rank (``fastbp.sklearn``
    draws them from its random stream)."""
    for method in ("Get_rank", "Get_size", "Allreduce", "allgather", "Bcast", "bcast", "Abort"):
        if not callable(getattr(comm, method, None)):
            raise TypeError(
                f"comm must be an mpi4py communicator (such as MPI.COMM_WORLD), got"
                f" {type(comm).__name__} without {method}()"
            )
    group = _Group(comm, shard, check_replicas)

    def checked():
        if shard not in SHARDS:
            raise ValueError(f"shard must be 'global' or 'local', got {shard!r}")
        if orders is not None and shard != "global":
            raise ValueError("row orders from the caller need shard='global'")
        loop = fittrainer.settings(*loop_args)
        return (loop,) + prepare()

    with model._guard.fitting():
        outcome, error = _attempt(checked)
        _agree(comm, error, "checking its arguments and data")
        loop, data, validation = outcome
        _check_signatures(comm, _signature(model, loop, data, validation, shard))
        _broadcast(comm, model)
        if loop.validation_split:
            outcome, error = _attempt(lambda: model._split(data, loop.validation_split))
            _agree(comm, error, "splitting off the validation rows")
            data, validation = outcome
            if shard == "local":  # each rank split its own rows: realign the generator
                model._rng.bit_generator.state = comm.bcast(model._rng.bit_generator.state)
        if group.rank != 0:
            loop = loop._replace(
                verbose=0,
                callbacks=[c for c in loop.callbacks if not isinstance(c, ModelCheckpoint)],
            )
        trainer = _Trainer(model, group, validation)
        try:
            history = trainer.fit(data, validation, loop, orders=orders)
            trainer.run.finish()
        except BaseException as error:
            if getattr(error, "fastbp_collective", False):
                raise
            _abort(group, error)
            raise
        return history
