"""Reading the arrays of an ``.npz`` archive that may be hostile.

``numpy.load`` trusts the sizes an archive declares: a few kilobytes that claim a
huge array make it allocate that much before the read fails. Here every size is
checked before anything is read, against what the file can hold:

- a member is stored (what ``numpy.savez`` writes) or deflated (``savez_compressed``),
  not encrypted; the members read declare at most ``MAX_EXPANSION`` times the
  file's size in all (a stored member cannot exceed the file at all);
- a member is one ``.npy`` array of format version 1.0 or 2.0 whose header is a
  literal dict (read with ``ast.literal_eval``: never executed) with exactly the
  keys ``descr``, ``fortran_order`` and ``shape``, a dtype from a short list
  (float32, float64 and unicode, either byte order: never object, so never pickle)
  and a shape of non-negative integers;
- the shape and dtype account for exactly the member's declared size, so the read
  that follows allocates what the file holds, and a short member or a bad CRC-32
  (checked by ``zipfile`` at the member's end) is refused.

Anything else raises ``ArchiveError`` (a ValueError) naming the member and the
problem; ``fastbp.persistence`` reports it as a ``ModelFileError``.
"""

from __future__ import annotations

import ast
import re
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

# Together, the members read may declare at most this many times the file's size:
# deflated members expand (text compresses well), stored ones cannot.
MAX_EXPANSION = 8
# The longest .npy header read (NumPy writes headers of 128 bytes or a little more).
MAX_HEADER = 4096
_MAGIC = b"\x93NUMPY"


class ArchiveError(ValueError):
    """The archive or one of its arrays is malformed."""


@dataclass(frozen=True)
class ArrayHeader:
    """What a member's .npy header declares, checked against the member's size."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    fortran_order: bool
    offset: int  # where the data start in the member

    @property
    def nbytes(self) -> int:
        count = 1
        for n in self.shape:
            count *= n
        return count * self.dtype.itemsize


# What the zip layer and the decompressor raise on a damaged archive (a truncated or
# inconsistent directory, a seek outside the file, a bad deflate stream, an
# undecodable name, a zip feature or version that zipfile does not implement).
_DAMAGED = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    OverflowError,
    NotImplementedError,
)


class Archive:
    """An open ``.npz`` file whose arrays are read with the checks above.

    Parameters
    ----------
    file : binary file object
        Seekable, positioned anywhere; its size bounds what may be read.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._size = file.seek(0, 2)
        file.seek(0)
        try:
            self._zip = zipfile.ZipFile(file)
        except _DAMAGED as exc:
            raise ArchiveError(f"not a zip archive ({exc})") from exc
        self._declared = 0

    @property
    def names(self) -> list[str]:
        """The array names (the member names without ``.npy``)."""
        return [info.filename.removesuffix(".npy") for info in self._zip.infolist()]

    def _member(self, name: str) -> zipfile.ZipInfo:
        matches = [info for info in self._zip.infolist() if info.filename == name + ".npy"]
        if len(matches) != 1:
            raise ArchiveError(f"the archive holds {len(matches)} members named {name}.npy")
        info = matches[0]
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{name}.npy is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size or info.file_size > self._size:
                raise ArchiveError(
                    f"{name}.npy declares {info.file_size} bytes, stored in"
                    f" {info.compress_size}, in a file of {self._size}"
                )
        elif info.compress_type != zipfile.ZIP_DEFLATED:
            raise ArchiveError(
                f"{name}.npy uses compression method {info.compress_type}; model files are"
                " stored or deflated"
            )
        return info

    def header(self, name: str) -> ArrayHeader:
        """The checked header of array ``name`` (nothing of its data is read)."""
        info = self._member(name)
        try:
            with self._zip.open(info) as member:
                header = _read_header(member, name)
        except ArchiveError:
            raise
        except _DAMAGED as exc:
            raise ArchiveError(f"{name}.npy is damaged ({exc})") from exc
        if header.offset + header.nbytes != info.file_size:
            raise ArchiveError(
                f"{name}.npy declares an array of {header.dtype.str} {header.shape}"
                f" ({header.nbytes} bytes), but the member holds"
                f" {info.file_size - header.offset} bytes of data"
            )
        return header

    def read(self, name: str) -> np.ndarray[Any, Any]:
        """Array ``name`` (read-only, in native byte order): its header checked again,
        then its data read."""
        header = self.header(name)
        info = self._member(name)
        self._declared += info.file_size
        if self._declared > MAX_EXPANSION * self._size:
            raise ArchiveError(
                f"the arrays declare {self._declared} bytes in all, more than"
                f" {MAX_EXPANSION} times the file's {self._size}"
            )
        try:
            with self._zip.open(info) as member:
                member.seek(header.offset)
                data = member.read(header.nbytes)
                if len(data) != header.nbytes:
                    raise ArchiveError(f"{name}.npy does not hold {header.nbytes} bytes of data")
        except ArchiveError:
            raise
        except _DAMAGED as exc:
            raise ArchiveError(f"{name}.npy is damaged ({exc})") from exc
        array = np.frombuffer(data, dtype=header.dtype)
        array = array.reshape(header.shape, order="F" if header.fortran_order else "C")
        if not header.dtype.isnative:
            array = array.astype(header.dtype.newbyteorder("="))
        return array

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _read_header(member: BinaryIO, name: str) -> ArrayHeader:
    """Parse the .npy header at the start of ``member`` (see the module)."""
    start = member.read(len(_MAGIC) + 2)
    if len(start) < len(_MAGIC) + 2 or start[: len(_MAGIC)] != _MAGIC:
        raise ArchiveError(f"{name}.npy is not a .npy array")
    version = (start[-2], start[-1])
    if version not in ((1, 0), (2, 0)):
        raise ArchiveError(f"{name}.npy has .npy format version {version}; expected 1.0 or 2.0")
    size_bytes = 2 if version == (1, 0) else 4
    length_field = member.read(size_bytes)
    if len(length_field) != size_bytes:
        raise ArchiveError(f"{name}.npy ends inside its header")
    length = int.from_bytes(length_field, "little")
    if length > MAX_HEADER:
        raise ArchiveError(f"{name}.npy has a header of {length} bytes (at most {MAX_HEADER})")
    text = member.read(length)
    if len(text) != length:
        raise ArchiveError(f"{name}.npy ends inside its header")
    try:
        fields = ast.literal_eval(text.decode("latin1"))
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError) as exc:
        raise ArchiveError(f"{name}.npy has an unreadable header ({exc})") from exc
    if not isinstance(fields, dict) or sorted(fields) != ["descr", "fortran_order", "shape"]:
        raise ArchiveError(
            f"{name}.npy has a header that is not a dict of descr, fortran_order and shape"
        )
    descr, fortran_order, shape = fields["descr"], fields["fortran_order"], fields["shape"]
    if not isinstance(fortran_order, bool):
        raise ArchiveError(f"{name}.npy: fortran_order must be True or False")
    if (
        not isinstance(shape, tuple)
        or len(shape) > 2
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise ArchiveError(f"{name}.npy: shape must be 0 to 2 non-negative integers, got {shape!r}")
    return ArrayHeader(_dtype(descr, name), shape, fortran_order, len(start) + size_bytes + length)


def _dtype(descr: object, name: str) -> np.dtype[Any]:
    """float32, float64 or unicode of either byte order, from a header's descr."""
    if isinstance(descr, str) and re.fullmatch(r"[<>](f4|f8|U[1-9][0-9]{0,7})", descr):
        return np.dtype(descr)
    raise ArchiveError(
        f"{name}.npy holds an array of dtype {descr!r}; model files hold float32, float64"
        " and unicode arrays"
    )
