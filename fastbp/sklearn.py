"""scikit-learn's ``MLPClassifier`` and ``MLPRegressor``, trained by fastbp.

Change one line::

    from sklearn.neural_network import MLPClassifier   # before
    from fastbp.sklearn import MLPClassifier            # after

and the same parameters (names, defaults, meanings), fitted attributes and methods
give the same behaviour, trained by fastbp's compiled step. The training follows
scikit-learn's algorithm exactly: its initialization (Glorot uniform drawn from
``random_state`` in its order), its minibatch orders (drawn from the same random
stream), its loss conventions (half the squared error, log-loss summed over a
sample's outputs, half the Poisson deviance), its L2 penalty ``alpha`` (divided by
each minibatch's total sample weight), its SGD momentum (and learning-rate
schedules: the momentum carries over a change of learning rate as scikit-learn's
velocity does) and its Adam (epsilon before the bias correction), its stopping
rules (``tol``, ``n_iter_no_change``, ``early_stopping`` with the best weights
kept) and L-BFGS through SciPy. With the same ``random_state`` the weights agree
with scikit-learn's to rounding (float64), up to the summation order of BLAS.

What differs is listed in the README ("Switching from scikit-learn"). Each
estimator wraps a ``fastbp.Sequential`` (``model_``), whose weights ``coefs_`` and
``intercepts_`` are views of: writing into them (or assigning new lists) changes
the predictions, as in scikit-learn.

Requires scikit-learn (``pip install "fastbp[sklearn]"``).
"""

from __future__ import annotations

import math
import numbers
import warnings
from numbers import Real
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, is_classifier
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("fastbp.sklearn needs scikit-learn: pip install 'fastbp[sklearn]'") from exc
import scipy.optimize
from sklearn import get_config
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as _ScikitClassifier
from sklearn.neural_network import MLPRegressor as _ScikitRegressor
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import type_of_target, unique_labels
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _threads
from . import data as fitdata
from . import trainer as fittrainer
from .callbacks import Callback
from .layers import Dense, Dropout
from .losses import MAE, BinaryCrossEntropy, CrossEntropy, Huber, Poisson, SquaredError
from .model import Sequential
from .optimizers import SGD, Adam
from .regularizers import L2

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's four activations, then fastbp's others.
_ACTIVATIONS = {
    "identity": None,
    "logistic": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "elu": "elu",
    "gelu": "gelu",
    "softplus": "softplus",
}
# What scikit-learn does not offer: more activations, dropout, a dtype to train in.
_EXTRA_CONSTRAINTS = {
    "activation": [StrOptions(set(_ACTIVATIONS))],
    "dropout": [Interval(Real, 0, 1, closed="left")],
    "dtype": [None, StrOptions({"float32", "float64"})],
}
_SPARSE_FORMATS = ["csr", "csc", "coo"]
_FLOAT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: building the fastbp model, the
    stochastic solvers' epochs and stopping rules, L-BFGS, and the fitted
    attributes."""

    def __init__(
        self,
        hidden_layer_sizes,
        activation,
        solver,
        alpha,
        batch_size,
        learning_rate,
        learning_rate_init,
        power_t,
        max_iter,
        loss,
        shuffle,
        random_state,
        tol,
        verbose,
        warm_start,
        momentum,
        nesterovs_momentum,
        early_stopping,
        validation_fraction,
        beta_1,
        beta_2,
        epsilon,
        n_iter_no_change,
        max_fun,
        dropout=0.0,
        dtype=None,
    ):
        self.dropout = dropout
        self.dtype = dtype
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun

    # -- the network -------------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0 for s in sizes):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        return [int(s) for s in sizes]

    def _build(self, n_features, n_outputs, dtype):
        """A new fastbp model for this configuration and scikit-learn's initial
        weights, drawn from ``self._random_state``."""
        units = [n_features, *self._hidden_sizes(), n_outputs]
        penalty = L2(self.alpha / 2, per_sample=True) if self.alpha else None
        hidden = _ACTIVATIONS[self.activation]
        output_activation, loss = self._output()
        layers = []
        for u in units[1:-1]:
            layers.append(Dense(u, hidden, kernel_regularizer=penalty))
            if self.dropout:
                layers.append(Dropout(self.dropout))
        layers.append(Dense(n_outputs, output_activation, kernel_regularizer=penalty))
        model = Sequential(layers, loss=loss, optimizer=self._optimizer(), dtype=dtype, seed=0)
        model.build(n_features)
        # Glorot uniform, scikit-learn's factor (2 for logistic, else 6) and order:
        # each layer's weight, then its bias, in float64, then cast.
        factor = 2.0 if self.activation == "logistic" else 6.0
        weights = []
        for fan_in, fan_out in zip(units[:-1], units[1:]):
            bound = math.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            weights.append((coef.astype(dtype, copy=False), intercept.astype(dtype, copy=False)))
        model.set_weights(weights)
        if self.dropout:  # the masks' seed, drawn after the weights
            model._network.dropout_seed = int(self._random_state.randint(2**31 - 1))
        self.model_ = model
        self._bind_attributes()

    def _optimizer(self):
        if self.solver == "adam":
            return Adam(
                lr=self.learning_rate_init,
                betas=(self.beta_1, self.beta_2),
                eps=self.epsilon,
                eps_uncorrected=True,
            )
        # SGD (and a placeholder rule for lbfgs, which takes no optimizer steps).
        return SGD(
            lr=self.learning_rate_init,
            momentum=self.momentum,
            nesterov=bool(self.nesterovs_momentum and self.momentum > 0),
        )

    def _bind_attributes(self):
        """``coefs_`` and ``intercepts_`` as views of the model's weights."""
        pairs = [
            (layer.weight, layer.bias) for layer in self.model_.layers if isinstance(layer, Dense)
        ]
        self.coefs_ = [w for w, _ in pairs]
        self.intercepts_ = [b for _, b in pairs]
        self._views = (list(self.coefs_), list(self.intercepts_))

    def _sync_weights(self):
        """Where ``coefs_`` or ``intercepts_`` were replaced (or the estimator was
        unpickled), copy them into the model and bind the attributes again."""
        views = getattr(self, "_views", None)
        if (
            views is not None
            and len(self.coefs_) == len(views[0])
            and all(a is b for a, b in zip(self.coefs_, views[0]))
            and all(a is b for a, b in zip(self.intercepts_, views[1]))
        ):
            return
        self.model_.set_weights(list(zip(self.coefs_, self.intercepts_)))
        self._bind_attributes()

    def __setstate__(self, state):
        super().__setstate__(state)
        if "model_" in state:  # the pickled lists are copies: bind views again
            self._views = None
            self._sync_weights()

    # -- fit ---------------------------------------------------------------------
    def _fit(self, X, y, sample_weight=None, incremental=False, validation_data=None, comm=None):
        fitted = hasattr(self, "coefs_")
        # scikit-learn's rule: partial_fit on a fitted estimator does not validate the
        # parameters again (nor does any fit under skip_parameter_validation).
        if not (incremental and fitted) and not get_config()["skip_parameter_validation"]:
            self._validate_params()
        self._hidden_sizes()
        first_pass = not fitted or (not self.warm_start and not incremental)
        X, y = self._validate_input(X, y, incremental, reset=first_pass)
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if self.dtype is not None and X.dtype != self.dtype:
            X, y = X.astype(self.dtype), y.astype(self.dtype)
        n_samples, n_features = X.shape
        sample_weight = _sample_weights(sample_weight, n_samples, X.dtype)
        sample_weight = self._with_class_weight(sample_weight, y)
        if validation_data is not None:
            validation_data = self._validation_data(validation_data, X.dtype)
        self._random_state = self._seeded_random_state()
        if comm is not None:
            # One random stream on every rank (rank 0's): the same initial weights,
            # validation split and minibatch orders everywhere.
            state = self._random_state.get_state()
            self._random_state.set_state(comm.bcast(state, root=0))
            if self.solver == "lbfgs":
                raise ValueError("comm needs a stochastic solver ('sgd' or 'adam')")
        if first_pass:
            self._initialize(y.shape[1], n_features, X.dtype)
        else:
            self._sync_weights()
            if y.shape[1] != self.n_outputs_:
                raise ValueError(
                    f"y has {y.shape[1]} output(s) but the fitted network has"
                    f" {self.n_outputs_}: fit again without warm_start"
                )
        if self.solver == "lbfgs":
            if validation_data is not None:
                raise ValueError("validation_data needs a stochastic solver ('sgd' or 'adam')")
            self._fit_lbfgs(X, y, sample_weight)
        else:
            self._fit_stochastic(X, y, sample_weight, incremental, validation_data, comm)
        if not np.isfinite(self.model_.flat_params).all():
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may"
                " contain large values and need to be preprocessed."
            )
        return self

    def _seeded_random_state(self):
        """``check_random_state(self.random_state)``: for an integer seed, the
        estimator's own RandomState seeded again (the same stream as a new one, in a
        microsecond instead of the tenth of a millisecond a new one takes to gather
        entropy it then discards); a RandomState given is used as it is."""
        seed = self.random_state
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            own = self.__dict__.get("_own_random_state")
            if own is None:
                own = self._own_random_state = np.random.RandomState(seed)
            else:
                own.seed(seed)
            return own
        return check_random_state(seed)

    def _with_class_weight(self, sample_weight, Y):
        return sample_weight  # the classifier's class_weight multiplies in

    def _validation_data(self, validation_data, dtype):
        """fit's ``validation_data`` = (X_val, y_val), checked like X and y: the
        inputs, the targets as ``score`` takes them, and as the network's loss does."""
        try:
            X_val, y_val = validation_data
        except (TypeError, ValueError):
            raise ValueError("validation_data must be a pair (X_val, y_val)") from None
        X_val = validate_data(
            self, X_val, accept_sparse=_SPARSE_FORMATS, reset=False, dtype=(np.float64, np.float32)
        )
        return X_val.astype(dtype, copy=False), np.asarray(y_val), None

    def _initialize(self, n_outputs, n_features, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        self.n_layers_ = len(self._hidden_sizes()) + 2
        self.out_activation_ = self._out_activation_name()
        self._build(n_features, n_outputs, dtype)
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self.validation_loss_curve_ = None
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None
        for name in ("_optimizer_ready", "_lr"):
            self.__dict__.pop(name, None)

    def _training_data(self, X, Y, sample_weight):
        """The fastbp Data of (X, Y): class labels for softmax, float targets else."""
        model = self.model_
        y = self._fastbp_targets(Y)
        data = model._data(X, y)
        return fitdata.with_weights(data, model.n_outputs, sample_weight)

    def _report_factor(self):
        # scikit-learn reports half the squared error averaged over the outputs while
        # its gradient is that of the sum: the reported loss is the data term / k.
        return 1.0 / self.n_outputs_ if self._is_squared_error() else 1.0

    def _is_squared_error(self):
        return not is_classifier(self) and self.loss == "squared_error"

    def _reported_loss(self, loss, penalty):
        return (loss - penalty) * self._report_factor() + penalty

    def _fit_stochastic(self, X, Y, sample_weight, incremental, validation_data=None, comm=None):
        model = self.model_
        if not incremental or not getattr(self, "_optimizer_ready", False):
            # A new optimizer, as scikit-learn makes one: fresh state, the initial rate.
            model.optimizer = self._optimizer()
            self._lr = float(self.learning_rate_init)
            self._optimizer_ready = True
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        validation = validation_data
        if self.early_stopping and validation is None:
            stratify = Y if is_classifier(self) and self.n_outputs_ == 1 else None
            parts = train_test_split(
                X,
                Y,
                *([] if sample_weight is None else [sample_weight]),
                random_state=self._random_state,
                test_size=self.validation_fraction,
                stratify=stratify,
            )
            X, X_val, Y, Y_val = parts[:4]
            sample_weight, weight_val = parts[4:] if sample_weight is not None else (None, None)
            if X_val.shape[0] < 2:
                raise ValueError(
                    "The validation set is too small. Increase 'validation_fraction' "
                    "or the size of your dataset."
                )
            if is_classifier(self):
                Y_val = self._label_binarizer.inverse_transform(Y_val)
            validation = (X_val, Y_val, weight_val)
        n_samples = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn(
                    "Got `batch_size` less than 1 or larger than sample size. It is going"
                    " to be clipped",
                    stacklevel=3,
                )
            batch_size = int(np.clip(self.batch_size, 1, n_samples))
        orders = None
        if self.shuffle:
            rows = np.arange(n_samples, dtype=np.intp)

            def orders():
                # scikit-learn's stream: each epoch shuffles the previous order
                # (sklearn.utils.shuffle draws this permutation, slower).
                nonlocal rows
                permutation = np.arange(n_samples)
                self._random_state.shuffle(permutation)
                rows = rows[permutation]
                return rows

        data = self._training_data(X, Y, sample_weight)
        if validation is not None:
            validation = self._with_loss_data(validation)
        verbose = self.verbose and (comm is None or comm.Get_rank() == 0)
        iterations = _Iterations(self, validation, n_samples, incremental, verbose)
        self._set_lr(self._lr)
        loop_args = (1 if incremental else self.max_iter, batch_size, False, [iterations])
        loop_args += (0, None, 10, 0.0, None)
        self.n_iter_ = 0
        # early_stopping's best weights (a copy of them all: only where it is on).
        self._best_params = model.flat_params.copy() if self.early_stopping else None
        try:
            if comm is None:
                with model._guard.fitting():
                    model._trainer.fit(data, None, fittrainer.settings(*loop_args), orders)
            else:
                from . import distributed  # mpi4py only where it is used

                distributed.fit(
                    model, comm, "global", False, loop_args, lambda: (data, None), orders
                )
        except FloatingPointError as exc:
            raise ValueError(
                f"{exc} The input data may contain large values and need to be"
                " preprocessed, or learning_rate_init may be too large."
            ) from exc
        finally:
            if self.early_stopping:
                model.flat_params[...] = self._best_params
            self._best_params = None
        if not incremental and not iterations.stopped and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and"
                " the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _with_loss_data(self, validation):
        """(X_val, y_val, w_val) and the fastbp Data of the validation loss."""
        X_val, y_val, w_val = validation
        model = self.model_
        Y_val = self._encode(y_val)
        if Y_val.ndim == 1:
            Y_val = Y_val.reshape(-1, 1)
        data = model._data(
            X_val, self._fastbp_targets(Y_val.astype(model.dtype)), ("X_val", "y_val")
        )
        if self.validation_loss_curve_ is None:
            self.validation_loss_curve_ = []
        if self.validation_scores_ is None:
            self.validation_scores_ = []
        return X_val, y_val, w_val, data

    def _validation_loss(self, data):
        """The validation loss in the convention of ``loss_curve_``, without the L2
        penalty (a property of the weights, not of the data)."""
        model = self.model_
        loss = model._evaluate_data(data)["loss"] - model._network.penalty(
            total_weight=data.X.shape[0]
        )
        return loss * self._report_factor()

    def _set_lr(self, lr):
        """The learning rate of the next epochs. SGD's momentum buffer is rescaled by
        old / new so that it carries on as scikit-learn's velocity (which holds the
        learning rate it was made with) does."""
        model = self.model_
        old = model.optimizer.lr
        if lr != old:
            buffers = model.optimizer_state.buffers
            if "momentum_buffer" in buffers:
                buffers["momentum_buffer"] *= old / lr
            model.optimizer.lr = lr
        self._lr = lr

    def _fit_lbfgs(self, X, Y, sample_weight):
        model = self.model_
        params, grads = model.flat_params, model.flat_grads
        with model._guard.fitting():
            data = self._training_data(X, Y, sample_weight)
            budget = _threads.budget(model.threads)

            def loss_and_gradient(x):
                params[...] = x
                with model._guard.writing():
                    try:
                        stats = model._trainer.gradients(data, budget=budget)
                    except FloatingPointError:
                        return math.inf, np.zeros_like(x)
                value = self._reported_loss(float(stats["loss"]), float(stats["penalty"]))
                return value, grads.astype(np.float64)

            # SciPy's own algebra over the parameter vector, between the gradient
            # steps, runs on one BLAS thread, and the steps on the budget taken
            # above. With both on two threads, each pool's idle threads busy-waited
            # for the cores the other's work needed: digits fits took 4-6x as long
            # as at one thread (docs/switching/scikit-learn.md).
            with _threads.blas_limited(1):
                result = scipy.optimize.minimize(
                    loss_and_gradient,
                    params.astype(np.float64),
                    method="L-BFGS-B",
                    jac=True,
                    options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol},
                )
            params[...] = result.x
        self.n_iter_ = min(result.nit, self.max_iter)
        if result.status != 0:
            message = result.message
            message = message.decode() if isinstance(message, bytes) else message
            warnings.warn(
                f"lbfgs failed to converge after {self.n_iter_} iteration(s)"
                f" (status={result.status}):\n{message}\n\nIncrease the number of"
                " iterations to improve the convergence"
                f" (max_iter={self.max_iter}).\nYou might also want to scale the data",
                ConvergenceWarning,
                stacklevel=3,
            )
        self.loss_ = float(result.fun)

    # -- scikit-learn's stopping rules, once per epoch ------------------------------
    def _epoch_done(self, loss, validation, n_samples, verbose):
        """One epoch's bookkeeping; returns whether training stops."""
        self.n_iter_ += 1
        self.loss_ = loss
        self.t_ += n_samples
        self.loss_curve_.append(loss)
        if verbose:
            print(f"Iteration {self.n_iter_}, loss = {loss:.8f}")
        if validation is not None:
            score = self._score(*validation[:3])
            self.validation_scores_.append(score)
            self.validation_loss_curve_.append(self._validation_loss(validation[3]))
            if verbose:
                print(f"Validation score: {score:f}")
        if validation is not None and self.early_stopping:
            if score < self.best_validation_score_ + self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                np.copyto(self._best_params, self.model_.flat_params)
        else:
            if loss > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if loss < self.best_loss_:
                self.best_loss_ = loss
        if self.solver == "sgd" and self.learning_rate == "invscaling":
            self._set_lr(float(self.learning_rate_init) / (self.t_ + 1) ** self.power_t)
        if self._no_improvement_count > self.n_iter_no_change:
            subject = "Validation score" if self.early_stopping else "Training loss"
            message = (
                f"{subject} did not improve more than tol={self.tol:f} for"
                f" {self.n_iter_no_change} consecutive epochs."
            )
            if self.solver != "sgd" or self.learning_rate != "adaptive":
                if verbose:
                    print(message + " Stopping.")
                return True
            if self._lr <= 1e-6:
                if verbose:
                    print(message + " Learning rate too small. Stopping.")
                return True
            self._set_lr(self._lr / 5.0)
            if verbose:
                print(message + f" Setting learning rate to {self._lr:f}")
            self._no_improvement_count = 0
        return False

    # -- prediction ----------------------------------------------------------------
    def _forward(self, X, check_input=True):
        if "model_" not in self.__dict__:  # not fitted: scikit-learn's error
            check_is_fitted(self)
        if check_input:
            X = _validated_inputs(self, X)
        self._sync_weights()
        return self.model_.predict(_model_input(X, self.model_.dtype))

    def _score_with_function(self, X, y, sample_weight, score_function):
        y_pred = self._predict(X, check_input=False)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return score_function(y, y_pred, sample_weight=sample_weight)

    def _check_solver(self):
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                f"partial_fit is only available for stochastic optimizers. {self.solver}"
                " is not stochastic."
            )
        return True

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class _Iterations(Callback):
    """Runs scikit-learn's per-epoch rules (loss curve, tol, early stopping,
    learning-rate schedules) at the end of each of fastbp's epochs."""

    def __init__(self, estimator, validation, n_samples, incremental, verbose):
        super().__init__()
        self.estimator, self.validation = estimator, validation
        self.n_samples, self.incremental, self.verbose = n_samples, incremental, verbose
        self.stopped = False

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        # scikit-learn's epoch loss: the minibatches' losses (weighted means with
        # their penalties) averaged by their numbers of rows.
        est, run = self.estimator, self.model._run
        rows = run.batch_rows
        penalty = float(run.stats["penalty"] @ rows) / run.n
        loss = est._reported_loss(float(run.stats["loss"] @ rows) / run.n, penalty)
        if est._epoch_done(loss, self.validation, self.n_samples, self.verbose):
            self.stopped = True
            self.model.stop_training = True


def _validated(estimator, X, y, reset, y_numeric=False):
    """``validate_data`` of (X, y) as fit checks them: X a float matrix (sparse
    accepted), y any finite targets. After fitting, plain NumPy arrays that it would
    return unchanged (the common case of partial_fit) are taken as they are, without
    its checks for data frames and their cost of a tenth of a millisecond a call;
    any other input goes through it (and its messages)."""
    if not reset and _passes_unchanged(estimator, X) and _targets_pass_unchanged(y, X):
        return X, y
    return validate_data(
        estimator,
        X,
        y,
        accept_sparse=_SPARSE_FORMATS,
        multi_output=True,
        y_numeric=y_numeric,
        dtype=(np.float64, np.float32),
        reset=reset,
    )


def _validated_inputs(estimator, X):
    """``validate_data`` of X as predict checks it, as ``_validated`` does."""
    if _passes_unchanged(estimator, X):
        return X
    return validate_data(estimator, X, accept_sparse=_SPARSE_FORMATS, reset=False)


def _passes_unchanged(estimator, X):
    """Whether ``validate_data(estimator, X, reset=False)`` would return X itself: a
    2-D float32 or float64 ndarray with rows, the fitted number of features, no
    feature names fitted, finite (scikit-learn's own first test, a sum: an
    overflowing sum of finite values sends X to the full check)."""
    return (
        type(X) is np.ndarray
        and X.ndim == 2
        and X.dtype in _FLOAT_DTYPES
        and X.shape[0] >= 1
        and X.shape[1] == getattr(estimator, "n_features_in_", None)
        and getattr(estimator, "feature_names_in_", None) is None
        and _sum_is_finite(X)
    )


def _targets_pass_unchanged(y, X):
    """Whether fit's check of y would return it itself: a 1-D or 2-D ndarray with as
    many rows as X (and columns), of integers or finite floats."""
    return (
        type(y) is np.ndarray
        and y.ndim in (1, 2)
        and y.shape[0] == X.shape[0]
        and (y.ndim == 1 or y.shape[1] >= 1)
        and (y.dtype.kind in "iu" or (y.dtype.kind == "f" and _sum_is_finite(y)))
    )


def _sum_is_finite(a):
    """scikit-learn's first test that a float array is finite: its sum (which may
    overflow, quietly, for finite values; a float64 sum of float32 values cannot)."""
    if a.dtype == np.float32:
        return math.isfinite(a.sum(dtype=np.float64))
    with np.errstate(over="ignore"):
        return math.isfinite(a.sum())


def _sample_weights(sample_weight, n_samples, dtype):
    """None, or a 1-D array of n_samples weights (a scalar applies to every sample)."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight)
    if weights.ndim == 0:
        return np.full(n_samples, weights, dtype=dtype)
    return weights


def _times(sample_weight, weights):
    return weights if sample_weight is None else sample_weight * weights


def _known_labels_indicator(binarizer, y, dtype):
    """``binarizer.transform(y)`` as ``dtype`` for a 1-D y (one batch of
    partial_fit) of integer, boolean, string or object labels that are all among the
    classes of a binarizer fitted to binary or multi-class labels: each found by
    binary search in the sorted classes, without scikit-learn's label-type
    inference, which costs milliseconds a call. None for any other y (another type,
    or a label not among the classes): the general path takes it, and rejects it
    with scikit-learn's messages."""
    classes = binarizer.classes_
    if (
        binarizer.y_type_ not in ("binary", "multiclass")
        or len(classes) < 2
        or y.ndim != 1
        or y.dtype.kind != classes.dtype.kind
        or y.dtype.kind not in "iubUO"
    ):
        return None
    try:
        codes = np.searchsorted(classes, y)
    except TypeError:  # objects that do not compare (say, strings and numbers)
        return None
    np.minimum(codes, len(classes) - 1, out=codes)  # past the last: not a class
    if not np.array_equal(classes[codes], y):
        return None
    if binarizer.y_type_ == "binary":  # one column: 1 for the second class
        return (codes == 1).astype(dtype).reshape(-1, 1)
    indicator = np.zeros((len(y), len(classes)), dtype=dtype)
    indicator[np.arange(len(y)), codes] = 1
    return indicator


def _labels_of_outputs(binarizer, outputs):
    """``binarizer.inverse_transform(outputs)`` (the inverse of
    ``_known_labels_indicator``) for a binarizer fitted to binary or multi-class
    labels, by its rules: the class of a row's first largest output, or for one
    output the second class where it exceeds the threshold (pos_label + neg_label)
    / 2, 0.5 (NaN: the first class); without its checks, which cost a few tens of
    microseconds a call. Multi-label outputs go through it."""
    classes = binarizer.classes_
    if binarizer.y_type_ == "multiclass" and outputs.ndim == 2:
        return classes[outputs.argmax(axis=1)]
    if binarizer.y_type_ == "binary" and len(classes) == 2 and outputs.ndim == 1:
        threshold = (binarizer.pos_label + binarizer.neg_label) / 2.0
        return classes[(outputs > threshold).view(np.uint8)]
    return binarizer.inverse_transform(outputs)


def _model_input(X, dtype):
    """X as the model takes it: CSR for sparse input (never densified)."""
    if hasattr(X, "tocsr"):
        return X.tocsr()
    return X


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """scikit-learn's ``MLPClassifier``, trained by fastbp.

    The parameters, fitted attributes and methods are scikit-learn's (see
    ``sklearn.neural_network.MLPClassifier``), with the same names, defaults and
    meanings; see the module for how the training follows scikit-learn's. Classes may
    be any labels (binary with one logistic output, multi-class with softmax), or a
    multi-label indicator matrix. ``model_`` is the trained ``fastbp.Sequential``.

    What scikit-learn does not offer, off by default: ``activation`` also
    "leaky_relu", "elu", "gelu" or "softplus"; ``dropout`` (a rate after each hidden
    layer); ``class_weight`` (a dict of class label to weight, or "balanced", as
    scikit-learn's other classifiers take it; multiplies ``sample_weight``);
    ``dtype`` ("float32" trains float64 input in float32, about twice as fast; None
    keeps the input's); ``fit(..., validation_data=(X_val, y_val))`` with a
    validation-loss curve (``validation_loss_curve_``).
    """

    _parameter_constraints: dict = {
        **_ScikitClassifier._parameter_constraints,
        **_EXTRA_CONSTRAINTS,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dropout=0.0,
        class_weight=None,
        dtype=None,
    ):
        self.class_weight = class_weight
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            loss="log_loss",
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            dropout=dropout,
            dtype=dtype,
        )

    def _output(self):
        if self._label_binarizer.y_type_ == "multiclass":
            return "softmax", CrossEntropy()
        return "sigmoid", BinaryCrossEntropy(reduction="sum_outputs")

    def _out_activation_name(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _fastbp_targets(self, Y):
        if self._label_binarizer.y_type_ == "multiclass":
            return np.argmax(Y, axis=1).astype(np.intp)
        return Y

    def _encode(self, y):
        return self._label_binarizer.transform(y)

    def _with_class_weight(self, sample_weight, Y):
        if self.class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            if not isinstance(self.class_weight, str):
                raise ValueError(
                    "for multi-label targets class_weight must be 'balanced' (each label's"
                    " balanced weights, multiplied)"
                )
            return _times(sample_weight, compute_sample_weight("balanced", Y).astype(Y.dtype))
        labels = self._label_binarizer.inverse_transform(Y if Y.shape[1] > 1 else Y[:, 0])
        unknown = (
            set(self.class_weight) - set(self.classes_.tolist())
            if isinstance(self.class_weight, dict)
            else set()
        )
        if unknown:
            raise ValueError(
                f"class_weight names classes {sorted(unknown, key=str)} that are not in"
                f" classes_ {self.classes_.tolist()}"
            )
        return _times(
            sample_weight, compute_sample_weight(self.class_weight, labels).astype(Y.dtype)
        )

    def _validate_input(self, X, y, incremental, reset):
        X, y = _validated(self, X, y, reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            if not self.warm_start:  # partial_fit: a batch of known labels, mostly
                indicator = _known_labels_indicator(self._label_binarizer, y, X.dtype)
                if indicator is not None:
                    return X, indicator
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in"
                        f" the previous call to fit. Previously got {self.classes_}, `y`"
                        f" has {classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has"
                    f" {self.classes_}. 'y' has {classes}."
                )
        # The indicator matrix as the model's dtype (0/1 targets; labels from it).
        return X, self._label_binarizer.transform(y).astype(X.dtype)

    def fit(self, X, y, sample_weight=None, validation_data=None, comm=None):
        """Fit the model to X (array-like or sparse matrix of shape (n_samples,
        n_features)) and y (class labels, or a multi-label indicator matrix), with
        optional sample weights (times ``class_weight``). ``validation_data=(X_val,
        y_val)`` is scored after every epoch (``validation_scores_``,
        ``validation_loss_curve_``), and with ``early_stopping`` replaces the
        held-out fraction. Returns self."""
        return self._fit(X, y, sample_weight, False, validation_data, comm)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y); ``classes`` (every class that y may hold) is
        required on the first call. Only for the stochastic solvers."""
        if _first_partial_fit(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """The predicted classes, shape (n_samples,) (or (n_samples, n_classes) for
        multi-label)."""
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward(X, check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return _labels_of_outputs(self._label_binarizer, y_pred)

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight, accuracy_score)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), in the order of
        ``classes_``."""
        y_pred = self._forward(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def predict_log_proba(self, X):
        """log(predict_proba(X))."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def to_onnx(self, path=None, *, input_name="input"):
        """Export as a standard ONNX graph (see ``fastbp.onnx``), written to ``path``
        when given; returns the ``onnx.ModelProto``. Its input ``input_name`` has shape
        (batch, n_features) and the dtype the model was trained in (``model_.dtype``);
        its outputs are "label" (what ``predict`` gives: shape (batch,), or (batch,
        n_classes) of 0/1 for multi-label) and "probabilities" (what ``predict_proba``
        gives: shape (batch, n_classes), ``[1 - p, p]`` for binary). Needs ``pip
        install "fastbp[onnx]"``."""
        from . import onnx as export

        check_is_fitted(self)
        self._sync_weights()
        return export.export_classifier(
            self.model_,
            self.classes_,
            self._label_binarizer.y_type_,
            path,
            input_name=input_name,
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _first_partial_fit(estimator, classes):
    """Whether this is the first partial_fit call (classes required then, and equal
    to the first call's later)."""
    if getattr(estimator, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        classes = unique_labels(classes)
        if getattr(estimator, "classes_", None) is not None:
            if not np.array_equal(estimator.classes_, classes):
                raise ValueError(
                    f"`classes={classes!r}` is not the same as on last call to"
                    f" partial_fit, was: {estimator.classes_!r}"
                )
            return False
        return True
    return False


class MLPRegressor(RegressorMixin, _BaseMLP):
    """scikit-learn's ``MLPRegressor``, trained by fastbp.

    The parameters, fitted attributes and methods are scikit-learn's (see
    ``sklearn.neural_network.MLPRegressor``), with the same names, defaults and
    meanings, ``loss`` included ("squared_error" or "poisson"); see the module for
    how the training follows scikit-learn's. ``model_`` is the trained
    ``fastbp.Sequential``.

    What scikit-learn does not offer, off by default: ``loss`` also "huber" (delta
    1) and "absolute_error"; ``activation`` also "leaky_relu", "elu", "gelu" or
    "softplus"; ``dropout``; ``dtype`` ("float32" trains float64 input in float32);
    ``fit(..., validation_data=(X_val, y_val))`` with a validation-loss curve
    (``validation_loss_curve_``).
    """

    _parameter_constraints: dict = {
        **_ScikitRegressor._parameter_constraints,
        **_EXTRA_CONSTRAINTS,
        "loss": [StrOptions({"squared_error", "poisson", "huber", "absolute_error"})],
    }

    def __init__(
        self,
        loss="squared_error",
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        max_fun=15000,
        dropout=0.0,
        dtype=None,
    ):
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            loss=loss,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            dropout=dropout,
            dtype=dtype,
        )

    def _output(self):
        if self.loss == "poisson":
            return "exponential", Poisson(half_deviance=True, reduction="sum_outputs")
        if self.loss == "huber":
            return None, Huber(1.0, reduction="sum_outputs")
        if self.loss == "absolute_error":
            return None, MAE(reduction="sum_outputs")
        return None, SquaredError()

    def _out_activation_name(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _fastbp_targets(self, Y):
        return Y

    def _encode(self, y):
        return np.asarray(y, dtype=np.float64)

    def _validate_input(self, X, y, incremental, reset):
        X, y = _validated(self, X, y, reset, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, np.asarray(y, dtype=X.dtype)

    def fit(self, X, y, sample_weight=None, validation_data=None, comm=None):
        """Fit the model to X (array-like or sparse matrix of shape (n_samples,
        n_features)) and y (shape (n_samples,) or (n_samples, n_outputs)), with
        optional sample weights. ``validation_data=(X_val, y_val)`` is scored after
        every epoch (``validation_scores_``, ``validation_loss_curve_``), and with
        ``early_stopping`` replaces the held-out fraction. ``comm`` (an mpi4py
        communicator; every rank calls fit with the same data): data-parallel
        training as ``Sequential.fit(comm=)`` does, the same result as one process
        to rounding (stochastic solvers). Returns self."""
        return self._fit(X, y, sample_weight, False, validation_data, comm)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y). Only for the stochastic solvers."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """The predictions, shape (n_samples,) or (n_samples, n_outputs)."""
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward(X, check_input)
        return y_pred.ravel() if y_pred.shape[1] == 1 else y_pred

    def _score(self, X, y, sample_weight=None):
        return self._score_with_function(X, y, sample_weight, r2_score)

    def to_onnx(self, path=None, *, input_name="input"):
        """Export as a standard ONNX graph (see ``fastbp.onnx``), written to ``path``
        when given; returns the ``onnx.ModelProto``. Its input ``input_name`` has shape
        (batch, n_features) and the dtype the model was trained in (``model_.dtype``);
        its output "predictions" is what ``predict`` gives: shape (batch,) for one
        output, else (batch, n_outputs). Needs ``pip install "fastbp[onnx]"``."""
        from . import onnx as export

        check_is_fitted(self)
        self._sync_weights()
        return export.export_regressor(self.model_, path, input_name=input_name)
