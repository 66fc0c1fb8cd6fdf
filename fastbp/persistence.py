"""Saving and loading models: one documented file format, no pickle.

A fastbp model file is a NumPy ``.npz`` archive (a zip of ``.npy`` arrays) holding:

- ``config``: a JSON document (stored as a 0-d unicode array) with the format name
  and version, the fastbp version, the architecture (layers with their settings),
  the loss, the optimizer (class, hyperparameters, step count), the dtype, the seed
  and random generator state, and the training history;
- ``params``: the flat parameter buffer (every layer's weight then bias, in order);
- ``optimizer_state``: the optimizer's state buffers, one row each (momentum; Adam's
  first and second moments; ...), of shape (n_buffers, n_params).

It is read with ``allow_pickle=False``: loading never runs code from the file. The
file is written to a temporary file in the same folder, then renamed over the
target, so that a crash never leaves a half-written model under the target's name.
"""
import json
import os

import numpy as np

FORMAT = "fastbp-model"
FORMAT_VERSION = 1
_KEYS = ("config", "params", "optimizer_state")


class ModelFileError(ValueError):
    """A file that is not a readable fastbp model (truncated, tampered, foreign)."""


def save(model, path):
    """Write ``model`` (built) to ``path`` atomically. Returns the path written.

    A path without the ``.npz`` ending gets it appended, as NumPy does.
    """
    import tempfile

    from . import __version__

    model._require_built()
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    config = model.get_config()
    config.update(format=FORMAT, format_version=FORMAT_VERSION, fastbp_version=__version__)
    arrays = {
        "config": np.array(json.dumps(config)),
        "params": model.flat_params,
        "optimizer_state": model.optimizer.flat_state(model.flat_params.size, model.dtype),
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


def load(path):
    """Read a model written by ``Sequential.save``.

    Raises
    ------
    ModelFileError (a ValueError)
        When the file is not a complete, consistent fastbp model file.
    """
    import zipfile

    from .model import Sequential

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
        model = Sequential.from_config(config)
        model._restore(arrays["params"], arrays["optimizer_state"], config)
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
