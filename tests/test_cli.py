"""The command line as a user drives it: ``python -m fastbp ...`` on CSV files
written here. Round trips (train, predict, evaluate, info) for classification with
string labels and for regression, and every kind of bad input: one line on stderr
naming the file, row and column, a non-zero exit status, never a traceback."""

import csv
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import fastbp


def fastbp_cli(*args, cwd=None, check=None):
    """Run ``python -m fastbp ARGS``; returns the CompletedProcess. It runs outside
    the source tree (by default in the temporary folder), so that it imports the
    installed fastbp, compiled modules and all, as a user's shell would."""
    done = subprocess.run(
        [sys.executable, "-m", "fastbp", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or tempfile.gettempdir(),
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def fails(*args, status=1):
    """Run a command that must fail; returns its one line of error."""
    done = fastbp_cli(*args)
    assert done.returncode == status, done.stdout + done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1, done.stderr
    return errors[0]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def flowers(n=240, seed=0):
    """Three well-separated classes with string labels."""
    rng = np.random.default_rng(seed)
    names = np.array(["setosa", "versicolor", "virginica"])
    labels = rng.integers(0, 3, n)
    centers = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 4.0, -1.0]])
    X = centers[labels] + rng.normal(0, 0.5, (n, 3))
    return X, names[labels]


@pytest.fixture(scope="module")
def classification(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf")
    X, labels = flowers()
    rows = [[f"{a:.5f}", f"{b:.5f}", label, f"{c:.5f}"] for (a, b, c), label in zip(X, labels)]
    data = write_csv(folder / "flowers.csv", ["sepal", "petal", "species", "stem"], rows)
    model = folder / "flowers.npz"
    done = fastbp_cli(
        "train", data, "--target", "species", "--epochs", 15, "--hidden", "16",
        "--lr", 0.01, "--out", model, check=0,
    )  # fmt: skip
    return folder, data, model, done


@pytest.fixture(scope="module")
def regression(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reg")
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, (300, 2))
    price = 1000 + 200 * X[:, 0] - 100 * X[:, 1]  # large units: the target is scaled
    rows = [[f"{a:.5f}", f"{b:.5f}", f"{p:.4f}"] for (a, b), p in zip(X, price)]
    data = write_csv(folder / "houses.csv", ["size", "age", "price"], rows)
    model = folder / "houses.npz"
    done = fastbp_cli(
        "train", data, "--target", "price", "--epochs", 40, "--hidden", "16",
        "--lr", 0.01, "--out", model, check=0,
    )  # fmt: skip
    return folder, data, model, done


# -- round trips --------------------------------------------------------------------
def test_train_classification_with_string_labels(classification):
    folder, data, model, done = classification
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("training a classifier of 'species' (3 classes: setosa,")
    assert "240 rows, 3 features" in lines[0]
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == [f"epoch {i}/15" for i in range(1, 16)]
    assert "val_accuracy" in epoch_lines[-1]
    assert lines[-1].startswith("held out (48 rows): accuracy ")  # 20% of each class
    assert "samples/s" in lines[-1] and lines[-1].endswith(f"saved {model}")
    loaded = fastbp.load(model)
    section = loaded.preprocessing
    assert section["features"] == ["sepal", "petal", "stem"]  # the target's column skipped
    assert section["classes"] == ["setosa", "versicolor", "virginica"]
    assert section["task"] == "classification"
    assert section["metrics"]["accuracy"] > 0.9


def test_predict_writes_labels_and_probabilities(classification, tmp_path):
    folder, data, model, _ = classification
    out = tmp_path / "predictions.csv"
    done = fastbp_cli("predict", model, data, "--out", out, "--proba", check=0)
    assert done.stdout.strip() == f"wrote 240 predictions to {out}"
    with open(out) as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["species", "proba_setosa", "proba_versicolor", "proba_virginica"]
    assert len(rows) == 241
    with open(data) as file:
        truth = [row[2] for row in list(csv.reader(file))[1:]]
    predicted = [row[0] for row in rows[1:]]
    assert np.mean(np.array(predicted) == np.array(truth)) > 0.9
    probabilities = np.array([[float(v) for v in row[1:]] for row in rows[1:]])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert [row[0] for row in rows[1:]] == [
        ["setosa", "versicolor", "virginica"][k] for k in probabilities.argmax(axis=1)
    ]


def test_predict_to_stdout_equals_the_models_predictions(classification, tmp_path):
    folder, data, model, _ = classification
    # columns in another order, and without the target: matched by name
    X, labels = flowers(5, seed=7)
    rows = [[f"{c:.5f}", f"{a:.5f}", f"{b:.5f}"] for a, b, c in X]
    new = write_csv(tmp_path / "new.csv", ["stem", "sepal", "petal"], rows)
    done = fastbp_cli("predict", model, new, check=0)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "species"
    loaded = fastbp.load(model)
    section = loaded.preprocessing
    Xs = np.array([[float(r[1]), float(r[2]), float(r[0])] for r in rows], dtype=np.float32)
    Xs = (Xs - np.float32(section["mean"])) / np.float32(section["scale"])
    expected = np.array(section["classes"])[loaded.predict(Xs).argmax(axis=1)]
    assert lines[1:] == list(expected)


def test_evaluate_and_info(classification):
    folder, data, model, _ = classification
    done = fastbp_cli("evaluate", model, data, "--target", "species", check=0)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "flowers.csv: 240 rows"
    assert lines[1].split()[0] == "accuracy" and float(lines[1].split()[1]) > 0.9
    assert lines[2].split()[0] == "log_loss"
    done = fastbp_cli("info", model, check=0)
    text = done.stdout
    assert "Dense(16, activation='relu')" in text and "total parameters: 115" in text
    assert "features (3): sepal, petal, stem" in text
    assert "classes (3): setosa, versicolor, virginica" in text
    assert "epochs 15" in text and "batch_size 32" in text and "optimizer adam" in text
    assert "metrics: accuracy " in text
    assert f"trained with fastbp {fastbp.__version__}" in text


def test_regression_round_trip(regression, tmp_path):
    folder, data, model, done = regression
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("held out (60 rows): r2 ") and "mae" in last
    section = fastbp.load(model).preprocessing
    assert section["task"] == "regression" and section["classes"] is None
    assert section["target_scale"] > 100  # the target standardized, in the model file
    done = fastbp_cli("evaluate", model, data, check=0)
    metrics = dict(line.split() for line in done.stdout.strip().splitlines()[1:])
    assert float(metrics["r2"]) > 0.9
    out = tmp_path / "p.csv"
    fastbp_cli("predict", model, data, "--out", out, check=0)
    with open(out) as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["price"]
    with open(data) as file:
        truth = np.array([float(row[2]) for row in list(csv.reader(file))[1:]])
    predicted = np.array([float(row[0]) for row in rows[1:]])
    assert np.abs(predicted - truth).mean() < 0.2 * truth.std()  # in the data's units
    assert "proba" in fails("predict", model, data, "--proba")


def test_task_inference_and_override(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(60, 2))
    rows = [[f"{a:.4f}", f"{b:.4f}", int(a > 0) * 5 + 2] for a, b in X]  # labels 2 and 7
    data = write_csv(tmp_path / "ints.csv", ["a", "b", "label"], rows)
    out = tmp_path / "m.npz"
    common = ["--epochs", 2, "--hidden", 4, "--quiet", "--out", out]
    done = fastbp_cli("train", data, "--target", "label", *common, check=0)
    assert done.stdout.startswith("held out") and len(done.stdout.splitlines()) == 1
    assert fastbp.load(out).preprocessing["classes"] == ["2", "7"]
    fastbp_cli("train", data, "--target", "label", "--task", "regression", *common, check=0)
    assert fastbp.load(out).preprocessing["task"] == "regression"
    pred = tmp_path / "p.csv"
    fastbp_cli("train", data, "--target", "label", *common, check=0)
    fastbp_cli("predict", out, data, "--out", pred, check=0)
    assert set(pred.read_text().split()[1:]) <= {"2", "7"}


def test_missing_values_drop_and_impute(tmp_path):
    rows = [[i, (i * 7) % 5, "ab"[i % 2]] for i in range(40)]
    rows[3][1] = ""
    rows[10][0] = "NA"
    rows[20][2] = ""  # a missing target
    data = write_csv(tmp_path / "holes.csv", ["x", "z", "y"], rows)
    out = tmp_path / "m.npz"
    common = ["--epochs", 1, "--hidden", 4, "--out", out, "--validation-split", 0]
    line = fails("train", data, "--target", "y", *common)
    assert line == (
        f"fastbp train: error: {data}: row 4 (line 5), column 'z': a missing value (empty,"
        " NA or NaN); --missing drop or --missing impute handles such rows"
    )
    done = fastbp_cli("train", data, "--target", "y", *common, "--missing", "drop", check=0)
    assert "40 rows (3 with missing values dropped)" in done.stdout
    done = fastbp_cli("train", data, "--target", "y", *common, "--missing", "impute", check=0)
    assert "(1 with missing values dropped)" in done.stdout  # the missing target
    pred = tmp_path / "p.csv"
    line = fails("predict", out, data)
    assert "row 4 (line 5), column 'z': a missing value" in line
    fastbp_cli("predict", out, data, "--missing", "drop", "--out", pred, check=0)
    lines = pred.read_text().splitlines()
    assert lines[0] == "row,y" and len(lines) == 1 + 38
    assert [line.split(",")[0] for line in lines[1:5]] == ["1", "2", "3", "5"]
    fastbp_cli("predict", out, data, "--missing", "impute", "--out", pred, check=0)
    assert len(pred.read_text().splitlines()) == 41


def test_the_held_out_rows_and_their_in_place_split():
    from fastbp.cli import _held_out_last, _split

    # the rows a seed holds out (as before the split became in place)
    assert _split(20, 0.25, None, False, 3)[1].tolist() == [3, 8, 12, 16, 18]
    y = np.array([0, 1, 2] * 6 + [0, 0])
    assert _split(20, 0.25, y, True, 3)[1].tolist() == [1, 14, 16, 17, 18, 19]
    rng = np.random.default_rng(0)
    for n, fraction, block in [(1000, 0.2, 7), (1000, 0.5, 1 << 14), (33, 0.1, 1), (5, 0.4, 2)]:
        X = rng.normal(size=(n, 3)).astype(np.float32)
        train_rows, held_rows = _split(n, fraction, None, False, 1)
        expected = X[train_rows], X[held_rows]
        X_train, X_held = _held_out_last(X, train_rows, held_rows, block=block)
        assert np.shares_memory(X_train, X) and np.shares_memory(X_held, X)
        np.testing.assert_array_equal(X_train, expected[0])
        np.testing.assert_array_equal(X_held, expected[1])


# -- bad data: one line naming file, row and column ---------------------------------
@pytest.fixture
def good(tmp_path):
    rows = [[i, i % 3, "ab"[i % 2]] for i in range(20)]
    return write_csv(tmp_path / "good.csv", ["x", "z", "y"], rows)


def train_on(path, *extra):
    return fails("train", path, "--target", "y", "--epochs", 1, "--out", path.parent / "m", *extra)


def test_missing_target_column(good):
    line = train_on(good, "--target", "label")
    assert line == (
        f"fastbp train: error: {good}: no target column 'label'; the columns are 'x', 'z', 'y'"
    )


def test_non_numeric_feature(tmp_path):
    path = tmp_path / "text.csv"
    path.write_text("x,z,y\n1,2,a\n3,four,b\n")
    assert train_on(path) == (
        f"fastbp train: error: {path}: row 2 (line 3), column 'z': 'four' is not a number"
        " (features must be numeric)"
    )


@pytest.mark.parametrize(
    "text, problem",
    [
        ("x,z,y\n1,2,a\n3,4\n", "row 2 (line 3): 2 field(s) where the header has 3"),
        ("x,z,y\n1,2,a\n\n3,4,b,5\n", "row 2 (line 4): more fields than the 3 of the header"),
    ],
    ids=["short", "long"],
)
def test_ragged_rows(tmp_path, text, problem):
    path = tmp_path / "ragged.csv"
    path.write_text(text)
    line = train_on(path)
    assert line.startswith(f"fastbp train: error: {path}: {problem}")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "the file is empty (a CSV with a header line is expected)"),
        ("x,z,y\n", "no data rows after the header"),
    ],
    ids=["empty", "header-only"],
)
def test_empty_files(tmp_path, text, problem):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    assert train_on(path) == f"fastbp train: error: {path}: {problem}"


def test_nan_cell(tmp_path):
    path = tmp_path / "nan.csv"
    path.write_text("x,z,y\n1,2,a\n3,nan,b\n")
    assert "row 2 (line 3), column 'z': a missing value" in train_on(path)


def test_infinite_cell(tmp_path):
    path = tmp_path / "inf.csv"
    path.write_text("x,z,y\n1,2,a\n3,-inf,b\n")
    assert train_on(path).endswith("row 2 (line 3), column 'z': '-inf' is not a finite number")


def test_no_such_file_and_a_folder(tmp_path):
    assert train_on(tmp_path / "nothing.csv").endswith("nothing.csv: no such file")
    assert fails("info", tmp_path).endswith(": is a folder, not a model file")


def test_not_a_model_file(good, tmp_path):
    line = fails("info", good)
    assert line.startswith(f"fastbp info: error: {good} is not a")
    assert fails("predict", tmp_path / "none.npz", good).endswith("none.npz: no such model file")


def test_a_python_model_without_preprocessing(good, tmp_path):
    model = fastbp.Sequential([fastbp.Dense(1)], input_dim=2)
    path = model.save(tmp_path / "plain.npz")
    assert "was not trained by the command line" in fails("predict", path, good)
    done = fastbp_cli("info", path, check=0)
    assert "not trained by the command line" in done.stdout


def test_features_that_differ_from_training(classification, tmp_path):
    folder, data, model, _ = classification
    path = write_csv(tmp_path / "other.csv", ["sepal", "leaf", "extra"], [[1, 2, 3]])
    assert fails("predict", model, path) == (
        f"fastbp predict: error: {path}: the columns differ from the model's features: the"
        " file lacks the model's feature(s) 'petal', 'stem' and has column(s) the model was"
        " not trained on: 'leaf', 'extra'"
    )


def test_evaluate_with_an_unknown_class(classification, tmp_path):
    folder, data, model, _ = classification
    rows = [[1, 2, "setosa", 3], [1, 2, "rose", 3]]
    path = write_csv(tmp_path / "rose.csv", ["sepal", "petal", "species", "stem"], rows)
    assert fails("evaluate", model, path).endswith(
        "row 2 (line 3), column 'species': class 'rose' was not seen in training (the classes"
        " are 'setosa', 'versicolor', 'virginica')"
    )


def test_a_single_class_and_too_few_rows(tmp_path):
    path = write_csv(tmp_path / "one.csv", ["x", "y"], [[1, "a"], [2, "a"]])
    assert train_on(path).endswith(
        "column 'y' has a single class ('a'): classification needs at least two"
    )
    path = write_csv(tmp_path / "two.csv", ["x", "y"], [[1, 1.5], [2, 2.5]])
    assert "too few to hold out 20%" in train_on(path)


# -- arguments ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["demo", "--samples", "1"], "argument --samples: expected at least 20 samples, got '1'"),
        (["demo", "--epochs", "0"], "argument --epochs: expected a whole number >= 1, got '0'"),
        (["train", "d.csv", "--target", "y", "--out", "m", "--hidden", "6,x"], "--hidden"),
        (["train", "d.csv", "--target", "y", "--out", "m", "--lr", "-1"], "number > 0"),
        (["train", "d.csv", "--target", "y", "--out", "m", "--activation", "nope"], "nope"),
        (["train", "d.csv", "--out", "m"], "the following arguments are required: --target"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_arguments_give_one_line(args, message):
    line = fails(*args, status=2)
    assert message in line and line.startswith("fastbp") and "--help" in line


def test_every_command_has_help_with_an_example():
    for command in ["train", "predict", "evaluate", "info", "export", "demo", "bench"]:
        done = fastbp_cli(command, "--help", check=0)
        assert "example:" in done.stdout and f"fastbp {command}" in done.stdout
    done = fastbp_cli("--version", check=0)
    assert done.stdout.strip() == f"fastbp {fastbp.__version__}"


def test_fastbp_demo_alias_gives_one_line_errors():
    from fastbp import cli

    assert cli.demo_main(["--samples", "1"]) == 2


def test_export_onnx(classification, tmp_path):
    folder, data, model, _ = classification
    if not hasattr(fastbp.Sequential, "to_onnx"):
        line = fails("export", model, "--onnx", tmp_path / "m.onnx")
        assert "onnx" in line
        pytest.skip("this fastbp has no Sequential.to_onnx")
    pytest.importorskip("onnx")
    done = fastbp_cli("export", model, "--onnx", tmp_path / "m.onnx", check=0)
    assert (tmp_path / "m.onnx").stat().st_size > 0 and "wrote" in done.stdout


def test_bench_quick(tmp_path):
    pytest.importorskip("matplotlib")
    chart = tmp_path / "bench.png"
    done = fastbp_cli("bench", "--quick", "--repeats", 1, "--chart", chart, check=0)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 1 and "x)" in rows[0]  # a ratio against NumPy by hand
    assert "| network | batch | fastbp | numpy" in done.stdout
    assert chart.stat().st_size > 1000
