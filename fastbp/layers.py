"""Layers.

A layer knows only itself: its configuration, its parameters once built, and how
to run forward and backward on a batch. ``Dense`` can be used on its own in a
hand-written training loop::

    hidden, out = Dense(16, "tanh"), Dense(1)
    h = hidden.forward(X)
    y_hat = out.forward(h)
    loss_value = mse.forward(y_hat, y)
    hidden.backward(out.backward(mse.backward()))
    optimizer.step(hidden.params + out.params, hidden.grads + out.grads)

Inside a ``Sequential`` model, a layer's weight, bias and gradients are views into
the model's flat parameter and gradient buffers, and training runs in the model's
fused compiled step rather than through ``forward``/``backward``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _validation as val
from . import activations as act
from . import initializers as inits
from . import regularizers
from ._backend import core

FloatArray = NDArray[np.floating[Any]]


def _read_only(name):
    def refuse(self, value):
        raise AttributeError(
            f"{type(self).__name__}.{name} cannot be replaced: it is a view into the model's"
            f" parameter buffer. Write into it (layer.{name}[...] = values) or use"
            " model.set_weights(...)"
        )

    return refuse


class Layer:
    """Base class of layers.

    Subclasses implement ``build(n_inputs, rng, dtype)``, ``forward(x)`` and
    ``backward(grad_output)``, and list their parameters in ``params`` and the
    matching gradients in ``grads``.
    """

    def __init__(self) -> None:
        self.built = False
        self.trainable = True

    @property
    def trainable(self) -> bool:
        """Whether training updates the layer's parameters (True or False)."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = val.flag(value, "trainable")

    @property
    def params(self) -> list[FloatArray]:
        return []

    @property
    def grads(self) -> list[FloatArray]:
        return []

    def forward(self, x: ArrayLike) -> FloatArray:
        raise NotImplementedError

    def backward(self, grad_output: ArrayLike) -> FloatArray:
        raise NotImplementedError

    def __call__(self, x: ArrayLike) -> FloatArray:
        return self.forward(x)


class Dense(Layer):
    """A fully connected layer: ``output = f(x @ weight + bias)``.

    Parameters
    ----------
    units : int
        Number of neurons (outputs), >= 1.
    activation : str or None, default None
        "identity" (or None), "sigmoid", "tanh", "relu", "leaky_relu", "softmax",
        "elu", "gelu" or "softplus".
    negative_slope : float, default 0.01
        Slope of leaky_relu for negative inputs, >= 0.
    alpha : float, default 1.0
        ELU's alpha (its value tends to -alpha for large negative inputs), > 0.
    init : str, number or callable, optional
        Weight initializer (see ``fastbp.initializers``); default "he_uniform" for
        relu and leaky_relu, "glorot_uniform" otherwise.
    bias_init : str, number or callable, default "zeros"
        Bias initializer.
    kernel_regularizer, bias_regularizer : fastbp.regularizers.Regularizer, optional
        Penalties on the weight and the bias (``L1(a)``, ``L2(a)``, ``L1L2(l1, l2)``),
        added to the loss and its gradient.
    input_dim : int, optional
        Number of inputs; inferred from the data when not given.
    trainable : bool, default True
        Whether training updates the layer (the ``trainable`` attribute, which may
        change between fits).

    Attributes
    ----------
    weight : ndarray of shape (n_inputs, units)
    bias : ndarray of shape (units,)
    grad_weight, grad_bias : ndarray
        Gradients of the loss from the last ``backward`` (or model step).
    """

    def __init__(
        self,
        units: int,
        activation: str | None = None,
        *,
        negative_slope: float = 0.01,
        alpha: float = 1.0,
        init: str | float | Callable[..., Any] | None = None,
        bias_init: str | float | Callable[..., Any] = "zeros",
        kernel_regularizer: regularizers.Regularizer | None = None,
        bias_regularizer: regularizers.Regularizer | None = None,
        input_dim: int | None = None,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.trainable = trainable
        self.units = val.positive_int(units, "units")
        self.activation = act.canonical_name(activation)
        self.negative_slope = act.check_negative_slope(negative_slope)
        self.alpha = act.check_alpha(alpha)
        self.init = inits.default_for(self.activation) if init is None else init
        inits.get_initializer(self.init)  # an unknown name fails here, not at build
        self.bias_init = bias_init
        inits.get_initializer(self.bias_init)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.input_dim = None if input_dim is None else val.positive_int(input_dim, "input_dim")
        self._weight = self._bias = self._grad_weight = self._grad_bias = None
        self._owner = None
        self._input = self._output = self._z = None

    @property
    def activation_code(self) -> int:
        return act.ACTIVATIONS[self.activation]

    @property
    def activation_param(self) -> float:
        return act.parameter(self.activation, self.negative_slope, self.alpha)

    def n_params(self, n_inputs: int) -> int:
        return n_inputs * self.units + self.units

    def output_dim(self, n_inputs: int) -> int:
        return self.units

    # -- parameters ---------------------------------------------------------------
    def build(
        self, n_inputs: int, rng: np.random.Generator | None = None, dtype: DTypeLike = np.float32
    ) -> Dense:
        """Create the weights (their own arrays) for ``n_inputs`` inputs."""
        n_inputs = val.positive_int(n_inputs, "n_inputs")
        size = self.n_params(n_inputs)
        params = np.empty(size, dtype=dtype)
        grads = np.zeros(size, dtype=dtype)
        self.bind(n_inputs, params, grads, rng if rng is not None else np.random.default_rng())
        return self

    def bind(
        self,
        n_inputs: int,
        params: FloatArray,
        grads: FloatArray,
        rng: np.random.Generator,
        owner: Any = None,
    ) -> None:
        """Point weight, bias and gradients at ``params`` and ``grads`` (flat views of
        ``n_params(n_inputs)`` entries), keeping the current values when the layer is
        already built with this shape, drawing fresh ones from ``rng`` otherwise.

        ``owner`` is the network plan that holds the buffers. A layer belongs to one
        owner at a time: binding it to a new one releases it from the old, which
        then refuses to run (see ``fastbp.network.Network.release``)."""
        if self.input_dim is not None and n_inputs != self.input_dim:
            raise ValueError(
                f"Dense({self.units}) was declared with input_dim={self.input_dim} but"
                f" receives {n_inputs} inputs"
            )
        n_w = n_inputs * self.units
        weight = params[:n_w].reshape(n_inputs, self.units)
        bias = params[n_w : n_w + self.units]
        if self.built and self._weight.shape == weight.shape:
            weight[...] = self._weight
            bias[...] = self._bias
        else:
            weight[...] = inits.initialize(self.init, weight.shape, rng, params.dtype)
            bias[...] = inits.initialize(self.bias_init, bias.shape, rng, params.dtype)
        previous = self._owner() if self._owner is not None else None
        if previous is not None and previous is not owner:
            previous.release(self)
        self._owner = weakref.ref(owner) if owner is not None else None
        self._weight, self._bias = weight, bias
        self._grad_weight = grads[:n_w].reshape(n_inputs, self.units)
        self._grad_bias = grads[n_w : n_w + self.units]
        self.input_dim = n_inputs
        self.built = True

    # Views into the owner's flat buffers: written in place (``layer.weight[...] =
    # values``), never replaced.
    weight = property(
        lambda self: self._weight,
        _read_only("weight"),
        doc="The weight, shape (n_inputs, units): a view into the model's buffer.",
    )
    bias = property(lambda self: self._bias, _read_only("bias"), doc="The bias, shape (units,).")
    grad_weight = property(
        lambda self: self._grad_weight,
        _read_only("grad_weight"),
        doc="The gradient of the loss with respect to the weight.",
    )
    grad_bias = property(
        lambda self: self._grad_bias,
        _read_only("grad_bias"),
        doc="The gradient of the loss with respect to the bias.",
    )

    def __getstate__(self):
        # A copy or a pickle is a free layer: it keeps its values, not its owner nor
        # the batch of the last hand-written forward.
        state = self.__dict__.copy()
        state.update(_owner=None, _input=None, _output=None, _z=None)
        return state

    @property
    def params(self) -> list[FloatArray]:
        return [self.weight, self.bias] if self.built else []

    @property
    def grads(self) -> list[FloatArray]:
        return [self.grad_weight, self.grad_bias] if self.built else []

    # -- hand-written use ---------------------------------------------------------
    def forward(self, x: ArrayLike) -> FloatArray:
        """Return ``f(x @ weight + bias)`` for x of shape (n_samples, n_inputs),
        keeping x and the output for ``backward``. Builds the layer on first use."""
        dtype = self.weight.dtype.type if self.built else _dtype_of(x)
        x = val.as_float_matrix(x, dtype, name="x")
        if not self.built:
            self.build(x.shape[1], dtype=dtype)
        if x.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"x has {x.shape[1]} features, the layer expects {self.weight.shape[0]}"
            )
        out = np.empty((x.shape[0], self.units), dtype=dtype)
        kernels = core()
        kernels.matmul(x, self.weight, out)
        self._z = None
        if self.activation == "gelu":  # its derivative needs the input
            kernels.bias_act_forward(out, self.bias, act.ACTIVATIONS["identity"])
            self._z = out.copy()
            kernels.bias_act_forward(out, out[:0, 0], self.activation_code)
        else:
            kernels.bias_act_forward(out, self.bias, self.activation_code, self.activation_param)
        self._input, self._output = x, out
        return out

    def backward(self, grad_output: ArrayLike) -> FloatArray:
        """Given dL/d output, set ``grad_weight`` and ``grad_bias`` and return dL/dx."""
        if self._output is None:
            raise RuntimeError("call forward(x) before backward(grad_output)")
        delta = np.array(grad_output, dtype=self._output.dtype, order="C", copy=True)
        if delta.shape != self._output.shape:
            raise ValueError(
                f"grad_output has shape {delta.shape}, the last output had {self._output.shape}"
            )
        val.check_finite(delta, "grad_output")
        kernels = core()
        kernels.act_backward(
            self._output, delta, self.activation_code, self.activation_param, self._z
        )
        kernels.matmul(self._input, delta, self.grad_weight, trans_a=True)
        kernels.col_sums(delta, self.grad_bias)
        grad_input = np.empty_like(self._input)
        kernels.matmul(delta, self.weight, grad_input, trans_b=True)
        return grad_input

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, as JSON-compatible values (an initializer given
        as a callable is not saved: a rebuilt layer uses the default)."""

        def plain(init):
            return init if isinstance(init, (str, int, float)) else None

        def penalty(regularizer):
            return None if regularizer is None else regularizer.get_config()

        return {
            "units": self.units,
            "activation": self.activation,
            "negative_slope": self.negative_slope,
            "alpha": self.alpha,
            "init": plain(self.init),
            "bias_init": plain(self.bias_init) or "zeros",
            "kernel_regularizer": penalty(self.kernel_regularizer),
            "bias_regularizer": penalty(self.bias_regularizer),
            "input_dim": self.input_dim,
        }

    def penalty(self, weight: ArrayLike | None = None, bias: ArrayLike | None = None) -> float:
        """The current value of the layer's weight and bias penalties, or their value
        at ``weight`` and ``bias`` (arrays of the layer's weights, in any shape)."""
        weight = self.weight if weight is None else weight
        bias = self.bias if bias is None else bias
        return sum(
            r.penalty(w)
            for r, w in ((self.kernel_regularizer, weight), (self.bias_regularizer, bias))
            if r
        )

    def penalty_coefficients(self) -> list[float]:
        """(l1, l2) of the weight, then of the bias, as the compiled step reads them."""
        k, b = self.kernel_regularizer, self.bias_regularizer
        return [k.l1 if k else 0.0, k.l2 if k else 0.0, b.l1 if b else 0.0, b.l2 if b else 0.0]

    def __repr__(self) -> str:
        extra = (
            f", negative_slope={self.negative_slope}"
            if self.activation == "leaky_relu"
            else f", alpha={self.alpha}"
            if self.activation == "elu"
            else ""
        )
        return f"Dense({self.units}, activation={self.activation!r}{extra})"


class Dropout(Layer):
    """Inverted dropout: in training, each output of the previous layer is zeroed with
    probability ``rate`` and the others are scaled by ``1 / (1 - rate)``, so that
    nothing changes in inference, where dropout is off (``predict``, ``evaluate``).

    Masks come from the model seed and the training step: the same seed gives the
    same masks, whatever the thread count. Place it after a Dense layer (not after a
    softmax one) or first, on the inputs; not last.

    Parameters
    ----------
    rate : float
        Fraction of the units dropped, in [0, 1).
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        if (
            isinstance(rate, bool)
            or not isinstance(rate, (int, float, np.floating))
            or not 0 <= rate < 1
        ):
            raise ValueError(f"Dropout rate must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.built = True

    def get_config(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def forward(
        self, x: ArrayLike, training: bool = True, rng: np.random.Generator | None = None
    ) -> FloatArray:
        """Apply dropout by hand (a fresh mask from ``rng`` each call) when training;
        the identity otherwise."""
        x = np.asarray(x)
        if not training or self.rate == 0:
            self._mask = 1.0  # backward passes the gradient on unchanged
            return x
        rng = rng if rng is not None else np.random.default_rng()
        self._mask = (rng.random(x.shape) >= self.rate) / (1 - self.rate)
        return x * self._mask

    def backward(self, grad_output: ArrayLike) -> FloatArray:
        if getattr(self, "_mask", None) is None:
            raise RuntimeError("call forward(x) before backward(grad_output)")
        return np.asarray(grad_output) * self._mask

    def __repr__(self) -> str:
        return f"Dropout({self.rate})"


class Residual(Layer):
    """A residual block: ``x + f(x)``, with f the block's layers (Dense, with Dropout
    between them). The skip connection lets the gradient reach early layers of a
    deep network undiminished (He et al., 2016).

    Parameters
    ----------
    layers : Layer or list of Layer
        f: Dense layers (and Dropout), the last one Dense with as many units as the
        block's input has features.
    """

    def __init__(self, layers: Layer | Sequence[Layer]) -> None:
        super().__init__()
        layers = [layers] if isinstance(layers, Layer) else list(layers)
        if not layers:
            raise ValueError("a Residual block needs at least one layer")
        for layer in layers:
            if not isinstance(layer, (Dense, Dropout)):
                raise TypeError(
                    f"a Residual block holds Dense and Dropout layers, got {type(layer).__name__}"
                )
        if not isinstance(layers[-1], Dense):
            raise ValueError("a Residual block must end with a Dense layer")
        self.layers = layers
        self.built = True

    @property
    def trainable(self) -> bool:
        return all(layer.trainable for layer in self.layers)

    # -- hand-written use ---------------------------------------------------------
    def forward(
        self, x: ArrayLike, training: bool = True, rng: np.random.Generator | None = None
    ) -> FloatArray:
        """Return ``x + f(x)`` for x of shape (n_samples, n_features): the block's
        layers in order (their own ``forward``, Dropout with ``training`` and
        ``rng``), plus the input. Builds the layers on first use."""
        first = next(layer for layer in self.layers if isinstance(layer, Dense))
        dtype = first.weight.dtype.type if first.built else _dtype_of(x)
        x = val.as_float_matrix(x, dtype, name="x")
        out = x
        for layer in self.layers:
            if isinstance(layer, Dropout):
                out = layer.forward(out, training=training, rng=rng)
            else:
                out = layer.forward(out)
        if out.shape != x.shape:
            raise ValueError(
                f"a Residual block adds its input ({x.shape[1]} features) to its output"
                f" ({out.shape[1]} units): they must match"
            )
        return x + out

    def backward(self, grad_output: ArrayLike) -> FloatArray:
        """Given dL/d output of the last ``forward``, set the layers' gradients and
        return dL/dx: the gradient through the layers plus ``grad_output`` itself
        (the skip connection)."""
        grad = grad_output = np.asarray(grad_output)
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
        return grad + grad_output

    @trainable.setter
    def trainable(self, value: bool) -> None:
        value = val.flag(value, "trainable")
        for layer in getattr(self, "layers", []):
            layer.trainable = value

    def get_config(self) -> dict[str, Any]:
        return {
            "layers": [
                {
                    "class": type(layer).__name__,
                    "config": layer.get_config(),
                    "trainable": bool(layer.trainable),
                }
                for layer in self.layers
            ]
        }

    def __repr__(self) -> str:
        return f"Residual({self.layers!r})"


def _dtype_of(x):
    dtype = getattr(x, "dtype", None)
    return np.float64 if dtype == np.float64 else np.float32
