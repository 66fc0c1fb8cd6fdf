"""Saving and loading models: one documented file format, no pickle.

A fastbp model file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) holding:

- ``config``: a JSON document (stored as a 0-d unicode array) with the format name
  and version, the fastbp version, the architecture (layers with their settings),
  the loss, the optimizer (class, hyperparameters, step count), the dtype, the seed
  and random generator state, and the training history;
- ``params``: the flat parameter buffer (every layer's weight then bias, in order);
- ``optimizer_state``: the optimizer's state buffers, one row each (momentum; Adam's
  first and second moments; ...), of shape (n_buffers, n_params).

This module owns the model's configuration (``config_of``, ``from_config``), its
restoration and what pickle and copy keep of it; it never imports the model module
(the model imports it).

It is read with ``allow_pickle=False``: loading never runs code from the file. The
file is written to a temporary file in the same folder, then renamed over the
target, so that a crash never leaves a half-written model under the target's name.
"""

from __future__ import annotations

import copy
import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from . import _validation as val
from .layers import Dense, Dropout, Residual
from .losses import LOSSES
from .optimizers import OPTIMIZERS

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
    }


def _layer(entry, inside=False):
    kinds = {"Dense": Dense, "Dropout": Dropout, "Residual": Residual}
    if entry.get("class") not in kinds or (inside and entry["class"] == "Residual"):
        raise ValueError(f"unknown layer class {entry.get('class')!r}")
    if entry["class"] == "Residual":
        return Residual([_layer(inner, True) for inner in entry["config"]["layers"]])
    layer = kinds[entry["class"]](**entry["config"])
    layer.trainable = bool(entry.get("trainable", True))
    return layer


def from_config(model_class: type[Sequential], config: dict[str, Any]) -> Sequential:
    """A built ``model_class`` (fresh weights) from ``config_of``'s output."""
    layers = [_layer(entry) for entry in config["layers"]]
    opt = config["optimizer"]
    by_class = {klass.__name__: klass for klass in OPTIMIZERS.values()}
    if opt.get("class") not in by_class:
        raise ValueError(f"unknown optimizer class {opt.get('class')!r}")
    if config["loss"] not in LOSSES:
        raise ValueError(f"unknown loss {config['loss']!r}")
    loss = LOSSES[config["loss"]](**config.get("loss_config", {}))
    model = model_class(
        layers,
        loss=loss,
        optimizer=by_class[opt["class"]](**opt["config"]),
        seed=config["seed"],
        dtype=config["dtype"],
        threads=config["threads"],
    )
    model.build(val.positive_int(config["input_dim"], "input_dim"))
    return model


def restore(
    model: Sequential, params: NDArray[Any], state: NDArray[Any], config: dict[str, Any]
) -> None:
    """Set weights, optimizer state, random state and history saved by ``save``."""
    network = model._network
    if params.dtype != model.dtype or params.shape != network.params.shape:
        raise ValueError(
            f"params of {params.dtype} {params.shape} do not fit the"
            f" architecture ({np.dtype(model.dtype).name} {network.params.shape})"
        )
    if not val.all_finite(params):
        raise ValueError("params hold NaN or infinity")
    live = model.optimizer_state
    if state.dtype != model.dtype or state.shape != live.rows.shape:
        raise ValueError(
            f"optimizer state of shape {state.shape} does not fit the"
            f" optimizer (shape {live.rows.shape})"
        )
    np.copyto(network.params, params)
    np.copyto(live.rows, state)
    live.step = val.positive_int(config["optimizer"]["iterations"], "iterations", minimum=0)
    model._rng.bit_generator.state = config["rng_state"]
    network.dropout_seed = val.positive_int(config["dropout_seed"], "dropout_seed", minimum=0)
    history = config["history"]
    model.history.epoch = [int(e) for e in history["epoch"]]
    model.history.history = {
        str(k): [float(v) for v in values] for k, values in history["history"].items()
    }
    model._epochs_done = val.positive_int(config["epochs_done"], "epochs_done", minimum=0)


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
            if key not in ("_network", "_guard", "_trainer")
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
    import tempfile

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
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".fastbp-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def load(path: str | os.PathLike[str], model_class: type[Sequential]) -> Sequential:
    """Read a model written by ``save`` as a ``model_class`` (``fastbp.load`` passes
    Sequential).

    Raises
    ------
    ModelFileError (a ValueError)
        When the file is not a complete, consistent fastbp model file.
    """
    import zipfile

    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in _KEYS if key not in archive.files]
            if missing:
                raise ModelFileError(f"{path} is not a fastbp model file: it lacks {missing}")
            arrays = {key: archive[key] for key in _KEYS}
    except ModelFileError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ModelFileError(f"{path} is not a readable fastbp model file: {exc}") from exc
    config = _read_config(arrays["config"], path)
    try:
        model = from_config(model_class, config)
        restore(model, arrays["params"], arrays["optimizer_state"], config)
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"{path} holds an inconsistent fastbp model: {exc}") from exc
    return model


def _read_config(array, path):
    if array.dtype.kind != "U" or array.ndim != 0:
        raise ModelFileError(f"{path} is not a fastbp model file: bad config entry")
    try:
        config = json.loads(str(array))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path} has a corrupt config: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a fastbp model file")
    version = config.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(f"{path} has no valid format version")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} uses format version {version}; this fastbp reads up to {FORMAT_VERSION}:"
            " upgrade fastbp"
        )
    return config
