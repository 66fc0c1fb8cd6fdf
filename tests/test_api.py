"""The hand-written layer, loss and activation API; codes shared with the compiled
module; the import and the demo."""
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastbp
from fastbp import _reference, activations, losses, optimizers
from fastbp._backend import core


def test_python_codes_mirror_compiled_codes():
    assert activations.ACTIVATIONS == core().ACTIVATION_CODES
    assert core().LOSS_CODES == {"mse": losses.LOSS_MSE, "cross_entropy_labels": losses.LOSS_CE_LABELS,
                                 "cross_entropy": losses.LOSS_CE_SOFT,
                                 "binary_cross_entropy": losses.LOSS_BCE, "mae": losses.LOSS_MAE,
                                 "huber": losses.LOSS_HUBER, "poisson": losses.LOSS_POISSON}
    assert core().OPTIMIZER_CODES == {"sgd": optimizers.OPT_SGD, "adam": optimizers.OPT_ADAM,
                                      "rmsprop": optimizers.OPT_RMSPROP,
                                      "adagrad": optimizers.OPT_ADAGRAD}
    assert core().HYPERPARAMETERS == optimizers.HYPERPARAMETERS


def test_dense_forward_backward_by_hand():
    rng = np.random.default_rng(0)
    layer = fastbp.Dense(3, "tanh")
    x = rng.normal(size=(4, 5))
    out = layer.forward(x)  # builds with float64 from x
    assert layer.weight.shape == (5, 3) and layer.bias.shape == (3,)
    assert layer.weight.dtype == np.float64
    weights = [(layer.weight.copy(), layer.bias.copy())]
    np.testing.assert_allclose(out, _reference.forward(weights, ["tanh"], x)[0], rtol=1e-13)
    grad_out = rng.normal(size=(4, 3))
    grad_in = layer.backward(grad_out)
    [(grad_weight, grad_bias)], expected_in = _reference.backward(weights, ["tanh"], x, grad_out)
    np.testing.assert_allclose(layer.grad_weight, grad_weight, rtol=1e-12)
    np.testing.assert_allclose(layer.grad_bias, grad_bias, rtol=1e-12)
    np.testing.assert_allclose(grad_in, expected_in, rtol=1e-12)
    assert layer.params[0] is layer.weight and layer.grads[1] is layer.grad_bias


def test_dense_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="forward"):
        fastbp.Dense(2).backward(np.ones((1, 2)))


def test_dense_float32_input_builds_float32():
    layer = fastbp.Dense(2, "relu")
    out = layer.forward(np.ones((3, 4), dtype=np.float32))
    assert out.dtype == np.float32 and layer.weight.dtype == np.float32


def test_dense_default_initializers_by_activation():
    relu = fastbp.Dense(200, "relu").build(100, np.random.default_rng(0), np.float64)
    tanh = fastbp.Dense(200, "tanh").build(100, np.random.default_rng(0), np.float64)
    # He uniform: limit sqrt(6 / 100); Glorot uniform: limit sqrt(6 / 300).
    assert np.abs(relu.weight).max() == pytest.approx(np.sqrt(6 / 100), rel=0.01)
    assert np.abs(tanh.weight).max() == pytest.approx(np.sqrt(6 / 300), rel=0.01)
    assert np.all(relu.bias == 0)


def test_manual_cross_entropy_loss():
    z = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 5.0]])
    y = np.array([0, 1])
    loss = fastbp.CrossEntropy()
    value = loss.forward(z, y)
    expected_value, expected = _reference.loss_and_delta("cross_entropy", z, y)
    assert value == pytest.approx(expected_value, rel=1e-14)
    np.testing.assert_allclose(loss.backward(), expected, rtol=1e-13)
    assert loss(z, y) == value


def test_manual_loss_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="forward"):
        fastbp.MSE().backward()


def test_activation_helpers():
    z = np.array([[-2.0, 0.5, 3.0]])
    np.testing.assert_allclose(activations.apply(z, "sigmoid"),
                               _reference.activate("sigmoid", z), rtol=1e-14)
    np.testing.assert_allclose(activations.apply(z, "leaky_relu", 0.2), [[-0.4, 0.5, 3.0]])
    np.testing.assert_allclose(activations.apply(z, None), z)
    a = activations.apply(z, "tanh")
    np.testing.assert_allclose(activations.derivative(a, np.ones_like(a), "tanh"),
                               _reference.activation_backward("tanh", z, a, np.ones_like(a)),
                               rtol=1e-14)
    with pytest.raises(ValueError, match="unknown activation"):
        activations.apply(z, "swish")


def test_names_and_instances_accepted():
    assert isinstance(losses.get_loss("MSE"), fastbp.MSE)
    assert isinstance(losses.get_loss(fastbp.CrossEntropy), fastbp.CrossEntropy)
    assert isinstance(losses.get_loss("binary_cross_entropy"), fastbp.BinaryCrossEntropy)
    adam = fastbp.Adam()
    assert optimizers.get_optimizer(adam) is adam
    assert fastbp.Dense(2, "linear").activation == "identity"


def test_default_loss_inferred_from_last_activation():
    assert fastbp.Sequential([fastbp.Dense(3, "softmax")], input_dim=2).loss.name == "cross_entropy"
    assert fastbp.Sequential([fastbp.Dense(1, "sigmoid")], input_dim=2).loss.name \
        == "binary_cross_entropy"
    assert fastbp.Sequential([fastbp.Dense(1)], input_dim=2).loss.name == "mse"


def run_python(code):
    # Outside the source tree, so that the installed fastbp is imported.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=tempfile.gettempdir()).stdout


def test_import_loads_no_optional_package_and_no_scipy_linalg():
    out = run_python(
        "import sys, fastbp\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'tqdm', 'scipy.linalg',"
        " 'fastbp._core') if m in sys.modules))")
    assert out.strip() == "[]"


def test_demo_runs():
    done = subprocess.run([sys.executable, "-m", "fastbp", "--epochs", "3", "--samples", "100"],
                          capture_output=True, text=True, check=True, cwd="/")
    assert "test accuracy" in done.stdout and "R^2" in done.stdout
    assert "epoch 3/3" in done.stdout + done.stderr  # progress, by line or by bar


def test_first_model_leaves_scipy_linalg_unimported_and_intact():
    out = run_python(
        "import sys, numpy as np, fastbp\n"
        "m = fastbp.Sequential([fastbp.Dense(1)], loss='mse', input_dim=2)\n"
        "m.fit(np.ones((4, 2)), np.ones(4))\n"
        "print('scipy.linalg' in sys.modules)\n"
        "import scipy.linalg, scipy.linalg.cython_blas\n"
        "print(scipy.linalg.cython_blas is sys.modules['scipy.linalg.cython_blas'])\n"
        "print(scipy.linalg.solve(2 * np.eye(2), np.ones(2)).tolist())\n"
        "m.fit(np.ones((4, 2)), np.ones(4)); print(m.predict(np.ones((1, 2))).shape)\n")
    assert out.split("\n")[:4] == ["False", "True", "[0.5, 0.5]", "(1, 1)"]


def test_works_when_scipy_linalg_is_imported_first():
    out = run_python(
        "import scipy.linalg, numpy as np, fastbp\n"
        "m = fastbp.Sequential([fastbp.Dense(2)], loss='cross_entropy', input_dim=3, seed=0)\n"
        "m.fit(np.eye(3)[:2], np.array([0, 1]), epochs=50)\n"
        "print(m.predict_classes(np.eye(3)[:2]).tolist())\n")
    assert out.strip() == "[0, 1]"


def test_type_stub_matches_the_compiled_module():
    import inspect
    import pathlib
    import re

    stub = (pathlib.Path(fastbp.__file__).parent / "_core.pyi").read_text()
    stubbed = set(re.findall(r"^def (\w+)", stub, re.M))
    compiled = {name for name, value in vars(core()).items()
                if not name.startswith("_") and callable(value) and not inspect.isclass(value)}
    assert stubbed == compiled
