"""The Sequential model: owns the flat parameter buffer and the workspaces, checks
inputs once per call, and hands whole epochs of minibatches to the compiled step."""
import time
import warnings

import numpy as np

from . import _validation as val
from .activations import ACTIVATIONS
from .layers import Dense, Dropout, Layer, Residual
from .losses import LOSS_BCE, LOSS_CE_LABELS, get_loss
from .optimizers import OPTIMIZERS, get_optimizer
from . import _interrupt, _progress, _threads
from ._backend import core
from .callbacks import Callback

# Rows per chunk for predict and evaluate.
INFERENCE_CHUNK = 512
# Floating-point operations per compiled training call (about 10 ms of work).
CHUNK_FLOPS = 4e9


def _check_callbacks(callbacks):
    callbacks = list(callbacks or [])
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks must be fastbp.callbacks.Callback instances, got"
                            f" {type(callback).__name__}")
    return callbacks


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

    def __init__(self):
        self.history = {}
        self.epoch = []

    def _append(self, epoch, metrics):
        self.epoch.append(epoch)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(float(value))

    def __getitem__(self, key):
        return self.history[key]

    def plot(self, metrics=None, ax=None):
        """Draw the training and validation curves with matplotlib.

        Parameters
        ----------
        metrics : list of str, optional
            Base names to draw, each with its "val_" twin when present; default:
            every recorded metric except the learning rate.
        ax : matplotlib Axes or array of Axes, optional
            Where to draw; default: a new figure with one panel per metric.

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
        names = metrics or [k for k in self.history if not k.startswith("val_") and k != "lr"]
        names = [name[4:] if name.startswith("val_") else name for name in names]
        missing = [n for n in names if n not in self.history and "val_" + n not in self.history]
        if missing:
            raise ValueError(f"no metric {missing} in the History; it has {sorted(self.history)}")
        if ax is None:
            _, ax = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.5), squeeze=False)
        axes = np.atleast_1d(ax).ravel()
        if len(axes) < len(names):
            raise ValueError(f"{len(names)} metrics need {len(names)} axes, got {len(axes)}")
        for axis, name in zip(axes, names):
            for key, label in ((name, "training"), ("val_" + name, "validation")):
                if key in self.history:
                    axis.plot(self.epoch, self.history[key], label=label)
            axis.set_xlabel("epoch")
            axis.set_ylabel(name)
            axis.legend()
        return axes

    def __len__(self):
        return len(self.epoch)

    def __repr__(self):
        last = {k: round(v[-1], 6) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class _Workspace:
    """One flat buffer holding every per-batch array of a forward/backward pass for
    up to ``capacity`` rows: gathered inputs and targets, then each layer's output,
    then each layer's delta and, for layers whose derivative needs it (GELU), its
    pre-activation (training only). ``layout`` gives each one's offset (-1: none)."""

    def __init__(self, n_inputs, widths, capacity, dtype, training, keep_z=None, sums=None):
        self.capacity = capacity
        keep_z = keep_z if training and keep_z is not None else [False] * len(widths)
        sums = sums if sums is not None else [False] * len(widths)
        sizes = [capacity * n_inputs, capacity * widths[-1]] if training else [0, 0]
        sizes += [capacity * w for w in widths]  # layer outputs
        sizes += [capacity * w for w in widths] if training else [0] * len(widths)  # deltas
        sizes += [capacity * w if keep else 0 for w, keep in zip(widths, keep_z)]  # kept z
        sizes += [capacity * w if total else 0 for w, total in zip(widths, sums)]  # residual sums
        self.layout = np.zeros(len(sizes), dtype=np.intp)
        self.layout[1:] = np.cumsum(sizes[:-1])
        n = len(widths)
        self.layout[len(sizes) - 2 * n:len(sizes) - n][~np.asarray(keep_z, dtype=bool)] = -1
        self.layout[len(sizes) - n:][~np.asarray(sums, dtype=bool)] = -1
        self.buffer = np.empty(int(sum(sizes)), dtype=dtype)
        self.labels = np.empty(capacity if training else 0, dtype=np.intp)
        self.weights = np.empty(capacity if training else 0, dtype=dtype)


class Sequential:
    """A feedforward network: a stack of layers trained by backpropagation.

    Parameters
    ----------
    layers : list of Layer
        The layers, input side first. The last layer's width is the output size.
    loss : str or Loss, optional
        "mse", "cross_entropy" or "binary_cross_entropy", or a Loss instance. By
        default: cross_entropy when the last activation is softmax,
        binary_cross_entropy when it is sigmoid, mse otherwise.
    optimizer : str or Optimizer, default "adam"
        "sgd" or "adam" (default hyperparameters), or an Optimizer instance.
    seed : int, optional
        Seeds the initial weights and the shuffling: the same seed, data and BLAS
        thread count give bit-identical weights.
    dtype : {"float32", "float64"}, default "float32"
        Precision of weights and computation. Inputs are converted to it.
    input_dim : int, optional
        Number of input features. With it the weights are created now; without it,
        at the first ``fit`` (or ``set_weights``).
    threads : int, optional
        Threads for training and inference. By default, as many as BLAS uses now
        (which ``threadpoolctl.threadpool_limits`` or ``OMP_NUM_THREADS`` set).
        fastbp chooses how to use them: for all but tiny networks it splits each
        training step over its own threads, BLAS running single-threaded inside.

    Notes
    -----
    All parameters live in one contiguous buffer (``flat_params``); each layer's
    weight and bias are views into it, and the gradients likewise. A layer belongs to
    one model at a time: a built layer given to a new model moves there, weights and
    all. A final softmax before cross-entropy (sigmoid before binary cross-entropy,
    exponential before Poisson) is fused into the loss: training works on the logits,
    ``predict`` returns probabilities (rates).
    """

    def __init__(self, layers=None, loss=None, optimizer="adam", seed=None,
                 dtype="float32", input_dim=None, threads=None):
        self.layers = []
        for layer in layers or []:
            self.add(layer)
        self.optimizer = get_optimizer(optimizer)
        self.dtype = val.float_dtype(dtype)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an integer or None, got {seed!r}")
        self.seed = seed
        self.threads = None if threads is None else val.positive_int(threads, "threads")
        self._rng = np.random.default_rng(seed)
        self.history = History()
        self.built = False
        self.flat_params = self.flat_grads = None
        self._train_ws = self._infer_ws = None
        self._epochs_done = 0
        self._classes_seen = False
        self.stop_training = False
        self.loss = get_loss(loss) if loss is not None else None
        if input_dim is not None:
            self.build(val.positive_int(input_dim, "input_dim"))

    def add(self, layer):
        """Append a layer (before the model is built)."""
        if getattr(self, "built", False):
            raise RuntimeError("cannot add layers to a model that is already built")
        if not isinstance(layer, Layer):
            raise TypeError(f"layers must be Layer instances, got {type(layer).__name__}")
        if not isinstance(layer, (Dense, Dropout, Residual)):
            raise TypeError(f"Sequential supports Dense, Dropout and Residual layers, got"
                            f" {type(layer).__name__}")
        if any(layer is other for other in self.layers):
            raise ValueError("the same layer instance appears twice in the model")
        self.layers.append(layer)

    # -- building -----------------------------------------------------------------
    def build(self, input_dim):
        """Create the weights for ``input_dim`` input features."""
        self._resolve_loss()
        dense, _, skips = self._flatten()
        self._dropout = self._dropout_rates()
        sizes, n_in = [], input_dim
        for layer in dense:
            sizes.append(layer.n_params(n_in))
            n_in = layer.output_dim(n_in)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.flat_params = np.empty(int(offsets[-1]), dtype=self.dtype)
        self.flat_grads = np.zeros(int(offsets[-1]), dtype=self.dtype)
        # BLAS takes 32-bit sizes.
        if max([input_dim] + [layer.units for layer in dense]) >= 2**31:
            raise ValueError("layer widths must be below 2**31")

        spec = np.zeros((len(dense), core().SPEC_COLUMNS), dtype=np.intp)
        self._act_param = np.zeros(len(dense))
        n_in = input_dim
        for i, layer in enumerate(dense):
            lo, hi = offsets[i], offsets[i + 1]
            skip = skips[i]
            width = input_dim if skip == -1 else dense[skip].units if skip >= 0 else layer.units
            if width != layer.units:
                raise ValueError(f"a Residual block adds its input ({width} features) to its"
                                 f" output ({layer.units} units): they must match")
            layer.bind(n_in, self.flat_params[lo:hi], self.flat_grads[lo:hi], self._rng)
            code = layer.activation_code
            if i == len(dense) - 1 and layer.activation == self.loss.output_activation \
                    and skip == -2:
                code = ACTIVATIONS["identity"]  # fused into the loss
            spec[i] = (n_in, layer.units, code, lo, lo + n_in * layer.units, 1, skip)
            self._act_param[i] = layer.activation_param
            n_in = layer.units
        self._spec = spec
        self._reg = np.array([layer.penalty_coefficients() for layer in dense],
                             dtype=np.float64).reshape(len(dense), 4)
        self._dropout_seed = int(self._rng.integers(0, 2**63))
        self._output_act = ACTIVATIONS[self.loss.output_activation]
        self.input_dim = input_dim
        self.built = True
        self._train_ws = self._infer_ws = None
        return self

    def _flatten(self):
        """The Dense layers in order, the dropout rate of the input and after each of
        them, and each one's skip source (-2: none; -1: the input; i: Dense layer i),
        as the compiled step reads them."""
        dense, rates, skips = [], [0.0], []

        def walk(layers, inside):
            for position, layer in enumerate(layers):
                if isinstance(layer, Dense):
                    dense.append(layer)
                    rates.append(0.0)
                    skips.append(-2)
                elif isinstance(layer, Dropout):
                    if position > 0 and isinstance(layers[position - 1], Residual):
                        raise ValueError("Dropout right after a Residual block is not"
                                         " supported: put it inside the block")
                    rates[-1] = 1 - (1 - rates[-1]) * (1 - layer.rate)
                else:
                    if inside:
                        raise ValueError("Residual blocks cannot be nested")
                    source = len(dense) - 1
                    walk(layer.layers, True)
                    skips[-1] = source

        walk(self.layers, False)
        return dense, rates, skips

    @property
    def _dense(self):
        return self._flatten()[0]

    def _dropout_rates(self):
        """Dropout rate of the input (index 0) and of each Dense layer's output, as the
        compiled step reads them; empty when the model has no dropout."""
        dense, rates, _ = self._flatten()
        if isinstance(self.layers[-1], Dropout):
            raise ValueError("Dropout cannot be the last layer: its output is the loss's input")
        for i, layer in enumerate(dense):
            if rates[i + 1] and layer.activation == "softmax":
                raise ValueError("Dropout after a softmax layer is not supported")
        return np.array(rates if any(rates) else [], dtype=np.float64)

    def _resolve_loss(self):
        """Fix the loss (inferred from the last activation when not given) and check
        that the output layer suits it."""
        if not self._dense:
            raise ValueError("the model has no Dense layers")
        if self.loss is None:
            last = self._dense[-1].activation
            self.loss = get_loss({"softmax": "cross_entropy",
                                  "sigmoid": "binary_cross_entropy"}.get(last, "mse"))
        self.loss.check_output_units(self._dense[-1].units)
        return self.loss

    def _ensure_built(self, n_features, name="X"):
        if not self.built:
            self.build(n_features)
        elif n_features != self.input_dim:
            raise ValueError(
                f"{name} has {n_features} features, but the model expects {self.input_dim}")

    def _trainable_segments(self):
        """The flat ranges [start, stop) of the trainable layers' parameters, merged
        where adjacent; the spec's trainable column follows the layers' flags, and a
        frozen layer's gradient is zero (never computed in training)."""
        segments = []
        for i, layer in enumerate(self._dense):
            trainable = bool(layer.trainable)
            self._spec[i, core().SPEC["trainable"]] = trainable
            lo = self._spec[i, core().SPEC["weight_offset"]]
            hi = self._spec[i, core().SPEC["bias_offset"]] + layer.units
            if not trainable:
                self.flat_grads[lo:hi] = 0
            elif segments and segments[-1][1] == lo:
                segments[-1][1] = hi
            else:
                segments.append([lo, hi])
        return np.array(segments, dtype=np.intp).reshape(-1, 2)

    def _sums(self):
        return [skip != -2 for skip in self._flatten()[2]]

    def _keep_z(self):
        return [layer.activation == "gelu" for layer in self._dense]

    def _widths(self):
        return [layer.units for layer in self._dense]

    def _workspace(self, rows, training):
        attr = "_train_ws" if training else "_infer_ws"
        ws = getattr(self, attr)
        if ws is None or ws.capacity < rows:
            ws = _Workspace(self.input_dim, self._widths(), rows, self.dtype, training,
                            self._keep_z(), self._sums())
            setattr(self, attr, ws)
        return ws

    @property
    def n_outputs(self):
        return self._dense[-1].units

    # -- input checks -------------------------------------------------------------
    def _check_X(self, X, name="X"):
        X = val.as_float_matrix(X, self.dtype, name=name)
        self._ensure_built(X.shape[1], name)
        return X

    def _check_Xy(self, X, y, names=("X", "y"), finite=True):
        # Everything is checked before the model is built from X's width, so that a
        # call rejected for its y leaves an unbuilt model unbuilt. finite=False skips
        # the scan for NaN and infinity (fit finds them through the loss instead).
        X = val.as_float_matrix(X, self.dtype, name=names[0], finite=finite)
        loss = self._resolve_loss()
        kind, targets, labels = loss.prepare_targets(y, self.n_outputs, self.dtype, names[1],
                                                     finite)
        val.check_same_length(X, labels if labels.size else targets, names)
        if labels.size:
            targets = np.empty((0, self.n_outputs), dtype=self.dtype)
        self._ensure_built(X.shape[1], names[0])
        return X, kind, targets, labels

    # -- training -----------------------------------------------------------------
    def fit(self, X, y, epochs=10, batch_size=32, shuffle=True, validation_data=None,
            validation_split=0.0, callbacks=None, verbose=0, tol=None, n_iter_no_change=10,
            sample_weight=None, class_weight=None):
        """Train by minibatch gradient descent, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like
            Targets: for mse, shape (n_samples,) or (n_samples, n_outputs); for
            cross_entropy, integer class labels of shape (n_samples,) or class
            probabilities of shape (n_samples, n_classes); for binary_cross_entropy,
            values in [0, 1] of shape (n_samples,) or (n_samples, n_outputs).
        epochs : int, default 10
            Passes over the data.
        batch_size : int, default 32
            Samples per minibatch; the last minibatch of an epoch may be smaller.
            ``batch_size=1`` is stochastic gradient descent, ``batch_size >=
            n_samples`` full-batch gradient descent.
        shuffle : bool, default True
            Reshuffle the samples before each epoch (from the model seed).
        validation_data : (X_val, y_val), optional
            Evaluated after each epoch: "val_loss", and "val_accuracy" for
            classification or "val_mae" and "val_r2" for regression (the History's
            "loss", "accuracy", "mae" and "r2" are running values over the epoch's
            minibatches, as the weights change).
        validation_split : float, default 0
            Instead of validation_data: hold out this fraction of (X, y), drawn at
            random from the model seed, stratified by class for classification.
        callbacks : list of fastbp.callbacks.Callback, optional
            EarlyStopping, ModelCheckpoint, LearningRateScheduler, ... .
        verbose : {0, 1, 2}, default 0
            0 silent; 1 a progress bar (tqdm when installed); 2 one line per epoch.
        tol : float, optional
            With ``n_iter_no_change``: stop when the loss (the validation loss when
            there is validation data) has not improved by at least ``tol`` for that
            many epochs in a row, as scikit-learn's MLP does. None: never.
        n_iter_no_change : int, default 10
        sample_weight : array-like of shape (n_samples,), optional
            Weights >= 0 of the samples in the training loss: each minibatch's loss
            is the weighted mean sum(w_i loss_i) / sum(w_i) (validation metrics are
            not weighted).
        class_weight : dict or "balanced", optional
            For classification with class labels: a weight per class (missing
            classes weigh 1), or "balanced" (n_samples / (n_classes * count)), as
            scikit-learn defines it; multiplies sample_weight.

        Returns
        -------
        History
            The model's history (``model.history``), extended by this call.

        Notes
        -----
        Ctrl-C stops training at the end of the run of minibatches in progress (a
        few milliseconds): the weights keep every completed update, the History keeps
        the completed epochs, and fit returns after a warning.

        Raises
        ------
        ValueError
            For bad input, among others NaN or infinity in X or y (found when a
            minibatch holding them makes the loss non-finite; the weights and
            optimizer state are then restored to the start of that epoch).
        FloatingPointError
            When the training loss or the weights become NaN or infinite; the weights
            and optimizer state are restored to the start of that epoch.
        """
        epochs = val.positive_int(epochs, "epochs", minimum=0)
        batch_size = val.positive_int(batch_size, "batch_size")
        callbacks = _check_callbacks(callbacks)
        if tol is not None:
            tol = val.nonnegative_float(tol, "tol")
            n_iter_no_change = val.positive_int(n_iter_no_change, "n_iter_no_change")
        split = val.fraction(validation_split, "validation_split")
        if split and validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        # NaN or infinity in X or y makes a minibatch's loss non-finite: the compiled
        # step stops there, and X and y are scanned only then, so that a clean fit
        # pays no separate pass over the data.
        X, kind, targets, labels = self._check_Xy(X, y, finite=False)
        weights = self._sample_weights(X.shape[0], kind, labels, sample_weight, class_weight)
        val_data = None
        if validation_data is not None:
            try:
                X_val, y_val = validation_data
            except (TypeError, ValueError):
                raise ValueError("validation_data must be a pair (X_val, y_val)") from None
            val_data = self._check_Xy(X_val, y_val, ("X_val", "y_val"))
        elif split:
            (X, targets, labels, weights), val_data = self._split(X, kind, targets, labels,
                                                                  weights, split)
        return self._train(X, kind, targets, labels, weights, epochs, batch_size, shuffle,
                           val_data, callbacks, verbose, tol, n_iter_no_change)

    def _sample_weights(self, n, kind, labels, sample_weight, class_weight):
        """The per-sample weights as the compiled step reads them (empty: none)."""
        weights = None
        if sample_weight is not None:
            weights = val.as_float_matrix(sample_weight, self.dtype, name="sample_weight",
                                          allow_1d=True)
            if weights.shape[1] != 1 or np.ndim(sample_weight) != 1:
                raise ValueError(f"sample_weight must be 1-D, got shape {np.shape(sample_weight)}")
            weights = np.ascontiguousarray(weights[:, 0])
            if weights.shape[0] != n:
                raise ValueError(f"sample_weight has {weights.shape[0]} entries for {n} samples")
            if weights.min() < 0 or weights.max() == 0:
                raise ValueError("sample_weight must be >= 0 and not all zero")
        if class_weight is not None:
            if kind != LOSS_CE_LABELS:
                raise ValueError("class_weight needs cross_entropy with class labels")
            k = self.n_outputs
            if isinstance(class_weight, str):
                if class_weight != "balanced":
                    raise ValueError(f"class_weight must be a dict or 'balanced', got {class_weight!r}")
                counts = np.bincount(labels, minlength=k).astype(np.float64)
                per_class = np.where(counts > 0, n / (np.count_nonzero(counts) * np.maximum(counts, 1)), 1.0)
            elif isinstance(class_weight, dict):
                per_class = np.ones(k)
                for c, w in class_weight.items():
                    if not (isinstance(c, (int, np.integer)) and 0 <= c < k):
                        raise ValueError(f"class_weight has a key {c!r} that is not a class in [0, {k})")
                    w = val.nonnegative_float(w, f"class_weight[{c}]")
                    per_class[c] = w
            else:
                raise TypeError(f"class_weight must be a dict or 'balanced', got {class_weight!r}")
            weights = per_class[labels].astype(self.dtype) * (weights if weights is not None else 1)
            if weights.max() == 0:
                raise ValueError("class_weight gives every sample weight 0")
        return np.ascontiguousarray(weights) if weights is not None else np.empty(0, self.dtype)

    def partial_fit(self, X, y, classes=None, batch_size=32, shuffle=True):
        """One more epoch on (X, y), continuing from the current weights and
        optimizer state (online learning).

        For cross-entropy with class labels, the first call takes ``classes``, the
        full list of classes the model will ever see (the integers 0 to
        n_outputs - 1), so that a first batch lacking some classes is no surprise.
        """
        loss = self._resolve_loss()
        if classes is not None or (loss.name == "cross_entropy" and np.ndim(y) == 1
                                   and not self._classes_seen):
            if loss.name != "cross_entropy":
                raise ValueError(f"classes applies to cross_entropy, not {loss.name}")
            if classes is None:
                raise ValueError("the first partial_fit of a classifier needs classes="
                                 " (all class labels, 0 to n_outputs - 1)")
            classes = np.asarray(classes)
            if classes.ndim != 1 or classes.dtype.kind not in "iu" or \
                    sorted(classes.tolist()) != list(range(self.n_outputs)):
                raise ValueError(f"classes must be the labels 0 to {self.n_outputs - 1} (one per"
                                 f" output unit), got {classes.tolist()}")
            self._classes_seen = True
        return self.fit(X, y, epochs=1, batch_size=batch_size, shuffle=shuffle)

    def _split(self, X, kind, targets, labels, weights, fraction):
        """Split checked arrays into training and validation parts (``fraction`` of
        the rows, stratified by class for classification)."""
        n = X.shape[0]
        strata = None
        if kind == LOSS_CE_LABELS:
            strata = labels
        elif self.loss.is_classifier:
            strata = targets.argmax(axis=1) if kind != LOSS_BCE or targets.shape[1] > 1 \
                else (targets[:, 0] >= 0.5).astype(np.intp)
        if strata is None:
            held = self._rng.permutation(n)[:int(round(n * fraction))]
        else:
            held = np.concatenate([
                self._rng.permutation(np.flatnonzero(strata == c))[
                    :int(round(np.count_nonzero(strata == c) * fraction))]
                for c in np.unique(strata)])
        if held.size == 0 or held.size == n:
            raise ValueError(f"validation_split={fraction} of {n} samples leaves an empty"
                             " training or validation set")
        keep = np.ones(n, dtype=bool)
        keep[held] = False
        held.sort()
        pick = (lambda a, rows: a[rows] if a.size else a)
        X_val, t_val, l_val = X[held], pick(targets, held), pick(labels, held)
        val.check_finite(X_val, "X")
        val.check_finite(t_val, "y")
        return ((X[keep], pick(targets, keep), pick(labels, keep), pick(weights, keep)),
                (X_val, kind, t_val, l_val))

    def _train(self, X, kind, targets, labels, weights, epochs, batch_size, shuffle, val_data,
               callbacks, verbose, tol, n_iter_no_change):
        n = X.shape[0]
        batch = min(batch_size, n)
        n_batches = -(-n // batch)
        ws = self._workspace(batch, training=True)
        state = self.optimizer.flat_state(self.flat_params.size, self.dtype)
        segments = self._trainable_segments()
        order = np.arange(n, dtype=np.intp) if shuffle else np.empty(0, dtype=np.intp)
        batch_stats = np.zeros((n_batches, 3))  # loss, sum |residual|, sum residual^2
        batch_loss = batch_stats[:, 0]
        batch_correct = np.zeros(n_batches, dtype=np.intp)
        batch_rows = np.full(n_batches, batch, dtype=np.float64)
        batch_rows[-1] = n - batch * (n_batches - 1)
        per_sample = targets.shape[1] if kind == LOSS_BCE else 1  # predictions per sample
        with np.errstate(invalid="ignore", over="ignore"):  # bad y fails in the step
            total_squares = (0.0 if self.loss.is_classifier else float(
                ((targets - targets.mean(axis=0, dtype=np.float64)) ** 2).sum()))
        train_run = core().train_run
        flops_per_step = 6 * self.flat_params.size * batch
        step_threads, blas_threads = _threads.plan(flops_per_step, self.threads)
        # Minibatches per compiled call: enough work to make the Python between
        # calls (callbacks, Ctrl-C, progress) negligible, little enough to answer
        # Ctrl-C within milliseconds.
        chunk = max(1, int(CHUNK_FLOPS // flops_per_step))
        # Start-of-epoch copies, restored if training diverges.
        saved = [np.empty_like(a) for a in (self.flat_params, state)]
        progress = _progress.make(verbose, epochs, n_batches, self._epochs_done)
        self.stop_training = False
        for callback in callbacks:
            callback.set_model(self)
            callback.on_train_begin({})
        best, stale = np.inf, 0
        interrupted = None
        try:
            with _threads.blas_limited(blas_threads), _interrupt.requests() as stop_requested:
                for _ in range(epochs):
                    epoch, started = self._epochs_done, time.perf_counter()
                    for callback in callbacks:
                        callback.on_epoch_begin(epoch, {})
                    hyper = self.optimizer.hyperparameters()  # a callback may change lr
                    for copy, live in zip(saved, (self.flat_params, state)):
                        np.copyto(copy, live)
                    saved_step = self.optimizer.iterations
                    if shuffle:
                        self._rng.shuffle(order)
                    done = 0
                    while done < n_batches:
                        status, ran, step = train_run(
                            self.flat_params, self.flat_grads, ws.buffer, ws.labels, X,
                            targets, labels, order, batch, done, min(n_batches, done + chunk),
                            self._spec, self._act_param, ws.layout, self._reg, self._dropout,
                            self._dropout_seed, kind, self.loss.param, weights, ws.weights,
                            self.optimizer.code,
                            hyper, state, segments, self.optimizer.iterations, batch_stats,
                            batch_correct, step_threads)
                        self.optimizer.iterations = step
                        done += ran
                        if status != core().STATUS_OK:
                            break
                        progress.batches(ran)
                        for callback in callbacks:
                            callback.on_batch_chunk_end(done, {"batch": done})
                        if stop_requested():
                            interrupted = (epoch, done)
                            break
                    if status != core().STATUS_OK or not val.all_finite(self.flat_params):
                        for copy, live in zip(saved, (self.flat_params, state)):
                            np.copyto(live, copy)
                        self.optimizer.iterations = saved_step
                        val.check_finite(X, "X")
                        val.check_finite(targets, "y")
                        what = (f"the training loss became {batch_loss[done]} at minibatch {done}"
                                if status != core().STATUS_OK
                                else "the weights became NaN or infinite")
                        raise FloatingPointError(
                            f"training diverged in epoch {epoch}: {what}. The weights and"
                            f" optimizer state are restored to the start of that epoch. Try a"
                            f" smaller learning rate (now {self.optimizer.lr}) or scale the"
                            " inputs.")
                    if interrupted:
                        break
                    # Frozen layers' penalties are constants the step does not compute.
                    metrics = {"loss": float(batch_loss @ batch_rows) / n + sum(
                        layer.penalty() for layer in self._dense if not layer.trainable)}
                    if self.loss.is_classifier:
                        metrics["accuracy"] = batch_correct.sum() / (n * per_sample)
                    else:  # running values over the epoch's minibatches, as the loss
                        metrics["mae"] = batch_stats[:, 1].sum() / targets.size
                        metrics["r2"] = (1 - batch_stats[:, 2].sum() / total_squares
                                         if total_squares > 0 else 0.0)
                    if val_data is not None:
                        for key, value in self._evaluate_checked(*val_data).items():
                            metrics["val_" + key] = value
                    for callback in callbacks:
                        callback.on_epoch_end(epoch, metrics)
                    self.history._append(epoch, metrics)
                    self._epochs_done += 1
                    progress.epoch_end(epoch, metrics, time.perf_counter() - started)
                    if tol is not None:
                        current = metrics["val_loss" if val_data is not None else "loss"]
                        stale = stale + 1 if current > best - tol else 0
                        best = min(best, current)
                        if stale >= n_iter_no_change:
                            self.stop_training = True
                    if self.stop_training:
                        break
        finally:
            progress.close()
        for callback in callbacks:
            callback.on_train_end({})
        if interrupted:
            warnings.warn(f"training interrupted (Ctrl-C) in epoch {interrupted[0]} after"
                          f" {interrupted[1]} of {n_batches} minibatches: the weights keep"
                          " those updates; the History holds the completed epochs",
                          stacklevel=3)
        return self.history

    # -- inference ----------------------------------------------------------------
    def predict(self, X):
        """Return the network's output for X of shape (n_samples, n_features).

        For cross_entropy, class probabilities of shape (n_samples, n_classes); for
        binary_cross_entropy, probabilities of shape (n_samples, n_outputs); for mse,
        the outputs, of shape (n_samples, n_outputs).
        """
        self._require_built()
        return self._predict_checked(self._check_X(X))

    def _predict_checked(self, X):
        n = X.shape[0]
        ws = self._workspace(min(n, INFERENCE_CHUNK), training=False)
        out = np.empty((n, self.n_outputs), dtype=self.dtype)
        core().predict_run(self.flat_params, ws.buffer, X, out, ws.capacity, self._spec,
                           self._act_param, ws.layout, self._output_act)
        return out

    def predict_classes(self, X):
        """Class predictions: the most probable class (cross_entropy) or 0/1 per output
        (binary_cross_entropy)."""
        self._require_built()
        if not self.loss.is_classifier:
            raise ValueError(f"predict_classes needs a classification loss, not {self.loss.name}")
        probabilities = self.predict(X)
        if self.loss.output_activation == "softmax":
            return probabilities.argmax(axis=1)
        return (probabilities > 0.5).astype(np.intp)

    def evaluate(self, X, y):
        """Return a dict of metrics on (X, y): "loss"; "accuracy" for classification;
        "mae" and "r2" (coefficient of determination) for mse."""
        self._require_built()
        return self._evaluate_checked(*self._check_Xy(X, y))

    def _evaluate_checked(self, X, kind, targets, labels):
        n = X.shape[0]
        ws = self._workspace(min(n, INFERENCE_CHUNK), training=False)
        loss, correct = core().evaluate_run(self.flat_params, ws.buffer, X, targets, labels,
                                            ws.capacity, self._spec, self._act_param,
                                            ws.layout, kind, self.loss.param)
        metrics = {"loss": loss + sum(layer.penalty() for layer in self._dense)}
        if self.loss.is_classifier:
            metrics["accuracy"] = correct / (n * (targets.shape[1] if kind == LOSS_BCE else 1))
        else:
            residual = self._predict_checked(X) - targets
            metrics["mae"] = float(np.abs(residual).mean())
            spread = ((targets - targets.mean(axis=0)) ** 2).sum()
            metrics["r2"] = 1.0 - float((residual ** 2).sum() / spread) if spread > 0 else 0.0
        return metrics

    def loss_and_gradients(self, X, y, training=False):
        """Return ``(loss, [(grad_weight, grad_bias), ...])`` of the mean loss over all
        of (X, y) (with the layers' penalties) in Dense layer order, without changing
        the weights.

        ``training=True`` applies dropout with the masks of the next training step
        (the same on every call until the model trains), as fit would.
        """
        X, kind, targets, labels = self._check_Xy(X, y)
        ws = _Workspace(self.input_dim, self._widths(), X.shape[0], self.dtype, training=True,
                        keep_z=self._keep_z(), sums=self._sums())
        spec = self._spec.copy()
        spec[:, core().SPEC["trainable"]] = 1  # true gradients of every layer, frozen or not
        extra = {}
        if training and self._dropout.size:
            extra = dict(dropout=self._dropout, seed=self._dropout_seed,
                         step=self.optimizer.iterations + 1)
        loss = core().loss_grad(self.flat_params, self.flat_grads, ws.buffer, X, targets,
                                labels, spec, self._act_param, ws.layout, self._reg, kind,
                                self.loss.param, **extra)
        return loss, [(layer.grad_weight.copy(), layer.grad_bias.copy()) for layer in self._dense]

    def input_gradient(self, X, y=None, output=None):
        """The gradient with respect to the inputs, by the same backward pass: a
        saliency map of how each input feature moves the loss or a prediction.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like, optional
            With targets, row i is the gradient of sample i's own loss
            (d loss_i / d x_i; the batch loss is the mean of the loss_i).
        output : int, optional
            Without targets: row i is the gradient of output ``output`` of sample i as
            ``predict`` returns it (a class probability for classifiers), default 0.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        self._require_built()
        if y is not None and output is not None:
            raise ValueError("give y (for the loss) or output (for a prediction), not both")
        if y is None:
            X = self._check_X(X)
            output = 0 if output is None else val.positive_int(output, "output", minimum=0)
            if output >= self.n_outputs:
                raise ValueError(f"output must be below {self.n_outputs}, got {output}")
            kind, targets, labels = 0, np.empty((0, self.n_outputs), self.dtype), np.empty(0, np.intp)
        else:
            X, kind, targets, labels = self._check_Xy(X, y)
            output = -1
        ws = _Workspace(self.input_dim, self._widths(), X.shape[0], self.dtype, training=True,
                        keep_z=self._keep_z(), sums=self._sums())
        spec = self._spec.copy()
        spec[:, core().SPEC["trainable"]] = 1
        gradient = np.empty_like(X)
        core().input_gradient_run(self.flat_params, ws.buffer, X, targets, labels, gradient,
                                  spec, self._act_param, ws.layout, kind, self.loss.param,
                                  output, self._output_act)
        return gradient

    # -- weights ------------------------------------------------------------------
    def get_weights(self):
        """Return copies of the weights: a list of (weight, bias) in layer order."""
        self._require_built()
        return [(layer.weight.copy(), layer.bias.copy()) for layer in self._dense]

    def set_weights(self, weights):
        """Set the weights from a list of (weight, bias) pairs in layer order, shaped
        (n_inputs, units) and (units,). Builds the model if needed."""
        weights = list(weights)
        dense = self._dense
        if len(weights) != len(dense):
            raise ValueError(f"got {len(weights)} (weight, bias) pairs for {len(dense)} layers")
        pairs = []
        for i, pair in enumerate(weights):
            try:
                w, b = pair
            except (TypeError, ValueError):
                raise ValueError(f"entry {i} must be a (weight, bias) pair") from None
            w = val.as_float_matrix(w, self.dtype, name=f"weight {i}")
            b = np.asarray(b)
            if b.ndim != 1:
                raise ValueError(f"bias {i} must be 1-D, got shape {b.shape}")
            b = val.as_float_matrix(b, self.dtype, name=f"bias {i}", allow_1d=True)[:, 0]
            pairs.append((w, b))
        if not self.built:
            self.build(pairs[0][0].shape[0])
        for i, (layer, (w, b)) in enumerate(zip(dense, pairs)):
            if w.shape != layer.weight.shape or b.shape != layer.bias.shape:
                raise ValueError(
                    f"layer {i} expects weight {layer.weight.shape} and bias {layer.bias.shape},"
                    f" got {w.shape} and {b.shape}"
                )
        for layer, (w, b) in zip(dense, pairs):
            layer.weight[...] = w
            layer.bias[...] = b

    # -- persistence --------------------------------------------------------------
    def save(self, path):
        """Save architecture, weights, optimizer state, random state and history to
        ``path`` (a ``.npz`` file; see ``fastbp.persistence`` for the format).
        Returns the path written. Load with ``fastbp.load(path)``."""
        from .persistence import save

        return save(self, path)

    def get_config(self):
        """The model as JSON-compatible values (weights excluded)."""
        self._require_built()
        return {
            "layers": [{"class": type(layer).__name__, "config": layer.get_config(),
                        "trainable": bool(layer.trainable)} for layer in self.layers],
            "loss": self.loss.name,
            "loss_config": self.loss.get_config(),
            "optimizer": {"class": type(self.optimizer).__name__,
                          "config": self.optimizer.get_config(),
                          "iterations": self.optimizer.iterations},
            "dtype": np.dtype(self.dtype).name,
            "seed": self.seed,
            "threads": self.threads,
            "input_dim": self.input_dim,
            "rng_state": self._rng.bit_generator.state,
            "dropout_seed": self._dropout_seed,
            "history": {"epoch": self.history.epoch, "history": self.history.history},
            "epochs_done": self._epochs_done,
        }

    @classmethod
    def from_config(cls, config):
        """A built model (fresh weights) from ``get_config()``'s output."""
        def make(entry, inside=False):
            kinds = {"Dense": Dense, "Dropout": Dropout, "Residual": Residual}
            if entry.get("class") not in kinds or (inside and entry["class"] == "Residual"):
                raise ValueError(f"unknown layer class {entry.get('class')!r}")
            if entry["class"] == "Residual":
                layer = Residual([make(inner, True) for inner in entry["config"]["layers"]])
            else:
                layer = kinds[entry["class"]](**entry["config"])
                layer.trainable = bool(entry.get("trainable", True))
            return layer

        layers = [make(entry) for entry in config["layers"]]
        opt = config["optimizer"]
        by_class = {klass.__name__: klass for klass in OPTIMIZERS.values()}
        if opt.get("class") not in by_class:
            raise ValueError(f"unknown optimizer class {opt.get('class')!r}")
        from .losses import LOSSES

        if config["loss"] not in LOSSES:
            raise ValueError(f"unknown loss {config['loss']!r}")
        loss = LOSSES[config["loss"]](**config.get("loss_config", {}))
        model = cls(layers, loss=loss, optimizer=by_class[opt["class"]](**opt["config"]),
                    seed=config["seed"], dtype=config["dtype"], threads=config["threads"])
        model.build(val.positive_int(config["input_dim"], "input_dim"))
        return model

    def _restore(self, params, state, config):
        """Set weights, optimizer state, random state and history saved by ``save``."""
        if params.dtype != self.dtype or params.shape != self.flat_params.shape:
            raise ValueError(f"params of {params.dtype} {params.shape} do not fit the"
                             f" architecture ({np.dtype(self.dtype).name} {self.flat_params.shape})")
        if not val.all_finite(params):
            raise ValueError("params hold NaN or infinity")
        live = self.optimizer.flat_state(self.flat_params.size, self.dtype)
        if state.dtype != self.dtype or state.shape != live.shape:
            raise ValueError(f"optimizer state of shape {state.shape} does not fit the"
                             f" optimizer (shape {live.shape})")
        np.copyto(self.flat_params, params)
        np.copyto(live, state)
        self.optimizer.iterations = val.positive_int(config["optimizer"]["iterations"],
                                                     "iterations", minimum=0)
        self._rng.bit_generator.state = config["rng_state"]
        self._dropout_seed = val.positive_int(config["dropout_seed"], "dropout_seed", minimum=0)
        history = config["history"]
        self.history.epoch = [int(e) for e in history["epoch"]]
        self.history.history = {str(k): [float(v) for v in values]
                                for k, values in history["history"].items()}
        self._epochs_done = val.positive_int(config["epochs_done"], "epochs_done", minimum=0)

    def count_params(self):
        self._require_built()
        return int(self.flat_params.size)

    def summary(self):
        """Return a text table of the layers, their output shapes and parameter counts."""
        self._require_built()
        lines = [f"{'layer':<40}{'output':>12}{'params':>12}"]
        def rows(layers, indent):
            for layer in layers:
                if isinstance(layer, Residual):
                    lines.append(f"{indent}Residual: x + f(x), f =")
                    rows(layer.layers, indent + "  ")
                elif isinstance(layer, Dense):
                    lines.append(f"{indent + repr(layer):<40}{layer.units:>12}"
                                 f"{layer.weight.size + layer.bias.size:>12}")
                else:
                    lines.append(f"{indent + repr(layer):<40}{'':>12}{0:>12}")

        rows(self.layers, "")
        lines.append(f"total parameters: {self.count_params()}; loss: {self.loss.name};"
                     f" optimizer: {self.optimizer!r}; dtype: {np.dtype(self.dtype).name}")
        return "\n".join(lines)

    def _require_built(self):
        if not self.built:
            raise RuntimeError("the model has no weights yet: call fit first, or give input_dim")

    def __repr__(self):
        return (f"Sequential({self.layers!r}, loss={getattr(self.loss, 'name', None)!r},"
                f" optimizer={self.optimizer!r})")
