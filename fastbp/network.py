"""The network plan: a model's layers as the compiled core runs them.

``Network`` flattens the layers (Dense, Dropout, Residual) into one ``LayerPlan``
row per Dense layer and a ``NetPlan`` (the structs of ``fastbp/_core.pxd``), owns the
flat parameter and gradient buffers that every layer's weight and bias are views
into, fuses the output activation into the loss, lays out the workspaces and lists
the trainable ranges of the flat buffer. It is built once per model and input width;
nothing here runs per minibatch.
"""

import threading

import numpy as np

from . import _aligned, _codes
from ._backend import core
from .layers import Dense, Dropout, Residual

# Rows per chunk of predict and evaluate (the size of an inference workspace).
INFERENCE_CHUNK = 512


def flatten(layers):
    """The Dense layers in order, the dropout rate of the input and after each of
    them, and each one's skip source (NO_SKIP; SKIP_INPUT; i: Dense layer i)."""
    dense, rates, skips = [], [0.0], []

    def walk(group, inside):
        for position, layer in enumerate(group):
            if isinstance(layer, Dense):
                dense.append(layer)
                rates.append(0.0)
                skips.append(_codes.NO_SKIP)
            elif isinstance(layer, Dropout):
                if position > 0 and isinstance(group[position - 1], Residual):
                    raise ValueError(
                        "Dropout right after a Residual block is not"
                        " supported: put it inside the block"
                    )
                rates[-1] = 1 - (1 - rates[-1]) * (1 - layer.rate)
            else:
                if inside:
                    raise ValueError("Residual blocks cannot be nested")
                source = len(dense) - 1
                walk(layer.layers, True)
                skips[-1] = source

    walk(layers, False)
    if not dense:
        raise ValueError("the model has no Dense layers")
    return dense, rates, skips


def _check_placement(layers, dense, rates, input_dim):
    if isinstance(layers[-1], Dropout):
        raise ValueError("Dropout cannot be the last layer: its output is the loss's input")
    for layer, rate in zip(dense, rates[1:]):
        if rate and layer.activation == "softmax":
            raise ValueError("Dropout after a softmax layer is not supported")
    if max([input_dim] + [layer.units for layer in dense]) >= 2**31:  # BLAS: 32-bit sizes
        raise ValueError("layer widths must be below 2**31")


class Workspace:
    """The per-batch memory of one compiled call for up to ``capacity`` rows: one
    flat buffer laid out by the plan (see ``LayerPlan``'s offsets), and the gathered
    labels and sample weights of a shuffled training batch."""

    def __init__(self, network, capacity, training, sparse=False):
        net = network.net[0]
        width = net["train_width"] if training else net["infer_width"]
        if training and sparse:  # sparse rows are read in place: no input batch
            width = net["x_at"]
        self.capacity, self.sparse = capacity, training and sparse
        self.buffer = _aligned.empty(capacity * int(width), network.dtype)
        self.labels = np.empty(capacity if training else 0, dtype=np.intp)
        self.weights = np.empty(capacity if training else 0, dtype=network.dtype)


def _penalty_convention(dense):
    """Whether the network's penalties are per sample (see fastbp.regularizers):
    one convention for all of them."""
    kinds = {
        r.per_sample
        for layer in dense
        for r in (layer.kernel_regularizer, layer.bias_regularizer)
        if r is not None
    }
    if len(kinds) > 1:
        raise ValueError(
            "the network mixes regularizers with per_sample=True and per_sample=False:"
            " use one convention for every layer"
        )
    return bool(kinds and kinds.pop())


class Network:
    """The compiled plan of ``layers`` for ``input_dim`` features (see the module).

    Attributes
    ----------
    dense : list of Dense
    params, grads : ndarray
        The flat buffers (each layer's weight then bias, in order).
    plan : ndarray of LAYER_PLAN
    net : ndarray of NET_PLAN, shape (1,)
    compiled : fastbp._core.Plan
        The two, checked once, as the compiled calls take them.
    """

    def __init__(self, layers, loss, input_dim, dtype, rng):
        self.dense, rates, skips = flatten(layers)
        _check_placement(layers, self.dense, rates, input_dim)
        self.dtype = np.dtype(dtype)
        self.input_dim = input_dim
        self.n_outputs = self.dense[-1].units
        self.lost = None
        sizes, n_in = [], input_dim
        for layer in self.dense:
            sizes.append(layer.n_params(n_in))
            n_in = layer.units
        size = int(sum(sizes))
        self.params = _aligned.empty(size, self.dtype)
        self.grads = _aligned.full(size, 0, self.dtype)
        self.plan = np.zeros(len(self.dense), dtype=_codes.LAYER_PLAN)
        self._bind_layers(rates, skips, rng)
        last = self.dense[-1]
        if last.activation == loss.output_activation and skips[-1] == _codes.NO_SKIP:
            self.plan[-1]["activation"] = _codes.ACTIVATIONS["identity"]  # fused into the loss
        self.net = np.zeros(1, dtype=_codes.NET_PLAN)
        net = self.net[0]
        net["n_inputs"], net["n_outputs"] = input_dim, last.units
        net["output_activation"] = _codes.ACTIVATIONS[loss.output_activation]
        net["input_dropout"] = rates[0]
        net["loss_scale"] = loss.row_scale(last.units)
        net["penalty_per_weight"] = _penalty_convention(self.dense)
        net["dropout_seed"] = int(rng.integers(0, 2**63))
        self._lay_out()
        self._ranges = [
            (int(row["weight_at"]), int(row["bias_at"] + row["n_out"])) for row in self.plan
        ]
        self._flags = None  # the trainable flags that _segments follows
        self.compiled = core().Plan(self.net, self.plan, self.params.size)
        self._local = threading.local()
        self._train_ws = None

    def _bind_layers(self, rates, skips, rng):
        """Bind each Dense layer to its stretch of the flat buffers (weight, then
        bias) and fill its plan row."""
        n_in, at = self.input_dim, 0
        for row, layer, skip, rate in zip(self.plan, self.dense, skips, rates[1:]):
            if skip == _codes.NO_SKIP:
                width = layer.units
            else:  # what the residual adds: the input or an earlier layer's output
                width = self.input_dim if skip == _codes.SKIP_INPUT else self.dense[skip].units
            if width != layer.units:
                raise ValueError(
                    f"a Residual block adds its input ({width} features) to its"
                    f" output ({layer.units} units): they must match"
                )
            end = at + layer.n_params(n_in)
            layer.bind(n_in, self.params[at:end], self.grads[at:end], rng, owner=self)
            row["n_in"], row["n_out"], row["skip"] = n_in, layer.units, skip
            row["activation"] = layer.activation_code
            row["act_param"] = layer.activation_param
            row["weight_at"], row["bias_at"] = at, at + n_in * layer.units
            row["dropout_after"] = rate
            (row["l1_weight"], row["l2_weight"], row["l1_bias"], row["l2_bias"]) = (
                layer.penalty_coefficients()
            )
            row["trainable"] = bool(layer.trainable)
            n_in, at = layer.units, end

    def _lay_out(self):
        """Workspace offsets, in rows: what inference needs first (each layer's
        output, then the residual sums), then what only training needs (kept
        pre-activations, deltas, the gathered batch)."""
        at = 0

        def take(width):
            nonlocal at
            at += width
            return at - width

        plan, net = self.plan, self.net[0]
        plan["sum_at"] = plan["z_at"] = -1
        for row in plan:
            row["out_at"] = take(row["n_out"])
        for row in plan:
            if row["skip"] != _codes.NO_SKIP:
                row["sum_at"] = take(row["n_out"])
        net["infer_width"] = at
        for row, layer in zip(plan, self.dense):
            if layer.activation == "gelu":
                row["z_at"] = take(row["n_out"])
        for row in plan:
            row["delta_at"] = take(row["n_out"])
        net["y_at"] = take(net["n_outputs"])
        net["x_at"] = take(net["n_inputs"])  # last: sparse input needs no copy of its rows
        net["train_width"] = at

    # -- ownership ----------------------------------------------------------------
    def release(self, layer):
        """A layer of this plan was bound to another model: this one may no longer
        run (its weights would be another model's)."""
        self.lost = f"its layer {layer!r} was moved to another model"

    # -- what a call needs --------------------------------------------------------
    @property
    def dropout_seed(self):
        return int(self.net[0]["dropout_seed"])

    @dropout_seed.setter
    def dropout_seed(self, value):
        self.net[0]["dropout_seed"] = value

    def sync_trainable(self):
        """Follow the layers' ``trainable`` flags: update the plan, zero the frozen
        layers' gradients, and return the flat ranges [start, stop) to update (the
        trainable layers', merged where adjacent)."""
        flags = [bool(layer.trainable) for layer in self.dense]
        if flags != self._flags:
            self.plan["trainable"] = flags
            segments = []
            for trainable, (lo, hi) in zip(flags, self._ranges):
                if not trainable:
                    self.grads[lo:hi] = 0
                elif segments and segments[-1][1] == lo:
                    segments[-1][1] = hi
                else:
                    segments.append([lo, hi])
            self._flags = flags
            self._segments = np.array(segments, dtype=np.intp).reshape(-1, 2)
        return self._segments

    def variant(self, all_trainable=False, dropout=True):
        """A compiled plan of copies: every layer trainable (the gradients of every
        layer, frozen or not), or without dropout."""
        plan, net = self.plan.copy(), self.net.copy()
        if all_trainable:
            plan["trainable"] = 1
        if not dropout:
            plan["dropout_after"], net["input_dropout"] = 0, 0
        return core().Plan(net, plan, self.params.size)

    def inference_workspace(self, rows):
        """This thread's inference workspace for ``rows`` rows (chunked at
        INFERENCE_CHUNK): concurrent calls from several threads never share one."""
        rows = min(rows, INFERENCE_CHUNK)
        ws = getattr(self._local, "workspace", None)
        if ws is None or ws.capacity < rows:
            ws = self._local.workspace = Workspace(self, rows, training=False)
        return ws

    def predictor(self, rows):
        """This thread's compiled forward pass (``fastbp._core.Predictor``) for
        ``rows`` rows, bound to the parameters and this thread's inference workspace
        once: a predict call then costs its input check, its output and the pass."""
        predictor = getattr(self._local, "predictor", None)
        if predictor is None or predictor.capacity < rows and predictor.capacity < INFERENCE_CHUNK:
            ws = self.inference_workspace(rows)
            predictor = self._local.predictor = core().Predictor(
                self.params, ws.buffer, ws.capacity, self.compiled
            )
        return predictor

    def training_workspace(self, rows, sparse=False):
        """The training workspace, kept between fits (one fit runs at a time); for
        ``sparse`` input one without the input batch will do."""
        ws = self._train_ws
        if ws is None or ws.capacity < rows or (ws.sparse and not sparse):
            self._train_ws = Workspace(self, rows, training=True, sparse=sparse)
        return self._train_ws

    def penalty(self, frozen_only=False, total_weight=1.0, params=None):
        """The layers' current penalties (only the frozen ones': the training step
        computes the trainable ones'), divided by ``total_weight`` when they are per
        sample; or those of the weights in ``params``, a flat buffer laid out as
        ``self.params``."""
        total = 0.0
        for layer, row in zip(self.dense, self.plan):
            if frozen_only and layer.trainable:
                continue
            if params is None:
                total += layer.penalty()
            else:
                weight_at, bias_at = int(row["weight_at"]), int(row["bias_at"])
                total += layer.penalty(
                    params[weight_at:bias_at], params[bias_at : bias_at + layer.units]
                )
        return total / total_weight if self.net[0]["penalty_per_weight"] else total
