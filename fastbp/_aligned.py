"""Buffers that start on a cache line: the flat parameters, gradients, optimizer
state and workspaces that the compiled step streams through with vector loads and
stores. NumPy aligns its arrays to 16 bytes; a 64-byte (AVX-512) vector of a buffer
that starts 16 bytes into a line straddles two lines, at every load and store."""

import numpy as np

LINE = 64  # bytes


def empty(shape, dtype):
    """An uninitialized C-contiguous array whose first element starts a cache line
    (a view into a buffer ``LINE`` bytes longer, which it keeps alive; an empty one
    has no first element, and NumPy places it anywhere)."""
    dtype = np.dtype(dtype)
    shape = (shape,) if np.ndim(shape) == 0 else tuple(shape)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(size + LINE, dtype=np.uint8)
    start = -raw.ctypes.data % LINE
    return raw[start : start + size].view(dtype).reshape(shape)


def copy(a):
    """A C-contiguous copy of ``a`` that starts a cache line."""
    out = empty(np.shape(a), np.asarray(a).dtype)
    np.copyto(out, a)
    return out


def full(shape, value, dtype):
    """``empty`` filled with ``value``."""
    out = empty(shape, dtype)
    out.fill(value)
    return out
