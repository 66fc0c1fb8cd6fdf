"""The Sequential model: a facade over the parts that each do one job.

The network plan (``fastbp.network``) holds the layers' flat buffers and the compiled
plan; the trainer (``fastbp.trainer``) runs the fit loop and the two halves of a
step; ``fastbp.data`` checks and prepares the data; ``fastbp.inference`` predicts,
evaluates and computes gradients for analysis; ``fastbp.persistence`` saves, loads,
pickles and copies; the guard (``fastbp._guard``) orders the threads that read and
write the weights. The model owns all of their state: copies and pickles are
independent models.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _summary, _threads, inference, persistence, trainer
from . import _validation as val
from . import data as fitdata
from ._guard import Guard
from .callbacks import Callback, History
from .layers import Dense, Dropout, Layer, Residual
from .losses import Loss, get_loss
from .network import Network
from .optimizers import Optimizer, OptimizerState, get_optimizer
from .trainer import Trainer

FloatArray = NDArray[np.floating[Any]]


class Sequential:
    """A feedforward network: a stack of layers trained by backpropagation.

    Parameters
    ----------
    layers : list of Layer
        The layers, input side first. The last layer's width is the output size.
    loss : str or Loss, optional
        "mse", "cross_entropy" or "binary_cross_entropy", ..., or a Loss instance. By
        default: cross_entropy when the last activation is softmax,
        binary_cross_entropy when it is sigmoid, mse otherwise.
    optimizer : str or Optimizer, default "adam"
        A name (default hyperparameters) or an Optimizer instance. The instance is
        configuration: the state (moments, step count) is this model's own
        (``optimizer_state``), so one instance may configure several models.
    seed : int >= 0, optional
        Seeds the initial weights and the shuffling: the same seed, data and thread
        count give bit-identical weights.
    dtype : {"float32", "float64"}, default "float32"
    input_dim : int, optional
        Number of input features: with it the weights are created now, without it at
        the first ``fit`` (or ``set_weights``).
    threads : int, optional
        Threads for training, from 1 to 1024 (``fastbp._threads.MAX_THREADS``). By
        default as many as BLAS uses now (``threadpoolctl.threadpool_limits`` or
        ``OMP_NUM_THREADS``).

    Notes
    -----
    All parameters live in one contiguous buffer (``flat_params``); each layer's
    ``weight`` and ``bias`` are views into it (write into them, never replace them).
    A layer belongs to one model at a time: a built layer given to a new model moves
    there, weights and all, when the new model is built, and the model it came from
    then raises RuntimeError when used. ``copy.copy``, ``copy.deepcopy`` and pickle
    give independent models with layers of their own. Concurrent ``predict``,
    ``evaluate`` and ``input_gradient`` calls from several threads are safe (each
    thread has its own workspace). A final softmax before cross-entropy (sigmoid
    before binary cross-entropy, exponential before Poisson) is fused into the loss:
    training works on the logits, ``predict`` returns probabilities (rates).
    """

    #: What a front end did to the data before this model saw it (the command line:
    #: feature names, their standardization, the target and its class names;
    #: ``fastbp._pipeline``), as JSON-compatible values checked by the file schema;
    #: saved and loaded with the model, never used by it. None: nothing.
    preprocessing: dict[str, Any] | None = None

    def __init__(
        self,
        layers: Sequence[Layer] | None = None,
        loss: str | Loss | None = None,
        optimizer: str | Optimizer | type[Optimizer] = "adam",
        seed: int | None = None,
        dtype: DTypeLike = "float32",
        input_dim: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.layers = []
        for layer in layers or []:
            self.add(layer)
        self.optimizer = optimizer
        self.dtype = val.float_dtype(dtype)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"seed must be an integer >= 0 or None, got {seed!r}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be an integer >= 0 or None, got {seed}")
        self.seed = seed
        self.threads = (
            None
            if threads is None
            else val.positive_int(threads, "threads", maximum=_threads.MAX_THREADS)
        )
        self.loss = get_loss(loss) if loss is not None else None
        self._rng = np.random.default_rng(seed)
        self._init_parts()
        if input_dim is not None:
            self.build(val.positive_int(input_dim, "input_dim"))

    def _init_parts(self):
        self.history = History()
        self.stop_training = False
        self._optimizer_state = None
        self._epochs_done = 0
        self._split_key = None  # validation_split's generator (see _split)
        self._classes_seen = False
        self._init_runtime()

    def _init_runtime(self):
        # What a copy or pickle does not carry: rebuilt around the model's state.
        self._network = None
        self._guard = Guard()
        self._trainer = Trainer(self)
        self._run = None  # the fit in progress (fastbp.trainer.Trainer.fit)

    def add(self, layer: Layer) -> None:
        """Append a layer (before the model is built)."""
        if getattr(self, "_network", None) is not None:
            raise RuntimeError("cannot add layers to a model that is already built")
        if not isinstance(layer, Layer):
            raise TypeError(f"layers must be Layer instances, got {type(layer).__name__}")
        if not isinstance(layer, (Dense, Dropout, Residual)):
            raise TypeError(
                f"Sequential supports Dense, Dropout and Residual layers, got"
                f" {type(layer).__name__}"
            )
        if any(layer is other for other in self.layers):
            raise ValueError("the same layer instance appears twice in the model")
        self.layers.append(layer)

    # -- the parts ----------------------------------------------------------------
    @property
    def optimizer(self) -> Optimizer:
        """The update rule (configuration only: the state is ``optimizer_state``)."""
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: str | Optimizer | type[Optimizer]) -> None:
        optimizer = get_optimizer(optimizer)
        if optimizer is not getattr(self, "_optimizer", None):
            self._optimizer_state = None  # a new optimizer starts a new state
        self._optimizer = optimizer
        self._optimizer._serves_models = True

    def build(self, input_dim: int) -> Sequential:
        """Create the weights for ``input_dim`` input features."""
        self._resolve_loss()
        with self._guard.writing():
            self._network = Network(self.layers, self.loss, input_dim, self.dtype, self._rng)
        return self

    @property
    def built(self) -> bool:
        return self._network is not None

    @property
    def input_dim(self) -> int | None:
        return self._network.input_dim if self.built else None

    @property
    def flat_params(self) -> FloatArray | None:
        """The flat parameter buffer (every layer's weight then bias, in order)."""
        return self._network.params if self.built else None

    @property
    def flat_grads(self) -> FloatArray | None:
        return self._network.grads if self.built else None

    @property
    def n_outputs(self) -> int:
        return _dense_layers(self.layers)[-1].units

    @property
    def optimizer_state(self) -> OptimizerState:
        """The model's optimizer state (moments by name, step count), created for the
        current optimizer and flat buffer; a new optimizer starts a new state."""
        self._require_built()
        state = self._optimizer_state
        if (
            state is None
            or state.names != self.optimizer.state_names()
            or state.rows.shape[1] != self._network.params.size
        ):
            state = self._optimizer_state = self.optimizer.new_state(
                self._network.params.size, self.dtype
            )
        return state

    def _resolve_loss(self):
        """Fix the loss (inferred from the last activation when not given) and check
        that the output layer suits it."""
        dense = [layer for layer in _dense_layers(self.layers)]
        if not dense:
            raise ValueError("the model has no Dense layers")
        if self.loss is None:
            self.loss = get_loss(
                {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy"}.get(
                    dense[-1].activation, "mse"
                )
            )
        self.loss.check_output_units(dense[-1].units)
        self.loss.check_output_activation(dense[-1].activation)
        return self.loss

    def _require_built(self):
        if self._network is None:
            raise RuntimeError("the model has no weights yet: call fit first, or give input_dim")
        if self._network.lost:
            raise RuntimeError(f"this model can no longer be used: {self._network.lost}")

    def _data(self, X, y, names=("X", "y"), finite=True):
        """Check (X, y) before building from X's width, so that a call rejected for its
        y leaves an unbuilt model unbuilt."""
        loss = self._resolve_loss()
        data = fitdata.prepare(
            X, y, loss, _dense_layers(self.layers)[-1].units, self.dtype, names, finite
        )
        self._ensure_built(data.X.shape[1], names[0])
        return data

    def _check_X(self, X, name="X", finite=True, allow_empty=False):
        X = fitdata.inputs(X, self.dtype, name, finite, allow_empty)
        self._ensure_built(X.shape[1], name)
        return X

    def _ensure_built(self, n_features, name="X"):
        if self._network is None:
            self.build(n_features)
        elif n_features != self.input_dim:
            raise ValueError(
                f"{name} has {n_features} features, but the model expects {self.input_dim}"
            )
        self._require_built()

    # -- training -----------------------------------------------------------------
    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        epochs: int = 10,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        validation_split: float = 0.0,
        callbacks: Sequence[Callback] | None = None,
        verbose: int = 0,
        tol: float | None = None,
        n_iter_no_change: int = 10,
        sample_weight: ArrayLike | None = None,
        class_weight: dict[int, float] | str | None = None,
        comm: Any = None,
        shard: str = "global",
        check_replicas: bool = False,
    ) -> History:
        """Train by minibatch gradient descent, continuing from the current weights.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like
            Targets: for mse, shape (n_samples,) or (n_samples, n_outputs); for
            cross_entropy, integer class labels of shape (n_samples,) or class
            probabilities of shape (n_samples, n_classes), each row summing to 1
            (not (n_samples, 1): labels are 1-D); for binary_cross_entropy,
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
            random from the model seed, stratified by class for classification. Every
            fit call on the same model holds out the same rows of the same data, so
            a second call never validates on rows the first trained on.
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
            is the weighted mean sum(w_i loss_i) / sum(w_i), and so is the epoch's
            "loss" (validation metrics are not weighted). A minibatch whose weights
            are all zero has nothing to learn from and is skipped: no update and no
            optimizer step, as a PyTorch loop that skips it before
            ``optimizer.step()``. A fit whose training samples all weigh zero
            (after class_weight and validation_split) raises ValueError.
        class_weight : dict or "balanced", optional
            For classification with class labels: a weight per class label (an
            integer 0 to n_outputs - 1; missing classes weigh 1), or "balanced"
            (n_samples / (n_classes * count)), as scikit-learn defines it;
            multiplies sample_weight.
        comm : mpi4py communicator, optional
            Data-parallel training over MPI (``fastbp.distributed``): every rank of
            ``comm`` calls fit with the same model, settings and data (``shard=
            "global"``) or with its own rows (``shard="local"``); each computes the
            gradient of its share of every global minibatch of ``batch_size`` rows,
            and one ``Allreduce`` per step makes the update identical on all ranks.
        shard : {"global", "local"}, default "global"
            With ``comm``: every rank passes the full data ("global": the same
            result as one process, to rounding), or only its own rows ("local").
        check_replicas : bool, default False
            With ``comm``: compare a checksum of the weights across ranks after
            every epoch and raise if they differ (debugging).

        Returns
        -------
        History
            The model's history (``model.history``), extended by this call.

        Notes
        -----
        One fit runs at a time on a model: a second from another thread raises
        RuntimeError. Other threads may predict and evaluate meanwhile: they wait for
        the run of minibatches in progress (a few milliseconds) and see whole
        weights, never half-updated ones.

        Ctrl-C stops training at the end of the run of minibatches in progress (a
        few milliseconds): the weights keep every completed update (and
        ``optimizer_state.step`` counts them), the History keeps the completed
        epochs (an epoch whose last minibatch has run is complete, its callbacks
        run), and fit returns after a warning. An exception raised by a callback
        propagates with the same bookkeeping.

        Training diverges when a minibatch's loss or the weights become NaN or
        infinite, or when an epoch's training loss exceeds 1e4
        (``fastbp.trainer.EXPLOSION``) times the fit's reference loss: the largest of
        the loss of its first minibatch (at the weights fit started from), the loss
        at those weights on the first 256 rows, and the loss of an all-zero output
        (logits, log-rates) on the targets, so that neither a small first loss (a
        first minibatch of one typical row) nor unscaled inputs raise a false
        alarm. fit then
        restores the weights, optimizer state and History of the start of the
        latest epoch whose first minibatch's loss was finite and sane (an epoch can
        end with weights whose loss is not) and raises FloatingPointError.

        Raises
        ------
        ValueError
            For bad input, among others NaN or infinity in X or y (found when a
            minibatch holding them makes the loss non-finite; the weights and
            optimizer state are then restored to the start of that epoch).
        FloatingPointError
            When training diverges (above).
        """
        loop_args = (epochs, batch_size, shuffle, callbacks, verbose, tol, n_iter_no_change)
        loop_args += (validation_split, validation_data)

        def prepare():
            # NaN or infinity in X or y makes a minibatch's loss non-finite: the
            # compiled step stops there, and X and y are scanned only then.
            data = self._data(X, y, finite=False)
            data = fitdata.with_weights(data, self.n_outputs, sample_weight, class_weight)
            validation = None
            if validation_data is not None:
                validation = self._data(
                    *fitdata.validation_pair(validation_data), ("X_val", "y_val")
                )
            return data, validation

        if comm is not None:
            from . import distributed  # mpi4py only where it is used

            return distributed.fit(self, comm, shard, check_replicas, loop_args, prepare)
        loop = trainer.settings(*loop_args)
        with self._guard.fitting():
            data, validation = prepare()
            if loop.validation_split:
                data, validation = self._split(data, loop.validation_split)
            return self._trainer.fit(data, validation, loop)

    def _split(self, data, fraction):
        # The same rows held out on every call for the same data (a second fit must
        # not validate on rows the first trained on): the split has a generator of
        # its own, keyed once per model (copies and pickles keep the key; a model
        # loaded from a file draws a new one).
        if self._split_key is None:
            self._split_key = int(self._rng.integers(2**63))
        rng = np.random.default_rng(self._split_key)
        return fitdata.split(data, fraction, rng, self.loss.is_classifier)

    def partial_fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        classes: ArrayLike | None = None,
        batch_size: int = 32,
        shuffle: bool = True,
    ) -> History:
        """One more epoch on (X, y), continuing from the current weights and
        optimizer state (online learning).

        For cross-entropy with class labels, the first call takes ``classes``, the
        full list of classes the model will ever see (the integers 0 to
        n_outputs - 1), so that a first batch lacking some classes is no surprise;
        a model that has trained (by fit, or loaded after training) knows them.
        """
        loss = self._resolve_loss()
        first = not self._classes_seen and self._epochs_done == 0
        if classes is not None or (loss.name == "cross_entropy" and np.ndim(y) == 1 and first):
            if loss.name != "cross_entropy":
                raise ValueError(f"classes applies to cross_entropy, not {loss.name}")
            if classes is None:
                raise ValueError(
                    "the first partial_fit of a classifier needs classes="
                    " (all class labels, 0 to n_outputs - 1)"
                )
            fitdata.check_classes(classes, self.n_outputs)
            self._classes_seen = True
        return self.fit(X, y, epochs=1, batch_size=batch_size, shuffle=shuffle)

    def compute_gradients(
        self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None
    ) -> float:
        """The first half of a training step, for callers that combine gradients
        before updating (data-parallel training, full-batch optimizers): the
        gradient of the mean loss over (X, y) (one minibatch, with the trainable
        layers' penalties and the dropout masks of the next step) into
        ``flat_grads``, zero for frozen layers. Returns that loss."""
        with self._guard.fitting():
            data = self._data(X, y)
            data = fitdata.with_weights(data, self.n_outputs, sample_weight)
            with self._guard.writing():
                return float(self._trainer.gradients(data)["loss"])

    def apply_gradients(self) -> None:
        """The second half: clip ``flat_grads`` and take one optimizer step with them
        on the trainable layers (``optimizer_state.step`` counts it)."""
        self._require_built()
        with self._guard.fitting(), self._guard.writing():
            self._trainer.apply()

    # -- inference ----------------------------------------------------------------
    def predict(self, X: ArrayLike) -> FloatArray:
        """Return the network's output for X of shape (n_samples, n_features).

        For cross_entropy, class probabilities of shape (n_samples, n_classes); for
        binary_cross_entropy, probabilities of shape (n_samples, n_outputs); for
        mse, the outputs, of shape (n_samples, n_outputs). X of 0 rows gives an
        empty array of shape (0, n_outputs), as NumPy and scikit-learn do.
        """
        network = self._network
        if (
            network is not None
            and not network.lost
            and type(X) is np.ndarray
            and X.ndim == 2
            and X.shape[0]
        ):
            # Already what the kernels read (a service's one-row call): no conversion.
            out = inference.predict(network, self._guard, X)
            if out is not NotImplemented:
                return out
        self._require_built()
        X = self._check_X(X, finite=False, allow_empty=True)
        return inference.predict(self._network, self._guard, X)

    def predict_classes(self, X: ArrayLike) -> NDArray[np.intp]:
        """Class predictions: the most probable class (cross_entropy) or 0/1 per output
        (binary_cross_entropy)."""
        self._require_built()
        if not self.loss.is_classifier:
            raise ValueError(f"predict_classes needs a classification loss, not {self.loss.name}")
        probabilities = self.predict(X)
        if self.loss.output_activation == "softmax":
            return probabilities.argmax(axis=1)
        return (probabilities > 0.5).astype(np.intp)

    def evaluate(self, X: ArrayLike, y: ArrayLike) -> dict[str, float]:
        """Return a dict of metrics on (X, y): "loss"; "accuracy" for classification;
        "mae" and "r2" (coefficient of determination) for regression."""
        self._require_built()
        return inference.evaluate(self._network, self._guard, self.loss, self._data(X, y))

    def _evaluate_data(self, data):  # the trainer's validation pass
        return inference.evaluate(self._network, self._guard, self.loss, data)

    def loss_and_gradients(
        self, X: ArrayLike, y: ArrayLike, training: bool = False
    ) -> tuple[float, list[tuple[FloatArray, FloatArray]]]:
        """Return ``(loss, [(grad_weight, grad_bias), ...])`` of the mean loss over all
        of (X, y) (with the layers' penalties) in Dense layer order, without changing
        the weights or ``flat_grads``.

        ``training=True`` applies dropout with the masks of the next training step
        (the same on every call until the model trains), as fit would.
        """
        return inference.loss_and_gradients(
            self._network,
            self._guard,
            self.loss,
            self._data(X, y),
            self.optimizer_state.step,
            training,
        )

    def input_gradient(
        self, X: ArrayLike, y: ArrayLike | None = None, output: int | None = None
    ) -> FloatArray:
        """The gradient with respect to the inputs, by the same backward pass: a
        saliency map of how each input feature moves the loss or a prediction.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like, optional
            With targets, row i is the gradient of sample i's own loss
            (d loss_i / d x_i; the batch loss is the mean of the loss_i).
        output : int, optional
            Without targets: row i is the gradient of output ``output`` of sample i
            as ``predict`` returns it (a class probability for classifiers), default 0.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        self._require_built()
        if y is not None and output is not None:
            raise ValueError("give y (for the loss) or output (for a prediction), not both")
        if y is None:
            data = fitdata.without_targets(self._check_X(X), self.n_outputs)
            output = fitdata.output_index(output, self.n_outputs)
        else:
            data, output = self._data(X, y), -1
        return inference.input_gradient(self._network, self._guard, self.loss, data, output)

    # -- weights ------------------------------------------------------------------
    def get_weights(self) -> list[tuple[FloatArray, FloatArray]]:
        """Return copies of the weights: a list of (weight, bias) in layer order."""
        self._require_built()
        with self._guard.reading():
            return [(layer.weight.copy(), layer.bias.copy()) for layer in self._network.dense]

    def set_weights(self, weights: Iterable[tuple[ArrayLike, ArrayLike]]) -> None:
        """Set the weights from a list of (weight, bias) pairs in layer order, shaped
        (n_inputs, units) and (units,). Builds the model if needed."""
        dense = _dense_layers(self.layers)
        pairs = fitdata.weight_pairs(weights, len(dense), self.dtype)
        if self._network is None:
            self.build(pairs[0][0].shape[0])
        self._require_built()
        for i, (layer, (w, b)) in enumerate(zip(dense, pairs)):
            if w.shape != layer.weight.shape or b.shape != layer.bias.shape:
                raise ValueError(
                    f"layer {i} expects weight {layer.weight.shape} and bias {layer.bias.shape},"
                    f" got {w.shape} and {b.shape}"
                )
        with self._guard.writing():
            for layer, (w, b) in zip(dense, pairs):
                layer.weight[...] = w
                layer.bias[...] = b

    def count_params(self) -> int:
        self._require_built()
        return int(self._network.params.size)

    # -- persistence and copies ---------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> str:
        """Save architecture, weights, optimizer state, random state and history to
        ``path`` (a ``.npz`` file; see ``fastbp.persistence`` for the format).
        Returns the path written. Load with ``fastbp.load(path)``."""
        self._require_built()
        with self._guard.reading():
            return persistence.save(self, path)

    def to_onnx(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        input_name: str = "input",
        output_name: str = "output",
    ) -> Any:
        """Export the model as a standard ONNX graph that computes ``predict``: Gemm
        per Dense layer, its activation, residual adds and the output activation
        (opset 17, dropout omitted), written to ``path`` when given.

        The input ``input_name`` has shape (batch, n_features) with a dynamic batch
        dimension and the model's dtype; so has the output ``output_name``, of shape
        (batch, n_outputs). Returns the ``onnx.ModelProto``, checked by
        ``onnx.checker``. Needs ``pip install "fastbp[onnx]"``; see ``fastbp.onnx``.
        Raises RuntimeError for a model that is not built or cannot be used, and
        ValueError for a NaN or infinite weight.
        """
        from . import onnx as export

        return export.export(self, path, input_name=input_name, output_name=output_name)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Sequential:
        """Read a model written by ``save`` (``fastbp.load``)."""
        return persistence.load(path, cls)

    def get_config(self) -> dict[str, Any]:
        """The model as JSON-compatible values (weights excluded)."""
        self._require_built()
        return persistence.config_of(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """A built model (fresh weights) from ``get_config()``'s output."""
        return persistence.from_config(cls, config)

    def __getstate__(self):
        return persistence.pickled_state(self)

    def __setstate__(self, state):
        persistence.unpickle(self, state)

    def __copy__(self):
        # A shallow copy would share layers, and so weights: always copy deeply.
        return copy.deepcopy(self)

    # -- presentation -------------------------------------------------------------
    def summary(self) -> str:
        """Return a text table of the layers, their output shapes and parameter counts."""
        self._require_built()
        return _summary.table(self)

    def __repr__(self):
        return (
            f"Sequential({self.layers!r}, loss={getattr(self.loss, 'name', None)!r},"
            f" optimizer={self.optimizer!r})"
        )


def _dense_layers(layers):
    dense = []
    for layer in layers:
        if isinstance(layer, Dense):
            dense.append(layer)
        elif isinstance(layer, Residual):
            dense.extend(inner for inner in layer.layers if isinstance(inner, Dense))
    return dense


def load(path: str | os.PathLike[str]) -> Sequential:
    """Read a model written by ``Sequential.save``."""
    return Sequential.load(path)
