"""Saving and loading models: one documented file format, no pickle.

A fastbp model file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) holding:

- ``config``: a JSON document (stored as a 0-d unicode array) with the format name
  and version, the fastbp version, the architecture (layers with their settings),
  the loss, the optimizer (class, hyperparameters, step count), the dtype, the seed
  and random generator state, the training history, and (optional)
  ``preprocessing``: what the command line did to the data (feature names, their
  standardization, the target's name and class names; ``Sequential.preprocessing``);
- ``params``: the flat parameter buffer (every layer's weight then bias, in order);
- ``optimizer_state``: the optimizer's state buffers, one row each (momentum; Adam's
  first and second moments; ...), of shape (n_buffers, n_params).

This module owns the model's configuration (``config_of``, ``from_config``), its
restoration and what pickle and copy keep of it; it never imports the model module
(the model imports it).

Loading trusts nothing in the file and never runs code from it (no pickle, no
eval): the archive and its array headers are checked by ``fastbp._archive``, the
JSON document field by field by ``fastbp._schema``, then the sizes the
configuration implies against the arrays' headers, all before the model is
built; so loading allocates a small multiple of the file's size at most, anything
wrong raises ``ModelFileError`` naming what, and a model that loads trains and
predicts. The file is written to a temporary file in the same folder, then renamed
over the target, so that a crash never leaves a half-written model under the
target's name.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from . import _archive, _files, _schema, network
from . import _validation as val
from .layers import Dense, Dropout, Residual
from .losses import LOSSES
from .optimizers import OPTIMIZERS, SQUARED_STATE

if TYPE_CHECKING:  # the model imports this module, never the other way at run time
    from .model import Sequential

FORMAT = "fastbp-model"
FORMAT_VERSION = 1
_KEYS = ("config", "params", "optimizer_state")


class ModelFileError(ValueError):
    """A file that is not a readable fastbp model (truncated, tampered, foreign)."""


def config_of(model: Sequential) -> dict[str, Any]:
    """The model as JSON-compatible values (weights excluded)."""
    return {
        "layers": [
            {
                "class": type(layer).__name__,
                "config": layer.get_config(),
                "trainable": bool(layer.trainable),
            }
            for layer in model.layers
        ],
        "loss": model.loss.name,
        "loss_config": model.loss.get_config(),
        "optimizer": {
            "class": type(model.optimizer).__name__,
            "config": model.optimizer.get_config(),
            "iterations": model.optimizer_state.step,
        },
        "dtype": np.dtype(model.dtype).name,
        "seed": model.seed,
        "threads": model.threads,
        "input_dim": model.input_dim,
        "rng_state": model._rng.bit_generator.state,
        "dropout_seed": model._network.dropout_seed,
        "history": {"epoch": model.history.epoch, "history": model.history.history},
        "epochs_done": model._epochs_done,
        # only when set, so that other files stay as they were
        **({} if model.preprocessing is None else {"preprocessing": model.preprocessing}),
    }


def from_config(model_class: type[Sequential], config: dict[str, Any]) -> Sequential:
    """A built ``model_class`` (fresh weights) from ``config_of``'s output.

    Raises ``fastbp._schema.ConfigError`` (a ValueError) naming the field that is
    of the wrong type, out of range or inconsistent with the others."""
    config = _schema.check_model(config)
    model = _build(model_class, config, _parts(config))
    model.preprocessing = copy.deepcopy(config.get("preprocessing"))
    return model


def _parts(config):
    """The layers, loss and optimizer of a checked configuration: each constructor
    checks its own arguments, and a refusal names the field."""
    layers = [_layer(entry, f"layers[{i}]") for i, entry in enumerate(config["layers"])]
    with _field("loss_config"):
        loss = LOSSES[config["loss"]](**config["loss_config"])
    optimizer = config["optimizer"]
    by_class = {klass.__name__: klass for klass in OPTIMIZERS.values()}
    with _field("optimizer.config"):
        optimizer = by_class[optimizer["class"]](**optimizer["config"])
    return layers, loss, optimizer


def _layer(entry, where):
    if entry["class"] == "Residual":
        inner = entry["config"]["layers"]
        blocks = [_layer(e, f"{where}.config.layers[{i}]") for i, e in enumerate(inner)]
        with _field(f"{where}.config"):
            return Residual(blocks)  # its trainable flag is its layers'
    with _field(f"{where}.config"):
        layer = {"Dense": Dense, "Dropout": Dropout}[entry["class"]](**entry["config"])
    layer.trainable = entry["trainable"]
    return layer


@contextlib.contextmanager
def _field(where):
    """Report a constructor's refusal (ValueError, TypeError) as a ConfigError at
    ``where``."""
    try:
        yield
    except _schema.ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise _schema.ConfigError(where, str(exc)) from exc


def _sizes(config, parts):
    """``(n_params, n_state_rows)``: the sizes of the flat buffer and optimizer state
    that the configuration implies, computed without allocating anything."""
    layers, _, optimizer = parts
    with _field("layers"):
        dense = network.flatten(layers)[0]
    n_in, n_params = config["input_dim"], 0
    for layer in dense:
        n_params += layer.n_params(n_in)
        n_in = layer.units
    return n_params, len(optimizer.state_names())


def _build(model_class, config, parts):
    layers, loss, optimizer = parts
    with _field("layers"):
        model = model_class(
            layers,
            loss=loss,
            optimizer=optimizer,
            seed=config["seed"],
            dtype=config["dtype"],
            threads=config["threads"],
        )
        model.build(config["input_dim"])
    return model


def restore(
    model: Sequential, params: NDArray[Any], state: NDArray[Any], config: dict[str, Any]
) -> None:
    """Set weights, optimizer state, random state and history saved by ``save``, from
    a checked configuration (``fastbp._schema.check_file``) and arrays of the sizes
    it implies."""
    np.copyto(model._network.params, params)
    live = model.optimizer_state
    np.copyto(live.rows, state)
    live.step = config["optimizer"]["iterations"]
    model._rng.bit_generator.state = config["rng_state"]
    model._network.dropout_seed = config["dropout_seed"]
    history = config["history"]
    model.history.epoch = list(history["epoch"])
    model.history.history = {key: list(values) for key, values in history["history"].items()}
    model._epochs_done = config["epochs_done"]
    model.preprocessing = config.get("preprocessing")


def pickled_state(model: Sequential) -> dict[str, Any]:
    """What pickle and copy keep of a model: its attributes, with the layers carrying
    their weights (copies of their views, taken while no fit writes them); the
    network plan, guard and workspaces are rebuilt around them by ``unpickle``."""
    token = model._guard.acquire_read()
    try:
        if model._network is not None:
            model._require_built()
        state = {
            key: value
            for key, value in model.__dict__.items()
            if key not in ("_network", "_guard", "_trainer", "_run")
        }
        state["_built"] = (
            None
            if model._network is None
            else (model._network.input_dim, model._network.dropout_seed)
        )
        return copy.deepcopy(state)
    finally:
        model._guard.release_read(token)


def unpickle(model: Sequential, state: dict[str, Any]) -> None:
    """Restore ``pickled_state``'s output into a new (empty) model object."""
    built = state.pop("_built")
    model.__dict__.update(state)
    model._init_runtime()
    if built is not None:
        rng_state = model._rng.bit_generator.state
        model.build(built[0])  # binds the layers, keeping their weights
        model._rng.bit_generator.state = rng_state
        model._network.dropout_seed = built[1]


def save(model: Sequential, path: str | os.PathLike[str]) -> str:
    """Write ``model`` (built) to ``path`` atomically. Returns the path written.

    A path without the ``.npz`` ending gets it appended, as NumPy does.
    """
    from . import __version__

    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    config = config_of(model)
    config.update(format=FORMAT, format_version=FORMAT_VERSION, fastbp_version=__version__)
    arrays = {
        "config": np.array(json.dumps(config)),
        "params": model._network.params,
        "optimizer_state": model.optimizer_state.rows,
    }

    def write(temporary):
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)

    return _files.write_atomically(path, "model", ".npz.tmp", write)


def load(path: str | os.PathLike[str], model_class: type[Sequential]) -> Sequential:
    """Read a model written by ``save`` as a ``model_class`` (``fastbp.load`` passes
    Sequential). ``path`` may omit the ``.npz`` ending that ``save`` appends.

    Nothing is allocated before it is checked: the configuration's every field
    (``fastbp._schema``), then the arrays' headers against the sizes the
    configuration implies, then the arrays; so loading allocates a small multiple
    of the file's size at most, and a model that loads trains and predicts.

    Raises
    ------
    ModelFileError (a ValueError)
        When the file is not a complete, consistent fastbp model file; the message
        names the entry or field at fault.
    FileNotFoundError
        When neither ``path`` nor ``path + ".npz"`` exists.
    """
    path = _existing(os.fspath(path))
    try:
        with open(path, "rb") as file, _archive.Archive(file) as archive:
            config, parts, params, state = _read(archive, path)
    except _archive.ArchiveError as exc:
        raise ModelFileError(f"{path} is not a readable fastbp model file: {exc}") from exc
    try:
        model = _build(model_class, config, parts)
    except _schema.ConfigError as exc:
        raise ModelFileError(f"{path} holds an inconsistent fastbp model: {exc}") from exc
    restore(model, params, state, config)
    return model


def _read(archive, path):
    """The checked configuration, its parts (layers, loss, optimizer), and the
    params and optimizer state of the sizes it implies, from an open model file."""
    missing = [key for key in _KEYS if key not in archive.names]
    if missing:
        raise ModelFileError(f"{path} is not a fastbp model file: it lacks {missing}")
    config = _read_config(archive, path)
    try:
        parts = _parts(config)
        n_params, n_rows = _sizes(config, parts)
    except _schema.ConfigError as exc:
        raise ModelFileError(f"{path} holds an invalid model configuration: {exc}") from exc
    dtype = np.dtype(config["dtype"])
    arrays = []
    for key, shape, what, owner in (
        ("params", (n_params,), "params", "the architecture"),
        ("optimizer_state", (n_rows, n_params), "optimizer state", "the optimizer"),
    ):
        header = archive.header(key)
        stored = header.dtype.newbyteorder("=")
        if stored != dtype or header.shape != shape:
            raise ModelFileError(
                f"{path} holds an inconsistent fastbp model: the {what} ({key}) of"
                f" {stored.name} {header.shape} does not fit {owner} ({dtype.name} {shape})"
            )
        arrays.append(archive.read(key))
    problem = _array_problem(*arrays, parts[2])
    if problem:
        raise ModelFileError(f"{path} holds an inconsistent fastbp model: {problem}")
    return config, parts, *arrays


def _array_problem(params, state, optimizer):
    """What makes the stored arrays unusable (so that a model that loads trains):
    non-finite values, or a negative sum of squared gradients."""
    if not val.all_finite(params):
        return "params hold NaN or infinity"
    if not val.all_finite(state):
        return "the optimizer state holds NaN or infinity"
    for name, row in zip(optimizer.state_names(), state):
        if name in SQUARED_STATE and (row < 0).any():
            return f"the optimizer state {name} (a sum of squares) holds negative values"
    return None


def _existing(path):
    """``path``, or ``path + ".npz"`` when only that exists (what ``save(path)``
    wrote)."""
    if os.path.exists(path):
        return path
    if not path.endswith(".npz") and os.path.exists(path + ".npz"):
        return path + ".npz"
    raise FileNotFoundError(
        errno.ENOENT,
        "No such model file" + ("" if path.endswith(".npz") else " (nor with .npz appended)"),
        path,
    )


def _read_config(archive, path):
    """The file's JSON document, checked against the schema (``fastbp._schema``)."""
    header = archive.header("config")
    if header.dtype.kind != "U" or header.shape != ():
        raise ModelFileError(f"{path} is not a fastbp model file: bad config entry")
    try:
        config = json.loads(str(archive.read("config")[()]))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise ModelFileError(f"{path} has a corrupt config: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a fastbp model file")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path} has no valid format version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses format version {version}; this fastbp reads up to {FORMAT_VERSION}:"
            " upgrade fastbp"
        )
    try:
        return _schema.check_file(config)
    except _schema.ConfigError as exc:
        raise ModelFileError(f"{path} holds an invalid model configuration: {exc}") from exc
