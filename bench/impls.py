"""The benchmarked networks, synthetic data, and one adapter per implementation.

Every adapter offers the same small interface, so that the timing loops treat
fastbp, NumPy by hand, PyTorch and scikit-learn alike::

    impl = ADAPTERS[name](network, optimizer, dtype, weights, seed)
    data = impl.prepare(X, y)      # once: convert the data to the library's form
    impl.epoch(data)               # timed: one shuffled pass of minibatch steps
    impl.get_weights()             # [(W (n_in, n_out), b), ...] as NumPy arrays

torch and scikit-learn are imported only when their adapter is built.
"""

import dataclasses
import math
import warnings

import numpy as np

from common import have, load_fastbp
from numpy_ref import NumpyMLP

IMPLEMENTATIONS = ("fastbp", "numpy", "torch", "sklearn")
# The module each optional implementation needs.
REQUIRES = {"torch": "torch", "sklearn": "sklearn"}


@dataclasses.dataclass(frozen=True)
class Network:
    """A dense network and its training batch size.

    Attributes
    ----------
    name : str
    sizes : tuple of int
        Layer widths, input first.
    activation : str
        Activation of every hidden layer ("relu" or "tanh"); the output is linear.
    loss : str
        "cross_entropy" (integer labels, softmax fused) or "mse".
    batch : int
        Minibatch size.
    """

    name: str
    sizes: tuple
    activation: str
    loss: str
    batch: int

    @property
    def n_weights(self):
        """Number of weights (biases excluded)."""
        return sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    @property
    def flops_per_step(self):
        """Floating-point operations per training step by the usual convention:
        6 x weights x batch (forward 2, backward 4, the first layer's input
        gradient counted although no implementation computes it)."""
        return 6 * self.n_weights * self.batch

    @property
    def arch(self):
        """The widths joined by dashes, e.g. '784-128-10'."""
        return "-".join(str(s) for s in self.sizes)


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer: "sgd" (with ``momentum``) or "adam" (default betas, eps)."""

    name: str
    lr: float
    momentum: float = 0.9


def default_optimizer(name):
    """The benchmark's hyperparameters: SGD lr 0.01 momentum 0.9, Adam lr 1e-3."""
    return OptimizerSpec("sgd", 0.01, 0.9) if name == "sgd" else OptimizerSpec("adam", 1e-3)


def available(names):
    """Keep the implementations of ``names`` whose libraries are installed."""
    return [n for n in names if n not in REQUIRES or have(REQUIRES[n])]


# -- data and weights -------------------------------------------------------------
def make_data(network, n_rows, dtype, seed=0):
    """Synthetic, learnable data: standard normal inputs, and targets from a random
    linear teacher (the argmax class for cross-entropy; tanh of it for MSE).

    Returns
    -------
    X : ndarray of shape (n_rows, n_inputs), C-contiguous, of ``dtype``
    y : ndarray of int64 labels (n_rows,) or targets (n_rows, n_outputs) of ``dtype``
    """
    rng = np.random.default_rng(seed)
    d, k = network.sizes[0], network.sizes[-1]
    X = rng.standard_normal((n_rows, d), dtype=np.float32).astype(dtype, copy=False)
    teacher = rng.standard_normal((d, k)).astype(dtype) / math.sqrt(d)
    scores = X @ teacher
    if network.loss == "cross_entropy":
        y = np.ascontiguousarray(scores.argmax(axis=1), dtype=np.int64)
    else:
        y = np.ascontiguousarray(np.tanh(scores), dtype=dtype)
    return X, y


def initial_weights(network, dtype, seed=0):
    """Glorot-uniform weights and zero biases, shared by the implementations that
    accept given weights (all but scikit-learn), so that they start alike."""
    rng = np.random.default_rng(seed + 1)
    weights = []
    for a, b in zip(network.sizes[:-1], network.sizes[1:]):
        limit = math.sqrt(6.0 / (a + b))
        weights.append(
            (rng.uniform(-limit, limit, size=(a, b)).astype(dtype), np.zeros(b, dtype=dtype))
        )
    return weights


def reference_logits(weights, network, X, chunk=2048):
    """The network's outputs (logits for cross-entropy) for ``weights`` on ``X``:
    the forward pass of ``fastbp._reference`` (float64 NumPy), the same for every
    implementation."""
    from fastbp import _reference  # imported here: the memory runs measure their imports

    activations = [network.activation] * (len(weights) - 1) + ["identity"]
    return np.concatenate(
        [
            _reference.forward(weights, activations, X[start : start + chunk])[-1]
            for start in range(0, X.shape[0], chunk)
        ]
    )


def reference_loss(weights, network, X, y):
    """The mean loss of ``weights`` on ``(X, y)`` by ``fastbp._reference`` (float64;
    cross-entropy over samples, squared error over elements), so that the
    implementations are judged by the same yardstick."""
    from fastbp import _reference

    return _reference.loss_and_delta(network.loss, reference_logits(weights, network, X), y)[0]


def reference_accuracy(weights, network, X, y):
    """The fraction of ``X`` whose largest output is the label ``y``."""
    return float(np.mean(reference_logits(weights, network, X).argmax(axis=1) == y))


# -- adapters ---------------------------------------------------------------------
class Implementation:
    """Base class of the adapters.

    Parameters
    ----------
    network : Network
    optimizer : OptimizerSpec
    dtype : numpy dtype
    weights : list of (ndarray, ndarray)
        Initial weights; adapters that cannot take them (scikit-learn) ignore them.
    seed : int
        Seeds the shuffling (and scikit-learn's initialization).
    """

    name = None
    takes_weights = True

    def __init__(self, network, optimizer, dtype, weights, seed=0):
        self.network = network
        self.opt = optimizer
        self.dtype = np.dtype(dtype)

    def prepare(self, X, y):
        """Convert the data once, before timing; return what ``epoch`` takes."""
        return X, y

    def epoch(self, data):
        """One shuffled pass over ``data`` in minibatches of ``network.batch``."""
        raise NotImplementedError

    def fit(self, data, epochs):
        """Train for ``epochs`` epochs the way a user of the library would (by
        default, ``epoch`` in a loop)."""
        for _ in range(epochs):
            self.epoch(data)

    def get_weights(self):
        """Return the current weights as NumPy ``(W (n_in, n_out), b)`` pairs."""
        raise NotImplementedError

    def describe(self):
        """A short description of how this implementation trains."""
        return self.name


class FastbpImpl(Implementation):
    """fastbp: ``Sequential.fit(X, y, epochs=1, batch_size=B, shuffle=True)``,
    runs of minibatch steps in compiled calls."""

    name = "fastbp"

    def __init__(self, network, optimizer, dtype, weights, seed=0):
        super().__init__(network, optimizer, dtype, weights, seed)
        fastbp = load_fastbp()
        layers = [fastbp.Dense(w, network.activation) for w in network.sizes[1:-1]]
        layers.append(fastbp.Dense(network.sizes[-1]))
        opt = (
            fastbp.SGD(optimizer.lr, momentum=optimizer.momentum)
            if optimizer.name == "sgd"
            else fastbp.Adam(optimizer.lr)
        )
        self.model = fastbp.Sequential(
            layers,
            loss=network.loss,
            optimizer=opt,
            seed=seed,
            dtype=self.dtype.name,
            input_dim=network.sizes[0],
        )
        self.model.set_weights(weights)

    def epoch(self, data):
        X, y = data
        self.model.fit(X, y, epochs=1, batch_size=self.network.batch, shuffle=True)

    def fit(self, data, epochs):
        X, y = data
        self.model.fit(X, y, epochs=epochs, batch_size=self.network.batch, shuffle=True)

    def get_weights(self):
        return self.model.get_weights()

    def describe(self):
        return "fastbp.Sequential.fit (runs of minibatches in compiled calls)"


class NumpyImpl(Implementation):
    """Training by hand in NumPy (``numpy_ref.NumpyMLP``)."""

    name = "numpy"

    def __init__(self, network, optimizer, dtype, weights, seed=0):
        super().__init__(network, optimizer, dtype, weights, seed)
        self.model = NumpyMLP(
            network.sizes,
            network.activation,
            network.loss,
            optimizer.name,
            lr=optimizer.lr,
            momentum=optimizer.momentum,
            batch_size=network.batch,
            dtype=self.dtype,
            weights=weights,
            seed=seed,
        )

    def prepare(self, X, y):
        return self.model.check_data(X, y)

    def epoch(self, data):
        self.model.fit(*data, epochs=1, shuffle=True)

    def fit(self, data, epochs):
        self.model.fit(*data, epochs=epochs, shuffle=True)

    def get_weights(self):
        return self.model.get_weights()

    def describe(self):
        return "bench/numpy_ref.py: preallocated buffers, flat parameters, in-place updates"


class TorchImpl(Implementation):
    """PyTorch eager: ``nn.Sequential`` of ``Linear`` and activation modules,
    ``CrossEntropyLoss``/``MSELoss``, ``torch.optim`` (``fused=True`` where this
    torch supports it on the CPU), minibatches gathered with ``index_select`` into
    preallocated tensors."""

    name = "torch"

    def __init__(self, network, optimizer, dtype, weights, seed=0):
        super().__init__(network, optimizer, dtype, weights, seed)
        import torch

        self.torch = torch
        tdtype = torch.float32 if self.dtype == np.float32 else torch.float64
        modules = []
        for i, (w, b) in enumerate(weights):
            linear = torch.nn.Linear(w.shape[0], w.shape[1], dtype=tdtype)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T)))
                linear.bias.copy_(torch.from_numpy(np.asarray(b)))
            modules.append(linear)
            if i < len(weights) - 1:
                modules.append(
                    torch.nn.ReLU(inplace=True) if network.activation == "relu" else torch.nn.Tanh()
                )
        self.model = torch.nn.Sequential(*modules)
        self.loss_fn = (
            torch.nn.CrossEntropyLoss() if network.loss == "cross_entropy" else torch.nn.MSELoss()
        )
        self.fused = True
        try:
            self.optimizer = self._make_optimizer(fused=True)
        except (RuntimeError, TypeError, ValueError):
            self.fused = False
            self.optimizer = self._make_optimizer(fused=None)
        self.generator = torch.Generator().manual_seed(seed)

    def _make_optimizer(self, fused):
        params = self.model.parameters()
        if self.opt.name == "sgd":
            return self.torch.optim.SGD(
                params, lr=self.opt.lr, momentum=self.opt.momentum, fused=fused
            )
        return self.torch.optim.Adam(params, lr=self.opt.lr, fused=fused)

    def prepare(self, X, y):
        torch = self.torch
        Xt = torch.from_numpy(X)
        yt = torch.from_numpy(y)
        B = self.network.batch
        return (
            Xt,
            yt,
            torch.empty((B,) + tuple(Xt.shape[1:]), dtype=Xt.dtype),
            torch.empty((B,) + tuple(yt.shape[1:]), dtype=yt.dtype),
        )

    def epoch(self, data):
        torch = self.torch
        X, y, xb, yb = data
        n, B = X.shape[0], self.network.batch
        order = torch.randperm(n, generator=self.generator)
        model, loss_fn, optimizer = self.model, self.loss_fn, self.optimizer
        for start in range(0, n, B):
            idx = order[start : start + B]
            if idx.numel() == B:
                xs = torch.index_select(X, 0, idx, out=xb)
                ys = torch.index_select(y, 0, idx, out=yb)
            else:
                xs, ys = X[idx], y[idx]
            optimizer.zero_grad()
            loss = loss_fn(model(xs), ys)
            loss.backward()
            optimizer.step()

    def get_weights(self):
        return [
            (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy())
            for m in self.model
            if isinstance(m, self.torch.nn.Linear)
        ]

    def describe(self):
        kind = "fused=True" if self.fused else "default (for-loop)"
        return f"torch {self.torch.__version__} eager, torch.optim {kind}"


class SklearnImpl(Implementation):
    """scikit-learn's ``MLPClassifier``/``MLPRegressor`` (alpha=0, constant
    learning rate, no early stopping, tol=0), one epoch per ``partial_fit`` call
    (``max_iter=1``); ``fit`` is ``MLP*.fit`` with ``max_iter=epochs``. It draws
    its own initial weights (Glorot uniform)."""

    name = "sklearn"
    takes_weights = False

    def __init__(self, network, optimizer, dtype, weights, seed=0):
        super().__init__(network, optimizer, dtype, weights, seed)
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        self.classifier = network.loss == "cross_entropy"
        kwargs = dict(
            hidden_layer_sizes=tuple(network.sizes[1:-1]),
            activation=network.activation,
            solver=optimizer.name,
            alpha=0.0,
            batch_size=network.batch,
            learning_rate_init=optimizer.lr,
            max_iter=1,
            shuffle=True,
            tol=0.0,
            n_iter_no_change=10**9,
            early_stopping=False,
            random_state=seed,
        )
        if optimizer.name == "sgd":
            kwargs.update(
                learning_rate="constant", momentum=optimizer.momentum, nesterovs_momentum=False
            )
        self.model = (MLPClassifier if self.classifier else MLPRegressor)(**kwargs)
        self.classes = np.arange(network.sizes[-1])

    def epoch(self, data):
        from sklearn.exceptions import ConvergenceWarning

        X, y = data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.classifier:
                self.model.partial_fit(X, y, classes=self.classes)
            else:
                self.model.partial_fit(X, y)

    def fit(self, data, epochs):
        from sklearn.exceptions import ConvergenceWarning

        X, y = data
        self.model.set_params(max_iter=epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(X, y)

    def get_weights(self):
        return [(w.copy(), b.copy()) for w, b in zip(self.model.coefs_, self.model.intercepts_)]

    def describe(self):
        import sklearn

        return (
            f"scikit-learn {sklearn.__version__} MLPClassifier/MLPRegressor"
            f" (one epoch per partial_fit with max_iter=1)"
        )


ADAPTERS = {cls.name: cls for cls in (FastbpImpl, NumpyImpl, TorchImpl, SklearnImpl)}
