"""A hand-written NumPy trainer for dense networks: the benchmarks' NumPy-by-hand
implementation (timed against fastbp; the yardstick that scores every implementation
is ``fastbp._reference``, see ``impls.reference_loss``).

This is what a careful NumPy programmer writes for minibatch training without
fastbp: every per-batch array is allocated once, for a batch capacity, and every
operation of a training step writes into one of those buffers
(``np.matmul(..., out=...)``, in-place ufuncs). A training step is

1. gather the shuffled minibatch: ``np.take(X, idx, axis=0, out=xb, mode="clip")``
   (``mode="clip"`` writes straight into ``out``; the default mode buffers it);
2. forward: per layer ``z = h @ W`` into the layer's activation buffer, ``z += b``,
   the activation applied in place;
3. loss and output delta in one pass: softmax fused with cross-entropy
   (``delta = (softmax(z) - onehot(y)) / batch``) or mean squared error
   (``delta = 2 (z - y) / z.size``);
4. backward: ``dW = h_prev.T @ delta``, ``db = delta.sum(0)``,
   ``delta_prev = (delta @ W.T) * f'(h_prev)``, all into preallocated buffers;
5. update: SGD with momentum or Adam, in place, with PyTorch's rules.

All weights and biases are views into one flat parameter buffer and all gradients
views into one flat gradient buffer (the usual trick for a fast NumPy
optimizer), so each optimizer operation runs over every parameter at once instead
of one small NumPy call per array. ``flat=False`` keeps one buffer per array and
updates them one by one.

Only the activations "identity", "relu" and "tanh" (hidden layers; the output layer
is linear) and the losses "cross_entropy" (integer labels) and "mse" are supported:
what the benchmarks need.
"""

import math

import numpy as np

ACTIVATIONS = ("identity", "relu", "tanh")
LOSSES = ("cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam")


class NumpyMLP:
    """A multi-layer perceptron trained by minibatch gradient descent in NumPy.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first: ``(n_inputs, hidden_1, ..., n_outputs)``.
    activation : {"relu", "tanh", "identity"}, default "relu"
        Activation of every hidden layer. The output layer is linear; for
        cross-entropy its softmax is fused into the loss.
    loss : {"cross_entropy", "mse"}, default "cross_entropy"
        Mean cross-entropy over the samples of a batch (targets are integer class
        labels), or mean squared error over every element (targets are a matrix of
        shape (n_samples, n_outputs)), as PyTorch's ``CrossEntropyLoss`` and
        ``MSELoss`` define them.
    optimizer : {"sgd", "adam"}, default "sgd"
        Update rule, as ``torch.optim.SGD`` (dampening 0, no Nesterov) and
        ``torch.optim.Adam`` define it.
    lr : float, default 0.01
        Learning rate.
    momentum : float, default 0.9
        SGD momentum: ``buf = momentum * buf + g``, ``p -= lr * buf``.
    betas : (float, float), default (0.9, 0.999)
        Adam's decay rates of the first and second moment estimates.
    eps : float, default 1e-8
        Adam's term added to the bias-corrected ``sqrt(v)``.
    batch_size : int, default 32
        Samples per minibatch; the buffers are allocated for this many rows.
    dtype : {"float32", "float64"}, default "float32"
        Precision of the parameters, buffers and computation.
    weights : list of (ndarray, ndarray), optional
        Initial ``(weight, bias)`` per layer, weights shaped ``(n_in, n_out)``;
        copied. By default Glorot-uniform weights and zero biases drawn from
        ``seed``.
    seed : int, optional
        Seeds the initial weights (when not given) and the shuffling.
    flat : bool, default True
        Keep all parameters (and gradients, and optimizer state) in one flat buffer
        each, so that the optimizer makes a few NumPy calls per step in all.

    Attributes
    ----------
    steps : int
        Optimizer steps taken so far.
    """

    def __init__(
        self,
        sizes,
        activation="relu",
        loss="cross_entropy",
        optimizer="sgd",
        lr=0.01,
        momentum=0.9,
        betas=(0.9, 0.999),
        eps=1e-8,
        batch_size=32,
        dtype="float32",
        weights=None,
        seed=None,
        flat=True,
    ):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must list at least two positive widths, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sizes = sizes
        self.activation = activation
        self.loss = loss
        self.optimizer = optimizer
        self.lr = float(lr)
        self.momentum = float(momentum)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.batch_size = int(batch_size)
        self.dtype = np.dtype(dtype)
        self.steps = 0
        self._rng = np.random.default_rng(seed)
        self._order = None

        shapes = list(zip(sizes[:-1], sizes[1:]))
        self._allocate_parameters(shapes, flat)
        self._allocate_batch_buffers(self.batch_size)
        if weights is None:
            weights = [
                (
                    self._rng.uniform(
                        -math.sqrt(6.0 / (a + b)), math.sqrt(6.0 / (a + b)), size=(a, b)
                    ),
                    np.zeros(b),
                )
                for a, b in shapes
            ]
        self.set_weights(weights)

    # -- allocation ---------------------------------------------------------------
    def _allocate_parameters(self, shapes, flat):
        """Create the parameters, gradients and optimizer state.

        With ``flat`` every weight and bias is a view into one flat buffer (likewise
        the gradients); the optimizer then works on a single group: the flat buffers.
        """
        n_state = 1 if self.optimizer == "sgd" else 2
        self.W, self.b, self.dW, self.db = [], [], [], []
        self._groups = []  # (param, grad, state..., scratch): what one update covers
        if flat:
            total = sum(a * b + b for a, b in shapes)
            params = np.zeros(total, dtype=self.dtype)
            grads = np.zeros(total, dtype=self.dtype)
            offset = 0
            for a, b in shapes:
                self.W.append(params[offset : offset + a * b].reshape(a, b))
                self.dW.append(grads[offset : offset + a * b].reshape(a, b))
                offset += a * b
                self.b.append(params[offset : offset + b])
                self.db.append(grads[offset : offset + b])
                offset += b
            self._groups.append(self._group(params, grads, n_state))
        else:
            for a, b in shapes:
                self.W.append(np.zeros((a, b), dtype=self.dtype))
                self.b.append(np.zeros(b, dtype=self.dtype))
                self.dW.append(np.zeros((a, b), dtype=self.dtype))
                self.db.append(np.zeros(b, dtype=self.dtype))
            for p, g in zip(self.W + self.b, self.dW + self.db):
                self._groups.append(self._group(p, g, n_state))

    @staticmethod
    def _group(param, grad, n_state):
        """One optimizer group: the parameter, its gradient, zeroed state buffers
        (momentum, or Adam's two moments) and a scratch buffer of the same shape."""
        return (param, grad) + tuple(np.zeros_like(param) for _ in range(n_state + 1))

    def _allocate_batch_buffers(self, capacity):
        """Allocate, once, every per-batch array for up to ``capacity`` rows."""
        widths = self.sizes[1:]
        self._capacity = capacity
        self._xb = np.empty((capacity, self.sizes[0]), dtype=self.dtype)
        if self.loss == "cross_entropy":
            self._yb = np.empty(capacity, dtype=np.intp)
        else:
            self._yb = np.empty((capacity, widths[-1]), dtype=self.dtype)
        # One buffer per layer holds z = h @ W + b, then (in place) h = f(z).
        self._act = [np.empty((capacity, w), dtype=self.dtype) for w in widths]
        self._delta = [np.empty((capacity, w), dtype=self.dtype) for w in widths]
        hidden = widths[:-1]
        if self.activation == "relu":
            self._mask = [np.empty((capacity, w), dtype=bool) for w in hidden]
        elif self.activation == "tanh":
            self._scratch = [np.empty((capacity, w), dtype=self.dtype) for w in hidden]
        # Cross-entropy: per-row maximum, sum of exponentials, the true class's
        # shifted logit, and the flat positions of the true classes.
        self._row_max = np.empty(capacity, dtype=self.dtype)
        self._row_sum = np.empty(capacity, dtype=self.dtype)
        self._picked = np.empty(capacity, dtype=self.dtype)
        self._row_base = np.arange(capacity, dtype=np.intp) * widths[-1]
        self._flat_idx = np.empty(capacity, dtype=np.intp)

    # -- weights ------------------------------------------------------------------
    def get_weights(self):
        """Return copies of the weights: a list of ``(weight, bias)`` per layer."""
        return [(w.copy(), b.copy()) for w, b in zip(self.W, self.b)]

    def set_weights(self, weights):
        """Copy ``(weight, bias)`` pairs (weights shaped ``(n_in, n_out)``) in."""
        weights = list(weights)
        if len(weights) != len(self.W):
            raise ValueError(f"got {len(weights)} (weight, bias) pairs for {len(self.W)} layers")
        for (w_new, b_new), w, b in zip(weights, self.W, self.b):
            w[...] = w_new
            b[...] = b_new

    # -- the training step ----------------------------------------------------------
    def _forward(self, xb, m):
        """Run the forward pass on the first ``m`` rows; return the output buffer."""
        h = xb
        last = len(self.W) - 1
        for i, (w, b) in enumerate(zip(self.W, self.b)):
            z = self._act[i][:m]
            np.matmul(h, w, out=z)
            z += b
            if i < last:
                if self.activation == "relu":
                    np.maximum(z, 0, out=z)
                elif self.activation == "tanh":
                    np.tanh(z, out=z)
            h = z
        return h

    def _loss_and_delta(self, out, yb, m):
        """Return the mean loss of the batch and write dL/d(output) into the last
        delta buffer."""
        delta = self._delta[-1][:m]
        if self.loss == "mse":
            np.subtract(out, yb, out=delta)
            value = float(np.vdot(delta, delta)) / delta.size
            delta *= 2.0 / delta.size
            return value
        row_max, row_sum, picked = self._row_max[:m], self._row_sum[:m], self._picked[:m]
        flat_idx = self._flat_idx[:m]
        np.max(out, axis=1, out=row_max)
        np.subtract(out, row_max[:, None], out=delta)  # shifted logits
        np.add(self._row_base[:m], yb, out=flat_idx)
        flat_delta = delta.reshape(-1)
        np.take(flat_delta, flat_idx, out=picked, mode="clip")  # true class's logit
        np.exp(delta, out=delta)
        np.sum(delta, axis=1, out=row_sum)
        np.divide(delta, row_sum[:, None], out=delta)  # softmax
        np.log(row_sum, out=row_sum)
        value = (float(row_sum.sum()) - float(picked.sum())) / m
        np.take(flat_delta, flat_idx, out=picked, mode="clip")
        picked -= 1
        np.put(flat_delta, flat_idx, picked)  # softmax - onehot
        delta *= 1.0 / m
        return value

    def _backward(self, xb, m):
        """Backpropagate from the last delta buffer, writing every gradient."""
        for i in range(len(self.W) - 1, -1, -1):
            delta = self._delta[i][:m]
            h_prev = xb if i == 0 else self._act[i - 1][:m]
            np.matmul(h_prev.T, delta, out=self.dW[i])
            np.sum(delta, axis=0, out=self.db[i])
            if i == 0:
                break
            delta_prev = self._delta[i - 1][:m]
            np.matmul(delta, self.W[i].T, out=delta_prev)
            if self.activation == "relu":  # f'(z) = [h > 0]
                mask = self._mask[i - 1][:m]
                np.greater(h_prev, 0, out=mask)
                np.multiply(delta_prev, mask, out=delta_prev)
            elif self.activation == "tanh":  # f'(z) = 1 - h**2
                s = self._scratch[i - 1][:m]
                np.multiply(h_prev, h_prev, out=s)
                np.subtract(1, s, out=s)
                np.multiply(delta_prev, s, out=delta_prev)

    def _update(self):
        """Apply one optimizer step to every parameter group, in place."""
        self.steps += 1
        lr = self.lr
        if self.optimizer == "sgd":
            mu = self.momentum
            for p, g, buf, scratch in self._groups:
                buf *= mu  # buf = mu * buf + g
                buf += g
                np.multiply(buf, lr, out=scratch)
                p -= scratch  # p -= lr * buf
            return
        beta1, beta2 = self.betas
        t = self.steps
        step_size = lr / (1.0 - beta1**t)
        inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2**t)
        for p, g, m, v, scratch in self._groups:
            m *= beta1  # m = beta1 m + (1 - beta1) g
            np.multiply(g, 1.0 - beta1, out=scratch)
            m += scratch
            v *= beta2  # v = beta2 v + (1 - beta2) g^2
            np.multiply(g, g, out=scratch)
            scratch *= 1.0 - beta2
            v += scratch
            np.sqrt(v, out=scratch)  # sqrt(v) / sqrt(1 - beta2^t) + eps
            scratch *= inv_sqrt_bc2
            scratch += self.eps
            np.divide(m, scratch, out=scratch)
            scratch *= step_size  # p -= lr / (1 - beta1^t) * m / denom
            p -= scratch

    def train_step(self, xb, yb):
        """Run one training step (forward, loss, backward, update) on a batch.

        Parameters
        ----------
        xb : ndarray of shape (m, n_inputs)
            The batch, ``m <= batch_size`` rows, of the model's dtype.
        yb : ndarray
            Its integer labels of shape (m,) (cross-entropy) or targets of shape
            (m, n_outputs) (MSE).

        Returns
        -------
        float
            The batch's mean loss before the update.
        """
        m = xb.shape[0]
        if m > self._capacity:
            raise ValueError(f"a batch of {m} rows exceeds the capacity {self._capacity}")
        value = self._loss_and_delta(self._forward(xb, m), yb, m)
        self._backward(xb, m)
        self._update()
        return value

    # -- the public loop --------------------------------------------------------
    def check_data(self, X, y):
        """Return ``(X, y)`` converted once to the arrays ``fit`` works on (no copy
        when they already are): X of the model's dtype, y as intp labels or a
        target matrix of the model's dtype."""
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if self.loss == "cross_entropy":
            y = np.ascontiguousarray(y, dtype=np.intp)
        else:
            y = np.ascontiguousarray(y, dtype=self.dtype).reshape(X.shape[0], -1)
        if X.ndim != 2 or X.shape[1] != self.sizes[0] or y.shape[0] != X.shape[0]:
            raise ValueError(f"X must have shape (n, {self.sizes[0]}) and y n rows")
        return X, y

    def fit(self, X, y, epochs=1, shuffle=True):
        """Train for ``epochs`` passes over ``(X, y)`` in minibatches.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_inputs)
            Converted to the model's dtype once (no copy when it already is).
        y : ndarray
            Integer labels (n_samples,) for cross-entropy, targets
            (n_samples, n_outputs) for MSE.
        epochs : int, default 1
            Passes over the data.
        shuffle : bool, default True
            Reshuffle the rows before each epoch; the minibatch is then gathered
            into the input buffer with ``np.take``.

        Returns
        -------
        list of float
            The mean training loss of each epoch.
        """
        X, y = self.check_data(X, y)
        n, batch = X.shape[0], self.batch_size
        if self._order is None or self._order.size != n:
            self._order = np.arange(n, dtype=np.intp)
        order = self._order
        history = []
        for _ in range(epochs):
            if shuffle:
                self._rng.shuffle(order)
            total = 0.0
            for start in range(0, n, batch):
                stop = min(start + batch, n)
                m = stop - start
                if shuffle:
                    idx = order[start:stop]
                    # mode="clip": indices are valid, and "raise" buffers ``out``.
                    xb = np.take(X, idx, axis=0, out=self._xb[:m], mode="clip")
                    yb = np.take(y, idx, axis=0, out=self._yb[:m], mode="clip")
                else:
                    xb, yb = X[start:stop], y[start:stop]
                total += self.train_step(xb, yb) * m
            history.append(total / n)
        return history

    def predict(self, X, chunk=1024):
        """Return the network's output for ``X``: class probabilities (softmax
        applied) for cross-entropy, the linear outputs for MSE."""
        X = np.ascontiguousarray(X, dtype=self.dtype)
        outputs = []
        for start in range(0, X.shape[0], chunk):
            h = X[start : start + chunk]
            for i, (w, b) in enumerate(zip(self.W, self.b)):
                h = h @ w + b
                if i < len(self.W) - 1:
                    h = (
                        np.maximum(h, 0)
                        if self.activation == "relu"
                        else np.tanh(h)
                        if self.activation == "tanh"
                        else h
                    )
            if self.loss == "cross_entropy":
                h = np.exp(h - h.max(axis=1, keepdims=True))
                h /= h.sum(axis=1, keepdims=True)
            outputs.append(h)
        return np.concatenate(outputs)

    def evaluate(self, X, y):
        """Return ``{"loss": ..., "accuracy": ...}`` (accuracy for cross-entropy
        only) over all of ``(X, y)``."""
        X, y = self.check_data(X, y)
        out = self.predict(X).astype(np.float64)
        if self.loss == "mse":
            return {"loss": float(np.mean((out - y) ** 2))}
        p_true = np.maximum(out[np.arange(len(y)), y], np.finfo(np.float64).tiny)
        return {
            "loss": float(-np.mean(np.log(p_true))),
            "accuracy": float(np.mean(out.argmax(axis=1) == y)),
        }
