"""Across modules: the codes shared with the compiled module, names and instances
accepted for losses, optimizers and activations; the import and the demo."""

import subprocess
import sys
import tempfile

import pytest

import fastbp
from fastbp import activations, losses, optimizers
from fastbp._backend import core


def test_python_codes_mirror_compiled_codes():
    assert activations.ACTIVATIONS == core().ACTIVATION_CODES
    assert core().LOSS_CODES == {
        "mse": losses.LOSS_MSE,
        "cross_entropy_labels": losses.LOSS_CE_LABELS,
        "cross_entropy": losses.LOSS_CE_SOFT,
        "binary_cross_entropy": losses.LOSS_BCE,
        "mae": losses.LOSS_MAE,
        "huber": losses.LOSS_HUBER,
        "poisson": losses.LOSS_POISSON,
    }
    assert core().OPTIMIZER_CODES == {
        "sgd": optimizers.OPT_SGD,
        "adam": optimizers.OPT_ADAM,
        "rmsprop": optimizers.OPT_RMSPROP,
        "adagrad": optimizers.OPT_ADAGRAD,
    }


def test_struct_field_names_equal_the_compiled_ones():
    # Cython checks each field's type and position at every call, not its name: a
    # renamed or swapped field of the same type would pass silently without this.
    from fastbp import _codes

    compiled = core().struct_dtypes()
    assert (
        set(compiled)
        == set(_codes.STRUCTS)
        == {"LayerPlan", "NetPlan", "OptimizerConfig", "BatchStats"}
    )
    for name, dtype in _codes.STRUCTS.items():
        assert compiled[name].names == dtype.names, name
        assert compiled[name].itemsize == dtype.itemsize, name
        for field in dtype.names:
            assert compiled[name].fields[field][1] == dtype.fields[field][1], (name, field)


def test_names_and_instances_accepted():
    assert isinstance(losses.get_loss("MSE"), fastbp.MSE)
    assert isinstance(losses.get_loss(fastbp.CrossEntropy), fastbp.CrossEntropy)
    assert isinstance(losses.get_loss("binary_cross_entropy"), fastbp.BinaryCrossEntropy)
    adam = fastbp.Adam()
    assert optimizers.get_optimizer(adam) is adam
    assert fastbp.Dense(2, "linear").activation == "identity"


def run_python(code):
    # Outside the source tree, so that the installed fastbp is imported.
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    ).stdout


def test_import_loads_no_optional_package_and_no_scipy_linalg():
    out = run_python(
        "import sys, fastbp\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'tqdm', 'scipy.linalg',"
        " 'fastbp._core') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_demo_runs():
    done = subprocess.run(
        [sys.executable, "-m", "fastbp", "demo", "--epochs", "3", "--samples", "100"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    )
    assert "test accuracy" in done.stdout and "R^2" in done.stdout
    assert "samples/s" in done.stdout
    assert len(done.stdout.splitlines()) < 20  # a short story, not a line per epoch


def test_first_model_leaves_scipy_linalg_unimported_and_intact():
    out = run_python(
        "import sys, numpy as np, fastbp\n"
        "m = fastbp.Sequential([fastbp.Dense(1)], loss='mse', input_dim=2)\n"
        "m.fit(np.ones((4, 2)), np.ones(4))\n"
        "print('scipy.linalg' in sys.modules)\n"
        "import scipy.linalg, scipy.linalg.cython_blas\n"
        "print(scipy.linalg.cython_blas is sys.modules['scipy.linalg.cython_blas'])\n"
        "print(scipy.linalg.solve(2 * np.eye(2), np.ones(2)).tolist())\n"
        "m.fit(np.ones((4, 2)), np.ones(4)); print(m.predict(np.ones((1, 2))).shape)\n"
    )
    assert out.split("\n")[:4] == ["False", "True", "[0.5, 0.5]", "(1, 1)"]


def test_works_when_scipy_linalg_is_imported_first():
    out = run_python(
        "import scipy.linalg, numpy as np, fastbp\n"
        "m = fastbp.Sequential([fastbp.Dense(2)], loss='cross_entropy', input_dim=3, seed=0)\n"
        "m.fit(np.eye(3)[:2], np.array([0, 1]), epochs=50)\n"
        "print(m.predict_classes(np.eye(3)[:2]).tolist())\n"
    )
    assert out.strip() == "[0, 1]"


def test_type_stub_matches_the_compiled_module():
    import inspect
    import pathlib
    import re

    stub = (pathlib.Path(fastbp.__file__).parent / "_core.pyi").read_text()
    stubbed = set(re.findall(r"^def (\w+)", stub, re.M))
    compiled = {
        name
        for name, value in vars(core()).items()
        if not name.startswith("_") and callable(value) and not inspect.isclass(value)
    }
    assert stubbed == compiled


def test_the_compiled_module_refuses_codes_other_than_the_python_list(monkeypatch):
    from fastbp import _codes

    core()._check_codes()  # agrees as built
    swapped = dict(
        _codes.ACTIVATIONS, tanh=_codes.ACTIVATIONS["relu"], relu=_codes.ACTIVATIONS["tanh"]
    )
    monkeypatch.setattr(_codes, "ACTIVATIONS", swapped)
    with pytest.raises(ImportError, match="activations codes"):
        core()._check_codes()


def test_version_in_one_place():
    import importlib.metadata

    assert fastbp.__version__ == importlib.metadata.version("fastbp")
    result = subprocess.run(
        [sys.executable, "-m", "fastbp", "--version"],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        check=True,
    )
    assert result.stdout.strip() == f"fastbp {fastbp.__version__}"
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts["fastbp"] == "fastbp.cli:main"
    assert scripts["fastbp-demo"] == "fastbp.cli:demo_main"


def test_the_typed_readme_examples_run():
    """tests/typing/readme_examples.py is what .ci/typing checks with mypy --strict;
    here it runs, so that it stays a true program."""
    import pathlib

    script = pathlib.Path(__file__).parent / "typing" / "readme_examples.py"
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout
