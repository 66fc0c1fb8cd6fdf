"""Writing a file whole or not at all: the model file (``fastbp.save``) and the ONNX
graph (``to_onnx``) go to a temporary file in the target's folder, flushed to disk,
then renamed over the target, so that a crash or a full disk never leaves half a
file where a good one was."""

import os
import tempfile


def write_atomically(path, what, suffix, write):
    """Write ``path`` through ``write(temporary_path)``. A missing folder (or a file
    where the folder should be) is named, not the temporary file."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(
                f"cannot write the {what} to {path}: {folder} is a file, not a folder"
            )
        raise FileNotFoundError(
            f"cannot write the {what} to {path}: the folder {folder} does not exist;"
            " create it first (os.makedirs)"
        )
    handle, temporary = tempfile.mkstemp(prefix=".fastbp-", suffix=suffix, dir=folder)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "r+b") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path
