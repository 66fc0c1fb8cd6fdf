"""Sparse inputs: a SciPy sparse matrix (CSR, CSC or COO, or the sparse arrays)
checked and converted once into the compiled ``Csr`` the kernels read, its values in
the model's dtype and its indices as intp. The first layer's products then work on
its rows directly (``fastbp/_core.pyx``: ``_sparse_product``, ``_sparse_gradient``):
the matrix is never densified.
"""

import numpy as np

from . import _validation as val
from ._backend import core


def is_sparse(X):
    """Whether X is a SciPy sparse matrix or array (without importing scipy.sparse
    for dense inputs)."""
    return type(X).__module__.startswith("scipy.sparse") and hasattr(X, "tocsr")


def as_csr(X, dtype, name="X", finite=True, allow_empty=False):
    """X as a checked ``fastbp._core.Csr`` of ``dtype`` (its SciPy CSR matrix kept as
    ``.matrix``). Copies only what differs: the format, the dtype of the values, the
    width of the indices."""
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if X.shape[1] == 0:
        raise ValueError(f"{name} is empty: it has 0 features")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got sparse data of dtype {X.dtype}")
    csr = X.tocsr()
    values = np.ascontiguousarray(csr.data, dtype=dtype)
    if finite:
        check_finite(values, csr.indices, csr.indptr, name)
    if values is not csr.data:
        csr = csr.__class__((values, csr.indices, csr.indptr), shape=csr.shape)
    return _compiled(csr)


def check_finite(values, indices, indptr, name):
    """Raise if a CSR matrix's values hold NaN or infinity, naming the first one's
    (row, column) as a dense matrix would."""
    if val.all_finite(values):
        return
    bad = int(np.flatnonzero(~np.isfinite(values))[0])
    row = int(np.searchsorted(indptr, bad, side="right") - 1)
    kind = "NaN" if np.isnan(values[bad]) else "infinity"
    raise ValueError(f"{name} contains {kind} (first at index ({row}, {int(indices[bad])}))")


def _compiled(csr):
    # SciPy keeps 32-bit indices where they fit; the kernels read intp.
    out = core().Csr(
        np.ascontiguousarray(csr.data),
        np.ascontiguousarray(csr.indices, dtype=np.intp),
        np.ascontiguousarray(csr.indptr, dtype=np.intp),
        csr.shape[1],
    )
    out.matrix = csr
    return out


def take_rows(X, index):
    """Rows ``index`` (integers or a boolean mask) of a ``Csr``, as a new ``Csr``."""
    return _compiled(X.matrix[index])


def is_csr(X):
    return isinstance(X, core().Csr)
