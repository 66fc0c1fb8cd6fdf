"""The file fuzzer: every corrupted or hostile model file is refused with
ModelFileError, or loads into a model that trains and predicts; loading allocates a
small multiple of the file's size at most.

The cases (tests/_filefuzz.py) come from a fixed seed (FASTBP_FUZZ_SEED changes it).
FASTBP_FUZZ_CASES sets their number (default 2000, a few seconds):
``FASTBP_FUZZ_CASES=100000 pytest tests/test_persistence_fuzz.py`` is the long run.
"""

import collections
import io
import json
import os
import pathlib
import tracemalloc
import zipfile

import numpy as np
import pytest
from _filefuzz import KINDS, _npy, _rezip, _savez, cases

import fastbp

N_CASES = int(os.environ.get("FASTBP_FUZZ_CASES", "2000"))
SEED = int(os.environ.get("FASTBP_FUZZ_SEED", "20240610"))


def _models():
    """Small trained models covering every layer, loss family and optimizer."""
    return [
        fastbp.Sequential(
            [fastbp.Dense(7, "leaky_relu", negative_slope=0.05), fastbp.Dense(3, "softmax")],
            optimizer=fastbp.Adam(lr=0.01, betas=(0.8, 0.99), eps_uncorrected=True),
            seed=3,
        ),
        fastbp.Sequential(
            [
                fastbp.Dense(
                    4, "tanh", kernel_regularizer=fastbp.regularizers.L2(0.01, per_sample=True)
                ),
                fastbp.Dropout(0.2),
                fastbp.Residual([fastbp.Dense(4, "relu"), fastbp.Dropout(0.1), fastbp.Dense(4)]),
                fastbp.Dense(2),
            ],
            loss=fastbp.losses.Huber(0.5, reduction="sum_outputs"),
            optimizer=fastbp.SGD(lr=0.05, momentum=0.9, nesterov=True),
            dtype="float64",
            threads=1,
            seed=4,
        ),
        fastbp.Sequential(
            [_frozen(fastbp.Dense(5, "elu", init=0.1)), fastbp.Dense(2, "sigmoid")],
            optimizer=fastbp.RMSProp(momentum=0.5, centered=True, clipnorm=1.0),
            seed=5,
        ),
        fastbp.Sequential(
            [fastbp.Dropout(0.1), fastbp.Dense(3, "softplus"), fastbp.Dense(1, "exponential")],
            loss=fastbp.losses.Poisson(half_deviance=True),
            optimizer=fastbp.Adagrad(lr=0.05),
            seed=6,
        ),
    ]


def _frozen(layer):
    layer.trainable = False
    return layer


def _data(model, n=24):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, model.input_dim))
    k, name = model.n_outputs, model.loss.name
    if name == "cross_entropy":
        y = np.arange(n) % k
    elif name == "binary_cross_entropy":
        y = (rng.random((n, k)) < 0.5).astype(float)
    elif name == "poisson":
        y = rng.poisson(1.0, (n, k)).astype(float)
    else:
        y = rng.normal(size=(n, k))
    return X, y


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    files = []
    for i, model in enumerate(_models()):
        model.build(3)
        model.fit(*_data(model), epochs=2, batch_size=8)
        files.append(pathlib.Path(model.save(folder / f"m{i}")).read_bytes())
    return files


def outcome(path):
    """What loading ``path`` gives: "refused" (ModelFileError), or a model that trains
    one epoch and predicts: "loaded"; "diverged" when the file's hyperparameters or
    weights make training diverge (fit says so with FloatingPointError, as for the
    same model built by hand); "overflow" when its predictions overflow (an absurd
    value the constructors accept, such as a learning rate of 1e19, gives huge
    weights). Anything else raises."""
    try:
        model = fastbp.load(path)
    except fastbp.ModelFileError:
        return "refused"
    X, y = _data(model)
    result = "loaded"
    try:
        model.fit(X, y, epochs=1, batch_size=8)
    except FloatingPointError as exc:
        assert "diverged" in str(exc) or "not finite or too large" in str(exc)
        result = "diverged"
    out = model.predict(X)
    assert out.shape == (len(X), model.n_outputs) and out.dtype == model.dtype
    return result if np.isfinite(out).all() else "overflow"


@pytest.mark.filterwarnings("error")  # an overflow warning while loading is a finding
def test_corrupted_files_are_refused_or_load_into_a_working_model(originals, tmp_path):
    path = tmp_path / "case.npz"
    counts, failures = collections.Counter(), []
    for i, (kind, description, data) in enumerate(cases(SEED, N_CASES, originals)):
        path.write_bytes(data)
        try:
            counts[kind, outcome(path)] += 1
        except Exception as exc:  # every other outcome is a finding
            failures.append(f"case {i} ({kind}: {description}): {type(exc).__name__}: {exc}")
    print(dict(sorted(counts.items())))
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])
    # The fuzzer reached every kind, and the edits that keep a file valid (a value
    # changed within range) exercised training and prediction of loaded models.
    for kind in KINDS:
        assert counts[kind, "refused"] > 0
    assert counts["json", "loaded"] > 0 and counts["header", "loaded"] > 0


def test_the_original_files_load_and_train(originals, tmp_path):
    for data in originals:
        (tmp_path / "m.npz").write_bytes(data)
        assert outcome(tmp_path / "m.npz") == "loaded"


# -- the memory bound ------------------------------------------------------------------
def _peak_while_loading(path):
    """The peak of traced memory (NumPy's buffers included) while ``load(path)``
    runs, and its outcome."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            fastbp.load(path)
            result = "loaded"
        except fastbp.ModelFileError as exc:
            result = str(exc)
        return tracemalloc.get_traced_memory()[1] - base, result
    finally:
        tracemalloc.stop()


# Loading needs a few copies of the arrays (read, then the model's buffers), zipfile's
# objects for the archive's directory (about 6 times its size) and a fixed overhead
# (the model objects, the compiled plan).
def _bound(size):
    return 8 * size + 256 * 1024


def _edit(data, update):
    arrays = _arrays_of(data)
    config = json.loads(str(arrays["config"]))
    update(config)
    arrays["config"] = np.array(json.dumps(config))
    return _savez(arrays)


def _arrays_of(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def test_a_file_claiming_huge_widths_is_refused_before_allocating(originals, tmp_path):
    """The first original with its hidden layer 5000 wide and 5000 inputs: 25 million
    weights (the old load allocated their buffers, ~400 MB, before comparing them
    with the 60 stored), in a file of a few kilobytes."""

    def widen(config):
        config["input_dim"] = 5000
        config["layers"][0]["config"].update(units=5000, input_dim=5000)
        config["layers"][1]["config"].update(input_dim=5000)

    path = tmp_path / "wide.npz"
    path.write_bytes(_edit(originals[0], widen))
    peak, result = _peak_while_loading(path)
    assert "params" in result and "does not fit the architecture" in result
    assert peak < _bound(path.stat().st_size)


@pytest.mark.parametrize(
    "member,header",
    [
        ("params", "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"),
        ("optimizer_state", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2**40), }"),
        ("config", "{'descr': '<U99999999', 'fortran_order': False, 'shape': (), }"),
    ],
)
def test_an_array_header_claiming_a_huge_array_is_refused_before_reading(
    originals, tmp_path, member, header
):
    arrays = _arrays_of(originals[0])
    members = {f"{key}.npy": _npy(value) for key, value in arrays.items()}
    members[f"{member}.npy"] = _npy(arrays[member], header.replace("2**40", str(2**40)))
    path = tmp_path / "huge.npz"
    path.write_bytes(_rezip(members))
    peak, result = _peak_while_loading(path)
    assert f"{member}.npy declares an array of" in result
    assert peak < _bound(path.stat().st_size)


def test_deflated_arrays_inflating_far_beyond_the_file_are_refused(originals, tmp_path):
    """A zip bomb: a consistent model 3000 wide whose 9 million weights and their
    Adam moments are zeros, deflated 1000 times smaller."""
    arrays = _arrays_of(originals[0])
    config = json.loads(str(arrays["config"]))
    config["input_dim"] = 3000
    config["layers"][0]["config"].update(units=3000, input_dim=3000)
    config["layers"][1]["config"].update(input_dim=3000)
    n_params = 3000 * 3000 + 3000 + 3000 * 3 + 3
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        config=np.array(json.dumps(config)),
        params=np.zeros(n_params, dtype=np.float32),
        optimizer_state=np.zeros((2, n_params), dtype=np.float32),
    )
    path = tmp_path / "bomb.npz"
    path.write_bytes(buffer.getvalue())
    assert path.stat().st_size * 100 < 3 * 4 * n_params  # the arrays' bytes
    peak, result = _peak_while_loading(path)
    assert "more than 8 times the file's" in result
    assert peak < _bound(path.stat().st_size)


def test_numpy_variants_of_a_model_file_load_the_same(originals, tmp_path):
    """What NumPy may write besides savez's own: deflated members
    (savez_compressed), big-endian arrays, Fortran order, .npy version 2.0."""
    (tmp_path / "m.npz").write_bytes(originals[1])
    model = fastbp.load(tmp_path / "m.npz")
    X, _ = _data(model)
    arrays = _arrays_of(originals[1])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    variants = {"deflated": buffer.getvalue()}
    members = {f"{key}.npy": _npy(value) for key, value in arrays.items()}
    variants["big-endian"] = _rezip({**members, "params.npy": _npy(arrays["params"].astype(">f8"))})
    variants["Fortran order"] = _rezip(
        {**members, "optimizer_state.npy": _npy(np.asfortranarray(arrays["optimizer_state"]))}
    )
    variants["version 2.0"] = _rezip(
        {**members, "config.npy": _npy(arrays["config"], version=(2, 0))}
    )
    for name, data in variants.items():
        (tmp_path / "v.npz").write_bytes(data)
        loaded = fastbp.load(tmp_path / "v.npz")
        np.testing.assert_array_equal(loaded.flat_params, model.flat_params, err_msg=name)
        np.testing.assert_array_equal(
            loaded.optimizer_state.rows, model.optimizer_state.rows, err_msg=name
        )
        np.testing.assert_array_equal(loaded.predict(X), model.predict(X), err_msg=name)


def test_a_valid_file_loads_within_the_bound(tmp_path):
    model = fastbp.Sequential(
        [fastbp.Dense(300, "relu"), fastbp.Dense(300, "relu"), fastbp.Dense(3, "softmax")],
        input_dim=20,
        seed=0,
    )
    path = model.save(tmp_path / "m")
    peak, result = _peak_while_loading(path)
    assert result == "loaded" and peak < _bound(os.path.getsize(path))


def test_an_archive_of_many_members_loads_within_the_bound(originals, tmp_path):
    """5,000 empty members beside the model's three: zipfile's directory objects are
    the largest allocation."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(5_000):
            archive.writestr(f"{i}", b"")
        for key, value in _arrays_of(originals[0]).items():
            archive.writestr(f"{key}.npy", _npy(value))
    path = tmp_path / "many.npz"
    path.write_bytes(buffer.getvalue())
    peak, result = _peak_while_loading(path)
    assert result == "loaded" and peak < _bound(path.stat().st_size)
