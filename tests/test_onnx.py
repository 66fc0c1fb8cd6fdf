"""ONNX export (fastbp.onnx): onnxruntime runs the exported graph and gives what
``predict`` (``predict_proba``) gives, for every activation, every loss's output
activation, residual blocks, dropout, both dtypes and the scikit-learn estimators,
at batch sizes 1, 7 and 33 through one session (the batch dimension is dynamic); a
malformed model is refused with a clear error.

Tolerances. The graph does the arithmetic of ``predict`` in another order and with
other elementary functions: onnxruntime's GEMM sums the products in another order
than BLAS, and its exp, tanh, sigmoid and erf differ from fastbp's kernels by an ulp
or a few. In these small networks (at most 16 inputs per unit, 4 layers, gains of
order 1) each difference is a few ulps of the scale of its layer's values, and exp
and softmax turn an absolute error of a logit into a relative error of the output
of the same size; the largest differences measured are 2.5e-7 (float32) and 2.3e-16
(float64) of the output's scale. The comparison allows rtol 1e-5 for float32 (84
ulps, 40 times the largest measured) and 1e-12 for float64 (a margin that costs
nothing: a real fault moves the outputs by 1e-3 or more), with atol rtol times the
largest |output| (an output near zero is as accurate as its layer's scale, not
relatively: onnxruntime's float32 Sigmoid gives 0 for sigmoid(-30) = 9e-14).
float64 GELU layers compare at float32's tolerance: onnxruntime has no float64 Erf,
so the graph evaluates that erf in float32 (see fastbp.onnx). A wrong parameter,
a missing residual add or a doubled softmax moves the outputs far more
(``test_the_comparison_would_catch_a_wrong_parameter``).
"""

import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Dropout, Residual

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
BATCHES = (1, 7, 33)
DTYPES = [np.float32, np.float64]
ACTIVATIONS = sorted(fastbp.activations.ACTIVATIONS)
# Parameters other than the defaults, so that a parameter left out shows.
PARAMS = {"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 0.7}}


def session(proto):
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def tolerance(dtype, float32=False):
    return RTOL[np.dtype(np.float32 if float32 else dtype)]


def assert_close(actual, expected, rtol, scale=None):
    """Equal to ``rtol`` relative, or ``rtol`` times ``scale`` (by default the
    largest |expected|) absolute."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def randomize(model, seed=0, scale=1.0):
    """Weights N(0, scale^2 / n_in), biases N(0, 0.5^2): every unit's input spans
    both signs and a few units' leave the linear range."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [
            (rng.normal(0, scale / np.sqrt(w.shape[0]), w.shape), rng.normal(0, 0.5, b.shape))
            for w, b in model.get_weights()
        ]
    )
    return model


def inputs(d, dtype, seed=1, n=BATCHES[-1]):
    return (2 * np.random.default_rng(seed).normal(size=(n, d))).astype(dtype)


def check_predict(model, X, rtol=None, scale=None, **names):
    """onnxruntime's output of the exported model equals predict on X's first 1, 7
    and 33 rows, from one session."""
    proto = model.to_onnx(**names)
    run = session(proto)
    rtol = tolerance(model.dtype) if rtol is None else rtol
    for n in BATCHES:
        (out,) = run.run(None, {names.get("input_name", "input"): X[:n]})
        assert out.shape == (n, model.n_outputs)
        assert_close(out, model.predict(X[:n]), rtol, scale)
    return proto


def op_types(proto):
    return [node.op_type for node in proto.graph.node]


# -- activations --------------------------------------------------------------------
# Where the kernels and the graph could part: both sides of 0, softplus's threshold
# at 20, exp's and sigmoid's tails, values that round to 1 in tanh.
SPECIAL = [-40, -30, -20.5, -20, -8, -1, -1e-3, -1e-30, 0, 1e-30, 1e-3, 0.5, 1, 8, 19.5, 20]
SPECIAL += [20.5, 30, 40]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_on_its_own(activation, dtype):
    # One layer with identity weights: the graph's activation against the kernel's,
    # at the special values and a grid between them (2 units: softmax sees pairs);
    # relative, or absolute at the scale 1 of the activations' values and slopes
    # around 0 (not at exp(40)'s scale).
    grid = np.concatenate([SPECIAL, np.linspace(-6, 6, 2 * BATCHES[-1] - len(SPECIAL))])
    X = grid.reshape(-1, 2).astype(dtype)
    model = fastbp.Sequential(
        [Dense(2, activation, **PARAMS.get(activation, {}))], loss="mse", dtype=dtype, input_dim=2
    )
    model.set_weights([(np.eye(2), np.zeros(2))])
    check_predict(model, X, rtol=tolerance(dtype, float32=activation == "gelu"), scale=1.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_each_activation_in_a_network(activation, dtype):
    params = PARAMS.get(activation, {})
    model = fastbp.Sequential(
        [
            Dense(16, activation, **params),
            Residual(Dense(16, activation, **params)),
            Dense(8, activation, **params),
            Dense(3),
        ],
        loss="mse",
        dtype=dtype,
        input_dim=5,
    )
    # exp of exp of exp: smaller weights keep it finite
    randomize(model, scale=0.3 if activation == "exponential" else 1.5)
    proto = check_predict(
        model, inputs(5, dtype), rtol=tolerance(dtype, float32=activation == "gelu")
    )
    assert op_types(proto).count("Gemm") == 4


def test_the_comparison_would_catch_a_wrong_parameter():
    # Models that differ only in leaky_relu's slope (0.2 against 0.21) or ELU's alpha
    # (0.7 against 0.71) give outputs far outside the tolerance of these tests.
    for wrong in ({"negative_slope": 0.21}, {"alpha": 0.71}):
        name = "leaky_relu" if "negative_slope" in wrong else "elu"
        models = [
            randomize(
                fastbp.Sequential([Dense(8, name, **params), Dense(2)], loss="mse", input_dim=4)
            )
            for params in (PARAMS[name], wrong)
        ]
        X = inputs(4, np.float32)
        (out,) = session(models[0].to_onnx()).run(None, {"input": X})
        with pytest.raises(AssertionError):
            assert_close(out, models[1].predict(X), 100 * RTOL[np.dtype(np.float32)])


# -- losses: the output activation that predict applies -----------------------------
LOSSES = ["mse", "squared_error", "mae", "huber", "poisson", "cross_entropy"]
LOSSES += ["binary_cross_entropy"]
# explicit: the last layer names the loss's output activation (fused in training,
# applied once by predict); otherwise predict applies it to the last layer's output
# all the same.
LOSS_CASES = [(loss, False) for loss in LOSSES] + [
    (loss, True) for loss in LOSSES if fastbp.losses.get_loss(loss).output_activation != "identity"
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss, explicit", LOSS_CASES)
def test_each_loss_output_activation(loss, explicit, dtype):
    output_activation = fastbp.losses.get_loss(loss).output_activation
    last = output_activation if explicit else None
    model = randomize(
        fastbp.Sequential([Dense(8, "tanh"), Dense(3, last)], loss=loss, dtype=dtype, input_dim=4)
    )
    proto = check_predict(model, inputs(4, dtype))
    ops = op_types(proto)
    op = {"softmax": "Softmax", "sigmoid": "Sigmoid", "exponential": "Exp"}
    for activation, op_type in op.items():
        assert ops.count(op_type) == (activation == output_activation)  # applied once
    if output_activation == "softmax":
        (out,) = session(proto).run(None, {"input": inputs(4, dtype)})
        np.testing.assert_allclose(out.sum(axis=1), 1, rtol=10 * RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_an_output_activation_after_a_residual_sum_is_applied_as_predict_applies_it(dtype):
    # The last layer's softmax cannot be fused across the residual sum: predict
    # applies it in the layer and then cross-entropy's softmax to the sum; so does
    # the graph.
    model = randomize(
        fastbp.Sequential(
            [Residual(Dense(3, "softmax"))], loss="cross_entropy", dtype=dtype, input_dim=3
        )
    )
    proto = check_predict(model, inputs(3, dtype))
    assert op_types(proto).count("Softmax") == 2


# -- residual blocks and dropout ------------------------------------------------------
RESIDUAL_MODELS = {
    "from_input": lambda: [Residual(Dense(5, "tanh")), Dense(2)],
    "two_from_input_in_a_row": lambda: [Residual(Dense(5)), Residual(Dense(5, "relu")), Dense(1)],
    "blocks_of_several_layers": lambda: [
        Dense(6, "relu"),
        Residual([Dense(6, "tanh"), Dropout(0.3), Dense(6, "elu", alpha=0.5)]),
        Residual(Dense(6, "gelu")),
        Dense(2, "sigmoid"),
    ],
    "the_last_layer": lambda: [Dense(5, "relu"), Residual(Dense(5))],
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", sorted(RESIDUAL_MODELS))
def test_residual_blocks(layout, dtype):
    layers = RESIDUAL_MODELS[layout]()
    model = randomize(fastbp.Sequential(layers, loss="mse", dtype=dtype, input_dim=5))
    gelu = layout == "blocks_of_several_layers"
    proto = check_predict(model, inputs(5, dtype), rtol=tolerance(dtype, float32=gelu))
    adds = [node for node in proto.graph.node if "residual" in node.name]
    assert len(adds) == sum(isinstance(layer, Residual) for layer in layers)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_is_omitted(dtype):
    layers = [
        Dropout(0.5),
        Dense(8, "relu"),
        Dropout(0.5),
        Residual([Dense(8, "relu"), Dropout(0.2), Dense(8)]),
        Dense(3, "softmax"),
    ]
    model = randomize(fastbp.Sequential(layers, dtype=dtype, input_dim=4))
    proto = check_predict(model, inputs(4, dtype))
    assert "Dropout" not in op_types(proto)
    assert op_types(proto).count("Gemm") == 4


def test_a_trained_model():
    X = inputs(4, np.float32, n=200)
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    model = fastbp.Sequential(
        [Dense(16, "relu"), Dropout(0.2), Dense(2, "softmax")],
        seed=0,
        optimizer=fastbp.Adam(lr=0.01),
    )
    model.fit(X, y, epochs=5, batch_size=16)
    check_predict(model, X)


# -- the graph's interface ----------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_graph_interface(dtype):
    model = randomize(fastbp.Sequential([Dense(4, "relu"), Dense(3)], dtype=dtype, input_dim=6))
    proto = model.to_onnx()
    assert [o.domain or "" for o in proto.opset_import] == [""]
    assert proto.opset_import[0].version == fastbp.onnx.OPSET == 17
    assert proto.ir_version == fastbp.onnx.IR_VERSION == 8
    assert proto.producer_name == "fastbp" and proto.producer_version == fastbp.__version__
    elem_type = onnx.TensorProto.DOUBLE if dtype == np.float64 else onnx.TensorProto.FLOAT
    for value, width in ((proto.graph.input[0], 6), (proto.graph.output[0], 3)):
        tensor = value.type.tensor_type
        assert tensor.elem_type == elem_type
        batch, features = tensor.shape.dim
        assert batch.dim_param == "batch" and not batch.HasField("dim_value")
        assert features.dim_value == width
    assert [v.name for v in proto.graph.input] == ["input"]
    assert [v.name for v in proto.graph.output] == ["output"]
    assert all(t.data_type == elem_type for t in proto.graph.initializer)


def test_the_names_are_the_callers():
    model = randomize(fastbp.Sequential([Dense(4, "relu"), Dense(3)], input_dim=6))
    X = inputs(6, np.float32)
    for names in (
        {"input_name": "features", "output_name": "scores"},
        # names the graph would give its own values: its own ones give way
        {"input_name": "dense0_weight", "output_name": "dense1_linear"},
    ):
        proto = check_predict(model, X, **names)
        run = session(proto)
        assert [v.name for v in run.get_inputs()] == [names["input_name"]]
        assert [v.name for v in run.get_outputs()] == [names["output_name"]]


def test_writing_a_file(tmp_path):
    model = randomize(fastbp.Sequential([Dense(4, "tanh"), Dense(2)], input_dim=3))
    for path in (tmp_path / "model.onnx", str(tmp_path / "again.onnx")):
        proto = model.to_onnx(path)
        assert onnx.load(path).SerializeToString() == proto.SerializeToString()
    assert sorted(os.listdir(tmp_path)) == ["again.onnx", "model.onnx"]  # no temporary left
    missing = tmp_path / "no such folder" / "model.onnx"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model.to_onnx(missing)
    assert not missing.parent.exists()


def test_importing_fastbp_imports_neither_onnx_nor_onnxruntime():
    code = (
        "import sys, fastbp, fastbp.onnx, fastbp.sklearn\n"
        "fastbp.Sequential([fastbp.Dense(2)], input_dim=3).predict([[1.0, 2.0, 3.0]])\n"
        "print('onnx' in sys.modules, 'onnxruntime' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),  # the installed fastbp, not the source tree's
    )
    assert result.stdout.split() == ["False", "False"]


# -- malformed models and bad arguments ---------------------------------------------
def test_an_unbuilt_model_is_refused():
    with pytest.raises(RuntimeError, match="no weights yet"):
        fastbp.Sequential([Dense(2)]).to_onnx()


def test_a_model_whose_layer_moved_is_refused():
    first = randomize(fastbp.Sequential([Dense(4, "relu"), Dense(2)], input_dim=3))
    fastbp.Sequential([first.layers[0], Dense(1)], input_dim=3)
    with pytest.raises(RuntimeError, match="moved to another model"):
        first.to_onnx()


@pytest.mark.parametrize(
    "layer, part, value", [(0, "weight", np.nan), (1, "bias", np.inf), (1, "weight", -np.inf)]
)
def test_a_non_finite_weight_is_refused(tmp_path, layer, part, value):
    model = randomize(fastbp.Sequential([Dense(4, "relu"), Dense(2)], input_dim=3))
    getattr(model.layers[layer], part).flat[1] = value
    path = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=f"Dense layer {layer} .* has a non-finite {part}"):
        model.to_onnx(path)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize(
    "names, error, match",
    [
        ({"input_name": ""}, ValueError, "input_name must be a non-empty string"),
        ({"input_name": 3}, TypeError, "input_name must be a string"),
        ({"output_name": None}, TypeError, "output_name must be a string"),
        ({"input_name": "x", "output_name": "x"}, ValueError, "names of their own"),
    ],
)
def test_bad_names_are_refused(names, error, match):
    model = fastbp.Sequential([Dense(2)], input_dim=3)
    with pytest.raises(error, match=match):
        model.to_onnx(**names)


def test_without_onnx_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'fastbp\[onnx\]'"):
        fastbp.Sequential([Dense(2)], input_dim=3).to_onnx()


# -- the scikit-learn estimators ----------------------------------------------------
@pytest.fixture
def sklearn_mlp():
    return pytest.importorskip("fastbp.sklearn")


def fitted(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: few iterations suffice here
        return estimator.fit(X, y)


def classification_targets(X, kind):
    first, second = X[:, 0] + 0.5 * X[:, 1] > 0, X[:, 1] - X[:, 2] > 0.3
    if kind == "binary_integers":
        return np.where(first, 2, -1)
    if kind == "binary_strings":
        return np.where(first, "yes", "no")
    if kind == "binary_booleans":
        return first
    if kind == "one_class":
        return np.full(X.shape[0], 7)
    if kind == "multiclass_strings":
        return np.array(["cat", "dog", "eel"])[first.astype(int) + second]
    if kind == "multiclass_integers":
        return (first + 2 * second).astype(int)
    assert kind == "multilabel"
    return np.c_[first, second, X[:, 3] > 0].astype(int)


CLASSIFICATION = ["binary_integers", "binary_strings", "binary_booleans", "one_class"]
CLASSIFICATION += ["multiclass_strings", "multiclass_integers", "multilabel"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", CLASSIFICATION)
def test_classifier(sklearn_mlp, kind, dtype):
    X = inputs(4, dtype, n=120)
    y = classification_targets(X, kind)
    clf = fitted(sklearn_mlp.MLPClassifier((8, 6), max_iter=30, random_state=0), X, y)
    assert clf.model_.dtype == dtype
    proto = clf.to_onnx()
    run = session(proto)
    assert [o.name for o in run.get_outputs()] == ["label", "probabilities"]
    for n in BATCHES:
        label, probabilities = run.run(None, {"input": X[:n]})
        expected = clf.predict_proba(X[:n])
        assert_close(probabilities, expected, tolerance(dtype))
        predicted = clf.predict(X[:n])
        # The labels agree exactly where no probability is within rounding of a tie
        # (with these seeds, none is).
        p = np.sort(expected, axis=1)
        margin = np.abs(p[:, -1] - p[:, -2]) if kind.startswith("multiclass") else None
        margin = np.abs(expected - 0.5) if margin is None else margin
        assert margin.min() > 1e-4
        assert label.shape == predicted.shape
        assert label.tolist() == predicted.tolist()
        if predicted.dtype.kind in "iub":
            assert label.dtype == (bool if predicted.dtype == bool else np.int64)


def test_classifier_after_its_coefficients_were_replaced(sklearn_mlp):
    X = inputs(4, np.float64, n=60)
    y = classification_targets(X, "multiclass_strings")
    clf = fitted(sklearn_mlp.MLPClassifier((5,), max_iter=20, random_state=0), X, y)
    clf.coefs_ = [2 * c for c in clf.coefs_]  # new arrays, as scikit-learn allows
    label, probabilities = session(clf.to_onnx()).run(None, {"input": X})
    assert_close(probabilities, clf.predict_proba(X), RTOL[np.dtype(np.float64)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "loss, n_outputs", [("squared_error", 1), ("squared_error", 3), ("poisson", 1), ("poisson", 2)]
)
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_regressor(sklearn_mlp, activation, loss, n_outputs, dtype):
    X = inputs(4, dtype, n=100)
    signal = X[:, :n_outputs] + 0.3 * X[:, 1:2]
    y = np.exp(0.5 * signal) if loss == "poisson" else signal
    y = y[:, 0] if n_outputs == 1 else y
    reg = fitted(
        sklearn_mlp.MLPRegressor(loss, (8,), activation, max_iter=20, random_state=0), X, y
    )
    run = session(reg.to_onnx(input_name="x"))
    assert [o.name for o in run.get_outputs()] == ["predictions"]
    for n in BATCHES:
        (predictions,) = run.run(None, {"x": X[:n]})
        assert_close(predictions, reg.predict(X[:n]), tolerance(dtype))


def test_estimator_errors(sklearn_mlp):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        sklearn_mlp.MLPClassifier().to_onnx()
    X = inputs(3, np.float64, n=40)
    clf = fitted(sklearn_mlp.MLPClassifier((4,), max_iter=5), X, X[:, 0] > 0)
    with pytest.raises(ValueError, match="names of their own"):
        clf.to_onnx(input_name="label")
    reg = fitted(sklearn_mlp.MLPRegressor(hidden_layer_sizes=(4,), max_iter=5), X, X[:, 0])
    with pytest.raises(ValueError, match="names of their own"):
        reg.to_onnx(input_name="predictions")
    reg.coefs_[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="Dense layer 1 .* non-finite weight"):
        reg.to_onnx()


def test_the_readme_example(tmp_path, monkeypatch):
    # The README's "Deploying with ONNX" snippet, after its "Example" (fewer epochs).
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()

    def snippet(section):
        text = readme.split(f"## {section}\n", 1)[1]
        return text.split("```python\n", 1)[1].split("```", 1)[0]

    example = snippet("Example").replace("epochs=50", "epochs=2")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(example + snippet("Deploying with ONNX"), namespace)
    model, X = namespace["model"], namespace["X"]
    assert_close(namespace["probabilities"], model.predict(X[:5]), RTOL[np.dtype(np.float32)])


@pytest.mark.parametrize("activation", ["leaky_relu", "elu", "gelu", "softplus"])
def test_estimators_with_fastbps_extras(sklearn_mlp, activation):
    # More activations, dropout (omitted from the graph) and float64 input trained in
    # float32: the graph takes float32, as model_ does.
    X = inputs(4, np.float64, n=90)
    options = {"activation": activation, "dropout": 0.2, "dtype": "float32"}
    options.update(max_iter=20, random_state=0)
    clf = fitted(sklearn_mlp.MLPClassifier((8, 8), **options), X, X[:, 0] - X[:, 1] > 0)
    reg = fitted(sklearn_mlp.MLPRegressor(hidden_layer_sizes=(8,), **options), X, X[:, :2])
    X32 = X.astype(np.float32)
    for estimator, expected in ((clf, clf.predict_proba(X)), (reg, reg.predict(X))):
        proto = estimator.to_onnx()
        assert "Dropout" not in op_types(proto)
        assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert_close(session(proto).run(None, {"input": X32})[-1], expected, RTOL[np.dtype("f")])
