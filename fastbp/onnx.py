"""Export to ONNX: a fitted model as a standard ONNX graph for any ONNX runtime.

The graph computes what ``predict`` computes, from the same plan the compiled core
runs (``fastbp.network``): per Dense layer a ``Gemm`` (``x @ weight + bias``), the
layer's activation, and the residual ``Add`` where a ``Residual`` block ends (its
source the network input or an earlier layer's output, residual sum included); then
the output activation that the loss fuses in training and ``predict`` applies
(softmax for cross-entropy, sigmoid for binary cross-entropy, exp for Poisson).
Dropout is omitted: ``predict`` never applies it.

The graph's input (named by the caller, ``"input"`` by default) has shape
``(batch, n_features)`` with a dynamic batch dimension and the model's dtype,
float32 or float64; so do the outputs. Opset 17 (IR version 8): everything the
graph uses exists there, onnxruntime has loaded it since 1.12 (2022) and most other
runtimes load it too; later opsets add nothing it needs (opset 20's ``Gelu`` has no
float64 kernel in onnxruntime either).

Activations are the standard ops where onnxruntime's CPU provider has them in both
dtypes (``Sigmoid``, ``Tanh``, ``Relu``, ``Softmax``, ``Exp``) and otherwise written
out the way fastbp's kernels compute them, parameters in the model's dtype:
leaky_relu ``x < 0 ? slope * x : x`` and elu ``x < 0 ? alpha * (exp(x) - 1) : x``
(ONNX's ``LeakyRelu`` and ``Elu`` take 32-bit attributes, and onnxruntime has no
float64 ``Elu``), softplus ``x > 20 ? x : log(1 + exp(x))`` (PyTorch's threshold, as
fastbp's kernel), gelu ``0.5 x (1 + erf(x / sqrt(2)))`` exactly. onnxruntime has no
float64 ``Erf``: in a float64 model the erf alone is evaluated in float32 (``Cast``
around it), so float64 GELU layers agree with ``predict`` to float32 rounding, every
other layer to float64 rounding.

Requires ``onnx`` (and ``onnxruntime`` to run the graph): ``pip install
"fastbp[onnx]"``. Neither is imported until an export is asked for.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _codes, _files

if TYPE_CHECKING:  # pragma: no cover
    import onnx

    from .model import Sequential

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17 (onnx 1.12): older runtimes refuse newer ones
BATCH = "batch"  # the name of the dynamic batch dimension

_CODE_NAMES = {code: name for name, code in _codes.ACTIVATIONS.items()}


def _onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            "exporting to ONNX needs the onnx package: pip install 'fastbp[onnx]'"
            " (which installs onnx and onnxruntime)"
        ) from exc
    return onnx


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must be a non-empty string")
    return name


def _check_names(names: dict[str, Any]) -> list[str]:
    """The graph's input and output names, checked: strings, non-empty, distinct."""
    checked = [_check_name(name, what) for what, name in names.items()]
    if len(set(checked)) != len(checked):
        listed = ", ".join(f"{what} {name!r}" for what, name in names.items())
        raise ValueError(f"the graph's input and outputs need names of their own, got {listed}")
    return checked


class _Graph:
    """A graph under construction: nodes, initializers, and names that never clash
    with the caller's input and output names."""

    def __init__(self, onnx: Any, dtype: np.dtype, reserved: list[str]) -> None:
        self.onnx, self.dtype = onnx, np.dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._taken = set(reserved)

    def name(self, hint: str) -> str:
        name, n = hint, 0
        while name in self._taken:
            n += 1
            name = f"{hint}_{n}"
        self._taken.add(name)
        return name

    def constant(self, hint: str, value: Any, dtype: Any = None) -> str:
        """An initializer holding ``value`` (in the model's dtype unless told)."""
        array = np.asarray(value, dtype=self.dtype if dtype is None else dtype)
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def op(
        self,
        op_type: str,
        inputs: list[str],
        hint: str,
        output: str | None = None,
        **attributes: Any,
    ) -> str:
        """Append a node; returns its output's name (``output`` when given)."""
        output = self.name(hint) if output is None else output
        self.nodes.append(
            self.onnx.helper.make_node(
                op_type, inputs, [output], name=self.name(f"{hint}_{op_type}"), **attributes
            )
        )
        return output

    def tensor(self, name: str, elem_type: int, width: int | None) -> Any:
        shape = [BATCH] if width is None else [BATCH, width]
        return self.onnx.helper.make_tensor_value_info(name, elem_type, shape)

    @property
    def elem_type(self) -> int:
        """The ONNX element type of the model's dtype."""
        proto = self.onnx.TensorProto
        return proto.DOUBLE if self.dtype == np.float64 else proto.FLOAT


# -- the network ------------------------------------------------------------------
def _weights(model: Sequential) -> np.ndarray:
    """A copy of the flat parameters (read as predict reads them), checked finite."""
    model._require_built()
    network = model._network
    with model._guard.reading():
        params = network.params.copy()
    if not np.isfinite(params).all():
        for l, row in enumerate(network.plan):
            for part, lo, hi in (
                ("weight", row["weight_at"], row["bias_at"]),
                ("bias", row["bias_at"], row["bias_at"] + row["n_out"]),
            ):
                if not np.isfinite(params[lo:hi]).all():
                    raise ValueError(
                        f"Dense layer {l} ({network.dense[l]!r}) has a non-finite {part}"
                        " (NaN or infinity): such a model cannot be exported; set finite"
                        " weights (set_weights) or train again"
                    )
    return params


def _activation(graph: _Graph, x: str, code: int, param: float, hint: str) -> str:
    """``f(x)`` for the activation of kernel code ``code`` (parameter ``param``), as
    fastbp's kernels compute it (see the module)."""
    name = _CODE_NAMES[code]
    if name == "identity":
        return x
    simple = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "exponential": "Exp"}
    if name in simple:
        return graph.op(simple[name], [x], hint)
    if name == "softmax":
        return graph.op("Softmax", [x], hint, axis=1)
    if name == "leaky_relu":
        negative = graph.op("Less", [x, graph.constant(f"{hint}_zero", 0)], f"{hint}_negative")
        slope = graph.constant(f"{hint}_negative_slope", param)
        scaled = graph.op("Mul", [x, slope], f"{hint}_scaled")
        return graph.op("Where", [negative, scaled, x], hint)
    if name == "elu":
        zero = graph.constant(f"{hint}_zero", 0)
        negative = graph.op("Less", [x, zero], f"{hint}_negative")
        # exp of min(x, 0): the branch not taken never overflows
        below = graph.op("Min", [x, zero], f"{hint}_below")
        exp = graph.op("Exp", [below], f"{hint}_exp")
        em1 = graph.op("Sub", [exp, graph.constant(f"{hint}_one", 1)], f"{hint}_expm1")
        alpha = graph.constant(f"{hint}_alpha", param)
        scaled = graph.op("Mul", [em1, alpha], f"{hint}_scaled")
        return graph.op("Where", [negative, scaled, x], hint)
    if name == "softplus":
        threshold = graph.constant(f"{hint}_threshold", 20)
        large = graph.op("Greater", [x, threshold], f"{hint}_large")
        below = graph.op("Min", [x, threshold], f"{hint}_below")
        exp = graph.op("Exp", [below], f"{hint}_exp")
        one_plus = graph.op("Add", [exp, graph.constant(f"{hint}_one", 1)], f"{hint}_1pexp")
        log = graph.op("Log", [one_plus], f"{hint}_log")
        return graph.op("Where", [large, x, log], hint)
    if name == "gelu":
        scaled = graph.op(
            "Mul", [x, graph.constant(f"{hint}_sqrt1_2", np.sqrt(0.5))], f"{hint}_scaled"
        )
        if graph.dtype == np.float64:  # onnxruntime has no float64 Erf
            float32 = graph.onnx.TensorProto.FLOAT
            scaled = graph.op("Cast", [scaled], f"{hint}_to_float", to=float32)
            erf = graph.op("Erf", [scaled], f"{hint}_erf32")
            erf = graph.op("Cast", [erf], f"{hint}_erf", to=graph.elem_type)
        else:
            erf = graph.op("Erf", [scaled], f"{hint}_erf")
        phi2 = graph.op("Add", [erf, graph.constant(f"{hint}_one", 1)], f"{hint}_1perf")
        half = graph.op("Mul", [x, graph.constant(f"{hint}_half", 0.5)], f"{hint}_half_x")
        return graph.op("Mul", [half, phi2], hint)
    raise AssertionError(f"activation {name} has no ONNX form")  # pragma: no cover


def _network(graph: _Graph, model: Sequential, source: str) -> str:
    """Append the model's forward pass to ``graph`` from the graph input ``source``;
    returns the name of the output, the output activation applied."""
    network = model._network
    params = _weights(model)
    passed_on: list[str] = []  # what each Dense layer passes on (its residual sum)
    x = source
    for l, row in enumerate(network.plan):
        n_in, n_out = int(row["n_in"]), int(row["n_out"])
        weight_at, bias_at = int(row["weight_at"]), int(row["bias_at"])
        weight = graph.constant(f"dense{l}_weight", params[weight_at:bias_at].reshape(n_in, n_out))
        bias = graph.constant(f"dense{l}_bias", params[bias_at : bias_at + n_out])
        h = graph.op("Gemm", [x, weight, bias], f"dense{l}_linear")
        h = _activation(
            graph, h, int(row["activation"]), float(row["act_param"]), f"dense{l}_activation"
        )
        skip = int(row["skip"])
        if skip != _codes.NO_SKIP:
            added = source if skip == _codes.SKIP_INPUT else passed_on[skip]
            h = graph.op("Add", [h, added], f"dense{l}_residual")
        passed_on.append(h)
        x = h
    code = int(network.net[0]["output_activation"])
    return _activation(graph, x, code, 0.0, "output_activation")


def _finish(graph: _Graph, inputs: list[Any], outputs: list[Any], doc: str) -> onnx.ModelProto:
    """The model of ``graph``, checked by ``onnx.checker`` (with shape inference)."""
    from . import __version__

    onnx = graph.onnx
    body = onnx.helper.make_graph(
        graph.nodes, "fastbp", inputs, outputs, initializer=graph.initializers, doc_string=doc
    )
    proto = onnx.helper.make_model(
        body,
        opset_imports=[onnx.helper.make_opsetid("", OPSET)],
        producer_name="fastbp",
        producer_version=__version__,
        doc_string=doc,
    )
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _write(onnx: Any, proto: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write ``proto`` to ``path`` atomically (a temporary file, then a rename)."""
    _files.write_atomically(
        os.fspath(path), "ONNX model", ".onnx.tmp", lambda temporary: onnx.save(proto, temporary)
    )


def _start(model: Sequential, input_name: Any, outputs: dict[str, Any]) -> tuple[_Graph, Any]:
    """Check the names and the model; a graph with the model's input."""
    names = _check_names({"input_name": input_name, **outputs})
    model._require_built()
    graph = _Graph(_onnx(), model.dtype, names)
    return graph, graph.tensor(names[0], graph.elem_type, model.input_dim)


def export(
    model: Sequential,
    path: str | os.PathLike[str] | None = None,
    *,
    input_name: str = "input",
    output_name: str = "output",
) -> onnx.ModelProto:
    """The model as an ONNX graph computing ``model.predict`` (see the module),
    written to ``path`` when given. ``Sequential.to_onnx`` calls this.

    Parameters
    ----------
    model : Sequential
        A built model.
    path : str or os.PathLike, optional
        Where to write the graph (``onnx.save``; atomically).
    input_name, output_name : str
        The names of the graph's input, of shape (batch, n_features), and of its
        output, of shape (batch, n_outputs); both of the model's dtype.

    Returns
    -------
    onnx.ModelProto
        The graph, checked by ``onnx.checker.check_model``.

    Raises
    ------
    RuntimeError
        The model is not built, or one of its layers was moved to another model.
    ValueError
        A weight or bias is NaN or infinite; bad names.
    ImportError
        onnx is not installed.
    """
    graph, source = _start(model, input_name, {"output_name": output_name})
    y = graph.op("Identity", [_network(graph, model, input_name)], "output", output=output_name)
    proto = _finish(
        graph,
        [source],
        [graph.tensor(y, graph.elem_type, model.n_outputs)],
        f"fastbp.Sequential: predict ({model.loss.name} loss)",
    )
    if path is not None:
        _write(graph.onnx, proto, path)
    return proto


def _label_table(onnx: Any, classes: np.ndarray) -> tuple[np.ndarray, int]:
    """The class labels as an ONNX tensor holds them, and its element type."""
    kind = classes.dtype.kind
    if kind == "b":
        return classes.astype(bool), onnx.TensorProto.BOOL
    if kind in "iu":
        if kind == "u" and classes.size and classes.max() > np.iinfo(np.int64).max:
            raise ValueError("class labels above 2**63 - 1 cannot be ONNX int64 labels")
        return classes.astype(np.int64), onnx.TensorProto.INT64
    if kind == "f":
        return classes.astype(np.float64), onnx.TensorProto.DOUBLE
    if kind == "U" or (kind == "O" and all(isinstance(c, str) for c in classes)):
        return np.array([str(c) for c in classes], dtype=object), onnx.TensorProto.STRING
    raise TypeError(
        f"class labels of dtype {classes.dtype} have no ONNX tensor type: use integer,"
        " boolean, float or string labels"
    )


def export_classifier(
    model: Sequential,
    classes: np.ndarray,
    target_type: str,
    path: str | os.PathLike[str] | None = None,
    *,
    input_name: str = "input",
) -> onnx.ModelProto:
    """A ``fastbp.sklearn.MLPClassifier`` (its ``model_``, ``classes_`` and type of
    target: "binary", "multiclass" or "multilabel-indicator") as an ONNX graph with
    two outputs:

    - "label": ``predict``, shape (batch,) of the classes' type (int64, bool,
      double or string), or (batch, n_classes) of int64 0/1 for multi-label;
    - "probabilities": ``predict_proba``, shape (batch, n_classes) of the model's
      dtype, ``[1 - p, p]`` in the binary case.
    """
    outputs = {"the label output": "label", "the probabilities output": "probabilities"}
    graph, source = _start(model, input_name, outputs)
    onnx = graph.onnx
    p = _network(graph, model, input_name)
    if target_type == "multilabel-indicator":
        n_columns = model.n_outputs
        probabilities = graph.op("Identity", [p], "probabilities", output="probabilities")
        positive = graph.op("Greater", [p, graph.constant("half", 0.5)], "positive")
        label = graph.op("Cast", [positive], "label", output="label", to=onnx.TensorProto.INT64)
        label_info = graph.tensor(label, onnx.TensorProto.INT64, n_columns)
    else:
        table, elem_type = _label_table(onnx, np.asarray(classes))
        if target_type == "binary":  # one logistic output p: [1 - p, p]
            n_columns = 2
            one = graph.constant("one", 1)
            complement = graph.op("Sub", [one, p], "complement")
            probabilities = graph.op(
                "Concat", [complement, p], "probabilities", output="probabilities", axis=1
            )
            positive = graph.op("Greater", [p, graph.constant("half", 0.5)], "positive")
            index = graph.op("Cast", [positive], "positive_index", to=onnx.TensorProto.INT64)
            axes = graph.constant("axis_1", [1], np.int64)
            index = graph.op("Squeeze", [index, axes], "class_index")
            if table.size == 1:  # fitted on one class: predict always says it
                table = np.repeat(table, 2)
        elif target_type == "multiclass":
            n_columns = model.n_outputs
            probabilities = graph.op("Identity", [p], "probabilities", output="probabilities")
            index = graph.op("ArgMax", [p], "class_index", axis=1, keepdims=0)
        else:
            raise ValueError(f"unknown type of target {target_type!r}")
        classes = graph.constant("classes", table, table.dtype)
        label = graph.op("Gather", [classes, index], "label", output="label", axis=0)
        label_info = graph.tensor(label, elem_type, None)
    proto = _finish(
        graph,
        [source],
        [label_info, graph.tensor(probabilities, graph.elem_type, n_columns)],
        f"fastbp.sklearn.MLPClassifier ({target_type}): predict as label, predict_proba"
        " as probabilities",
    )
    if path is not None:
        _write(onnx, proto, path)
    return proto


def export_regressor(
    model: Sequential,
    path: str | os.PathLike[str] | None = None,
    *,
    input_name: str = "input",
) -> onnx.ModelProto:
    """A ``fastbp.sklearn.MLPRegressor`` (its ``model_``) as an ONNX graph with one
    output, "predictions": ``predict``, shape (batch,) for one output or (batch,
    n_outputs), of the model's dtype."""
    graph, source = _start(model, input_name, {"the output": "predictions"})
    y = _network(graph, model, input_name)
    if model.n_outputs == 1:
        axes = graph.constant("axis_1", [1], np.int64)
        y = graph.op("Squeeze", [y, axes], "predictions", output="predictions")
        info = graph.tensor(y, graph.elem_type, None)
    else:
        y = graph.op("Identity", [y], "predictions", output="predictions")
        info = graph.tensor(y, graph.elem_type, model.n_outputs)
    proto = _finish(graph, [source], [info], "fastbp.sklearn.MLPRegressor: predict")
    if path is not None:
        _write(graph.onnx, proto, path)
    return proto
