"""model.save / fastbp.load: exact round trips, atomic writes, refusal of bad files."""

import json
import os
import pathlib
import re
import zipfile

import numpy as np
import pytest

import fastbp


@pytest.fixture
def trained():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 5)), rng.integers(0, 3, 60)
    model = fastbp.Sequential(
        [fastbp.Dense(7, "leaky_relu", negative_slope=0.05), fastbp.Dense(3, "softmax")],
        optimizer=fastbp.Adam(lr=0.01, betas=(0.8, 0.99)),
        seed=3,
    )
    model.fit(X, y, epochs=4, batch_size=16, validation_data=(X[:10], y[:10]))
    return model, X, y


def test_round_trip_is_exact(trained, tmp_path):
    model, X, y = trained
    path = model.save(tmp_path / "model")
    assert path.endswith("model.npz") and os.path.exists(path)
    loaded = fastbp.load(path)
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.history.history == model.history.history
    assert loaded.optimizer_state.step == model.optimizer_state.step == 16
    assert loaded.optimizer.betas == (0.8, 0.99) and loaded.layers[0].negative_slope == 0.05
    assert loaded.flat_params.dtype == np.float32 and loaded.loss.name == "cross_entropy"
    # Training goes on exactly as it would have: optimizer state and shuffling included.
    model.fit(X, y, epochs=2, batch_size=16)
    loaded.fit(X, y, epochs=2, batch_size=16)
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)
    assert loaded.history.epoch == model.history.epoch == list(range(6))


@pytest.mark.parametrize(
    "optimizer", [fastbp.SGD(lr=0.1, momentum=0.9, nesterov=True), fastbp.SGD(lr=0.1)]
)
def test_round_trip_float64_sgd(optimizer, tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(30, 2)), rng.normal(size=30)
    model = fastbp.Sequential(
        [fastbp.Dense(4, "tanh"), fastbp.Dense(1)],
        loss="mse",
        optimizer=optimizer,
        dtype="float64",
        seed=0,
    )
    model.fit(X, y, epochs=2, batch_size=8)
    loaded = fastbp.load(model.save(tmp_path / "m.npz"))
    assert loaded.flat_params.dtype == np.float64
    model.fit(X, y, epochs=1, batch_size=8)
    loaded.fit(X, y, epochs=1, batch_size=8)
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)


@pytest.mark.parametrize(
    "loss,optimizer",
    [
        (fastbp.losses.Huber(0.5, reduction="sum_outputs"), fastbp.Adam(eps_uncorrected=True)),
        (fastbp.losses.Poisson(half_deviance=True), fastbp.SGD(lr=0.01)),
        ("squared_error", fastbp.AdamW(clipnorm=1.0, clipvalue=0.5)),
    ],
    ids=["huber-sum_outputs", "poisson-half_deviance", "squared_error"],
)
def test_every_loss_and_optimizer_option_round_trips(loss, optimizer, tmp_path):
    """Each field of the configuration schema that a model can hold (the options that
    get_config writes only when set included) survives save and load."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(30, 3)), rng.poisson(1.0, size=(30, 2)).astype(float)
    penalty = fastbp.regularizers.L1L2(0.01, 0.02, per_sample=True)
    model = fastbp.Sequential(
        [fastbp.Dense(4, "tanh", kernel_regularizer=penalty), fastbp.Dense(2)],
        loss=loss,
        optimizer=optimizer,
        seed=0,
    )
    model.fit(X, y, epochs=2, batch_size=8)
    loaded = fastbp.load(model.save(tmp_path / "m"))
    assert loaded.get_config() == model.get_config()
    model.fit(X, y, epochs=1, batch_size=8)
    loaded.fit(X, y, epochs=1, batch_size=8)
    np.testing.assert_array_equal(loaded.flat_params, model.flat_params)


def test_save_is_atomic_and_leaves_no_temporary(trained, tmp_path, monkeypatch):
    model, X, _ = trained
    path = model.save(tmp_path / "m.npz")
    before = open(path, "rb").read()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert open(path, "rb").read() == before  # the old file is untouched
    assert os.listdir(tmp_path) == ["m.npz"]


def test_unbuilt_model_cannot_be_saved(tmp_path):
    with pytest.raises(RuntimeError, match="no weights"):
        fastbp.Sequential([fastbp.Dense(1)]).save(tmp_path / "m.npz")


def rewrite(path, change):
    """Rewrite a saved model with ``change(arrays)`` applied to its arrays."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    change(arrays)
    np.savez(path, **arrays)


def edit_config(update):
    def change(arrays):
        config = json.loads(str(arrays["config"]))
        update(config)
        arrays["config"] = np.array(json.dumps(config))

    return change


@pytest.mark.parametrize(
    "change,message",
    [
        (edit_config(lambda c: c.update(format="something-else")), "not a fastbp model"),
        (edit_config(lambda c: c.update(format_version=99)), "upgrade fastbp"),
        (
            edit_config(lambda c: c["layers"][0]["config"].update(activation="swish")),
            "unknown activation",
        ),
        (edit_config(lambda c: c["layers"][0]["config"].update(units=8)), "inconsistent"),
        (edit_config(lambda c: c["optimizer"].update({"class": "Evil"})), "unknown optimizer"),
        (edit_config(lambda c: c["layers"][0].update({"class": "os.system"})), "unknown layer"),
        (edit_config(lambda c: c.update(dtype="int64")), "dtype"),
        (lambda a: a.update(config=np.array("{not json")), "corrupt config"),
        (lambda a: a.pop("params"), "lacks"),
        (lambda a: a.update(params=a["params"][:-1]), "params.*does not fit"),
        (lambda a: a["params"].__setitem__(0, np.nan), "NaN"),
        (lambda a: a["optimizer_state"].__setitem__((0, 1), np.inf), "state holds NaN or inf"),
        (lambda a: a["optimizer_state"].__setitem__((1, 2), -1e-3), "exp_avg_sq .* negative"),
        (lambda a: a.update(optimizer_state=a["optimizer_state"][:, :3]), "optimizer state"),
    ],
    ids=[
        "format",
        "version",
        "activation",
        "units",
        "optimizer",
        "layer",
        "dtype",
        "json",
        "missing",
        "size",
        "nan",
        "state-inf",
        "state-negative",
        "state",
    ],
)
def test_tampered_files_are_refused(trained, tmp_path, change, message):
    model, _, _ = trained
    path = model.save(tmp_path / "m.npz")
    rewrite(path, change)
    with pytest.raises(fastbp.ModelFileError, match=message):
        fastbp.load(path)


def test_truncated_foreign_and_pickled_files_are_refused(trained, tmp_path):
    model, _, _ = trained
    path = model.save(tmp_path / "m.npz")
    data = open(path, "rb").read()
    for cut in (10, len(data) // 2, len(data) - 5):
        with open(tmp_path / "cut.npz", "wb") as f:
            f.write(data[:cut])
        with pytest.raises(fastbp.ModelFileError):
            fastbp.load(tmp_path / "cut.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(fastbp.ModelFileError):
        fastbp.load(tmp_path / "text.npz")
    np.savez(tmp_path / "foreign.npz", a=np.ones(3))
    with pytest.raises(fastbp.ModelFileError, match="lacks"):
        fastbp.load(tmp_path / "foreign.npz")
    # An object array needs pickle to load: refused, and nothing in it runs.
    np.savez(
        tmp_path / "pickled.npz",
        config=np.array([{"x": 1}], dtype=object),
        params=np.ones(3),
        optimizer_state=np.ones((0, 3)),
    )
    with pytest.raises(fastbp.ModelFileError):
        fastbp.load(tmp_path / "pickled.npz")
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "absent.npz")


def test_file_is_a_plain_npz_with_documented_entries(trained, tmp_path):
    model, _, _ = trained
    path = model.save(tmp_path / "m.npz")
    assert sorted(zipfile.ZipFile(path).namelist()) == [
        "config.npy",
        "optimizer_state.npy",
        "params.npy",
    ]
    with np.load(path, allow_pickle=False) as archive:
        config = json.loads(str(archive["config"]))
    assert config["format"] == "fastbp-model" and config["fastbp_version"] == fastbp.__version__
    assert [layer["config"]["units"] for layer in config["layers"]] == [7, 3]


def test_a_file_written_before_the_structs_refactor_loads_and_predicts_the_same():
    """tests/data/model_format1.npz was written by fastbp at commit e23a7c3 (before the
    optimizer state got names and the plan became structs): the file format did not
    change. Float64, so the predictions agree to rounding whatever BLAS kernel runs."""
    folder = pathlib.Path(__file__).parent / "data"
    expected = np.load(folder / "model_format1_expected.npz")
    model = fastbp.load(folder / "model_format1.npz")
    np.testing.assert_allclose(
        model.predict(expected["X"]), expected["predict"], rtol=1e-12, atol=1e-15
    )
    state = model.optimizer_state
    assert state.step == 9  # 3 epochs of 3 minibatches
    assert list(state.buffers) == ["square_avg", "momentum_buffer", "grad_avg"]
    assert (state.buffers["square_avg"] > 0).any() and state.buffers["grad_avg"].any()
    history = model.fit(expected["X"], expected["y"], epochs=1, batch_size=16)
    assert len(history) == 4 and np.isfinite(history["loss"]).all()


def test_load_accepts_the_path_given_to_save(trained, tmp_path):
    """save("m") writes m.npz; load("m") reads it (as a str or a path)."""
    model, X, _ = trained
    assert model.save(tmp_path / "m") == str(tmp_path / "m.npz")
    for path in (tmp_path / "m", str(tmp_path / "m")):
        np.testing.assert_array_equal(fastbp.load(path).predict(X), model.predict(X))
    with pytest.raises(FileNotFoundError, match=r"nor with \.npz appended"):
        fastbp.load(tmp_path / "other")


def test_save_into_a_missing_folder_names_the_folder(trained, tmp_path):
    model, _, _ = trained
    folder = tmp_path / "absent"
    with pytest.raises(FileNotFoundError) as info:
        model.save(folder / "m.npz")
    assert f"the folder {folder} does not exist" in str(info.value)
    assert ".npz.tmp" not in str(info.value)  # not the temporary file's name
    (tmp_path / "plain").write_text("")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        model.save(tmp_path / "plain" / "m.npz")
    assert sorted(os.listdir(tmp_path)) == ["plain"]


def test_load_of_a_file_that_is_not_a_zip_says_so(tmp_path):
    """Not numpy's advice to allow pickle: a model file never needs it."""
    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "array.npy", np.ones(3))
    for name in ("notes.txt", "array.npy"):
        with pytest.raises(fastbp.ModelFileError) as info:
            fastbp.load(tmp_path / name)
        assert "pickle" not in str(info.value)
        assert str(info.value).startswith(f"{tmp_path / name} is not a readable fastbp model")
        assert "not a zip archive" in str(info.value)


def _set(path, value):
    """An edit of the config that sets the field at ``path`` (keys and indices)."""

    def update(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return update


def _drop(key):
    return lambda config: config.pop(key)


FIELDS = [
    (_set(["optimizer", "iterations"], 1e30), "optimizer.iterations: must be an integer"),
    (_set(["optimizer", "iterations"], 2**64), "optimizer.iterations: must be an integer in"),
    (_set(["dropout_seed"], 2**64), "dropout_seed: must be an integer in"),
    (_set(["dropout_seed"], -1), "dropout_seed: must be an integer in"),
    (_set(["threads"], 2**64), "threads: must be an integer in [1, 1024]"),
    (_set(["threads"], "2"), "threads: must be an integer"),
    (_set(["seed"], -1), "seed: must be an integer >= 0"),
    (_set(["seed"], 1.5), "seed: must be an integer"),
    (_set(["epochs_done"], None), "epochs_done: must be an integer"),
    (_set(["input_dim"], 0), "input_dim: must be an integer in"),
    (_set(["layers", 0, "config", "units"], 2.5), "layers[0].config.units: must be an"),
    (_set(["layers", 0, "config", "units"], True), "layers[0].config.units: must be an"),
    (_set(["layers", 0, "config", "activation"], ["relu"]), "layers[0].config.activation"),
    (_set(["layers", 0, "config", "negative_slope"], -1), "layers[0].config: negative_slope"),
    (_set(["layers", 0, "config", "negative_slope"], 10**400), "config.negative_slope: is a"),
    (_set(["layers", 0, "config", "init"], {}), "layers[0].config.init: must be a name or"),
    (
        _set(["layers", 0, "config", "kernel_regularizer"], {"l1": -1, "l2": 0}),
        "layers[0].config: l1 must be",
    ),
    (_set(["layers", 1, "trainable"], "no"), "layers[1].trainable: must be true or false"),
    (_set(["layers", 1, "class"], "Residual"), "layers[1].config.layers: is missing"),
    (
        _set(
            ["layers", 1],
            {
                "class": "Residual",
                "config": {"layers": [{"class": "Residual"}]},
                "trainable": True,
            },
        ),
        "layers[1].config.layers[0].class: unknown layer class 'Residual'",
    ),
    (_set(["layers"], []), "layers: must hold at least 1"),
    (_set(["layers", 0], 5), "layers[0]: must be a dict"),
    (_set(["optimizer", "config", "betas"], [0.9]), "optimizer.config.betas: must hold 2"),
    (_set(["optimizer", "config", "lr"], -1), "optimizer.config: lr must be > 0"),
    (_set(["optimizer", "config", "momentum"], 0.9), "unknown field 'momentum'"),
    (_set(["loss_config"], {"delta": 1.0}), "loss_config: "),
    (_set(["loss"], "huberr"), "loss: must be one of"),
    (_set(["rng_state", "state", "inc"], 2**128), "rng_state.state.inc: must be an"),
    (_set(["rng_state", "bit_generator"], "MT19937"), "rng_state.bit_generator: must be"),
    (_set(["history", "epoch", 1], -1), "history.epoch[1]: must be an integer"),
    (_set(["history", "history", "loss"], "x"), "history.history.loss: must be a list"),
    (_drop("history"), "history: is missing"),
    (_set(["evil"], 1), "has an unknown field 'evil'"),
    (_set(["fastbp_version"], 1), "fastbp_version: must be a string"),
]


@pytest.mark.parametrize("update,field", FIELDS, ids=[field for _, field in FIELDS])
def test_a_field_of_the_wrong_type_or_out_of_range_is_refused_naming_it(
    trained, tmp_path, update, field
):
    model, _, _ = trained
    path = model.save(tmp_path / "m.npz")
    rewrite(path, edit_config(update))
    with pytest.raises(fastbp.ModelFileError, match=re.escape(field)):
        fastbp.load(path)


@pytest.mark.parametrize(
    "text", ["[" * 100_000 + "]" * 100_000, '{"seed": ' + "9" * 5000 + "}"], ids=["deep", "digits"]
)
def test_json_the_parser_refuses_is_a_corrupt_config(trained, tmp_path, text):
    model, _, _ = trained
    path = model.save(tmp_path / "m.npz")
    rewrite(path, lambda arrays: arrays.update(config=np.array(text)))
    with pytest.raises(fastbp.ModelFileError, match="has a corrupt config"):
        fastbp.load(path)


def test_from_config_names_the_field_too(trained):
    model, _, _ = trained
    config = model.get_config()
    config["layers"][0]["config"]["units"] = "7"
    with pytest.raises(ValueError, match=re.escape("layers[0].config.units: must be an integer")):
        fastbp.Sequential.from_config(config)
    assert fastbp.Sequential.from_config(model.get_config()).count_params() == model.count_params()
