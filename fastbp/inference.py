"""Inference and analysis on a built network: predictions, metrics, the loss and its
gradients, gradients with respect to the inputs.

Each call reads the weights inside the guard's read section (never while a fit
writes them) and works in memory of its own: this thread's inference workspace, or
a workspace and gradient buffer made for the call, so that calls from several
threads at once give exactly what they would give one at a time. The data arrive
checked (``fastbp.data``).
"""

import math

import numpy as np

from . import _codes, _sparse
from ._backend import core
from .data import check_finite_inputs, total_squares
from .losses import LOSS_BCE
from .network import Workspace


def predict(network, guard, X):
    """The network's output for X, the fused output activation applied; X a ``Csr``
    or an ndarray, checked but for NaN and infinity (which the compiled pass finds).
    ``NotImplemented`` for an ndarray that the kernels cannot read as it is (the
    caller converts it and calls again)."""
    if X.shape[0] == 0:
        return np.empty((0, network.n_outputs), dtype=network.dtype)
    predictor = network.predictor(X.shape[0])
    token = guard.acquire_read()
    try:
        out = predictor.run(X)
    finally:
        guard.release_read(token)
    if out is None:
        check_finite_inputs(X, "X")  # raises, naming the first bad entry
    return out


def metric_names(loss):
    """The metrics ``evaluate`` reports for ``loss`` (fit's epochs report the same,
    and with validation data each again with "val_" before it)."""
    return ("loss", "accuracy") if loss.is_classifier else ("loss", "mae", "r2")


def evaluate(network, guard, loss, data, params=None):
    """Metrics on checked data: "loss" (with the layers' penalties), "accuracy" for
    classification, "mae" and "r2" for regression; at the network's weights, or at
    ``params``, a flat buffer laid out as ``network.params``."""
    ws = network.inference_workspace(data.X.shape[0])
    stats = np.zeros(1, dtype=_codes.BATCH_STATS)
    with guard.reading():
        core().evaluate_run(
            network.params if params is None else params,
            ws.buffer,
            ws.capacity,
            network.compiled,
            data.X,
            data.targets,
            data.labels,
            data.kind,
            loss.param,
            stats,
        )
        penalty = network.penalty(total_weight=data.X.shape[0], params=params)
        metrics = {"loss": float(stats["loss"][0]) + penalty}
    n = data.X.shape[0]
    if loss.is_classifier:
        per_sample = data.targets.shape[1] if data.kind == LOSS_BCE else 1
        metrics["accuracy"] = int(stats["correct"][0]) / (n * per_sample)
    else:
        metrics["mae"] = float(stats["abs_residual"][0]) / data.targets.size
        spread = total_squares(data.targets)
        metrics["r2"] = 1.0 - float(stats["sq_residual"][0]) / spread if spread > 0 else 0.0
    return metrics


def loss_and_gradients(network, guard, loss, data, step, training):
    """The mean loss over all of the data (with every layer's penalty) and its
    gradient for every layer, frozen or not, in a buffer of the call's own;
    ``training`` applies the dropout masks of step ``step + 1``."""
    n = data.X.shape[0]
    plan = network.variant(all_trainable=True, dropout=training)
    grads = np.zeros_like(network.params)
    ws = Workspace(network, n, training=True, sparse=_sparse.is_csr(data.X))
    stats = np.zeros(1, dtype=_codes.BATCH_STATS)
    with guard.reading():
        status = core().batch_gradients(
            params=network.params,
            grads=grads,
            work=ws.buffer,
            capacity=n,
            label_work=ws.labels,
            weight_work=ws.weights,
            plan=plan,
            X=data.X,
            targets=data.targets,
            labels=data.labels,
            sample_weight=data.weights,
            order=np.empty(0, dtype=np.intp),
            batch_size=n,
            batch=0,
            loss_kind=data.kind,
            loss_param=loss.param,
            step=step,
            stats=stats,
        )
    # A non-finite loss (weights too large for these inputs) is returned as it is.
    value = float(stats["loss"][0]) if status == _codes.STATUS_OK else math.inf
    return value, [
        (
            grads[r["weight_at"] : r["bias_at"]].reshape(r["n_in"], r["n_out"]),
            grads[r["bias_at"] : r["bias_at"] + r["n_out"]],
        )
        for r in network.plan
    ]


def input_gradient(network, guard, loss, data, output):
    """Row i: d loss_i / d x_i (``output`` < 0) or d prediction_i[output] / d x_i."""
    if _sparse.is_csr(data.X):
        raise TypeError("input_gradient needs dense X (its gradient is dense): pass X.toarray()")
    ws = Workspace(network, data.X.shape[0], training=True)
    gradient = np.empty_like(data.X)
    with guard.reading():
        core().input_gradient_run(
            network.params,
            ws.buffer,
            ws.capacity,
            network.variant(all_trainable=True),
            data.X,
            data.targets,
            data.labels,
            data.kind,
            loss.param,
            output,
            gradient,
        )
    return gradient
