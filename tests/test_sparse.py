"""Sparse inputs (SciPy CSR, CSC, COO): the first layer reads the rows sparse, the
results are those of the same data dense, and the matrix is never densified."""

import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp import _core

sp = pytest.importorskip("scipy.sparse")

TOL = {"float32": 2e-5, "float64": 1e-12}


def sparse_data(n=57, d=23, density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, random_state=seed, format="csr") * 3
    return X, rng.integers(0, 3, n)


def model(dtype, threads=1, width=9, **kwargs):
    return fastbp.Sequential(
        [fastbp.Dense(width, "tanh"), fastbp.Dense(3, "softmax")],
        optimizer=fastbp.SGD(0.1, momentum=0.9),
        seed=3,
        dtype=dtype,
        threads=threads,
        **kwargs,
    )


def close(a, b, dtype):
    scale = max(1.0, float(np.abs(b).max()))
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_predict_evaluate_sparse_equal_dense(fmt, dtype):
    """The same shuffled minibatches, validation split and metrics as the dense
    matrix (the sums differ in order only: a tolerance of the dtype's rounding)."""
    X, y = sparse_data()
    dense, sparse = model(dtype), model(dtype)
    hd = dense.fit(X.toarray(), y, epochs=3, batch_size=10, validation_split=0.2)
    hs = sparse.fit(X.asformat(fmt), y, epochs=3, batch_size=10, validation_split=0.2)
    close(sparse.flat_params, dense.flat_params, dtype)
    close(hs["val_loss"], hd["val_loss"], dtype)
    close(sparse.predict(X.asformat(fmt)), dense.predict(X.toarray()), dtype)
    assert sparse.evaluate(X, y)["loss"] == pytest.approx(
        dense.evaluate(X.toarray(), y)["loss"], rel=TOL[dtype]
    )
    # Sparse input to a model trained dense, and dense input to one trained sparse.
    close(dense.predict(X), sparse.predict(X.toarray()), dtype)


def test_sparse_with_two_threads_and_gradients():
    """A network big enough for the step to split over 2 threads (rows for the
    forward pass, columns of the sparse weight gradient), sample weights, and the
    gradient half of a step."""
    X, y = sparse_data(n=300, d=400, density=0.05, seed=1)
    w = np.random.default_rng(2).uniform(0.5, 2.0, 300)
    results = []
    for Xin in (X, X.toarray()):
        m = model("float64", threads=2, width=64)
        m.fit(Xin, y, epochs=2, batch_size=64, sample_weight=w)
        loss = m.compute_gradients(Xin[:50], y[:50], sample_weight=w[:50])
        results.append((m.flat_params.copy(), m.flat_grads.copy(), loss))
    close(results[0][0], results[1][0], "float64")
    close(results[0][1], results[1][1], "float64")
    assert results[0][2] == pytest.approx(results[1][2], rel=1e-12)


def test_sparse_rows_without_values_and_unsorted_indices():
    """Empty rows, duplicate entries (summed, as SciPy means them) and unsorted
    column indices."""
    data = np.array([1.0, 2.0, -1.0, 0.5])
    indices = np.array([3, 0, 3, 1])  # row 1: columns 3 then 0; row 2: 3 and 1
    indptr = np.array([0, 0, 2, 4, 4])
    X = sp.csr_matrix((data, indices, indptr), shape=(4, 5))
    X_dup = sp.coo_matrix(([1.0, 1.0], ([1, 1], [2, 2])), shape=(4, 5))
    m = model("float64", input_dim=5)
    close(m.predict(X), m.predict(X.toarray()), "float64")
    close(m.predict(X_dup), m.predict(X_dup.toarray()), "float64")


def test_sparse_fit_never_densifies():
    """X of 2,000 x 200,000 (1.6 GB dense in float32) with 20,000 values: fit,
    predict and evaluate stay far below the dense size."""
    X = sp.random(2000, 200_000, density=5e-5, random_state=0, format="csr", dtype=np.float32)
    y = np.random.default_rng(0).integers(0, 3, 2000)
    m = fastbp.Sequential(
        [fastbp.Dense(4, "relu"), fastbp.Dense(3, "softmax")], seed=0, optimizer="sgd"
    )
    tracemalloc.start()
    try:
        m.fit(X, y, epochs=1, batch_size=200)
        m.predict(X)
        m.evaluate(X, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The weights, their gradient and the momentum-free state: 3 x 3.2 MB.
    assert peak < 40e6, peak


def test_sparse_errors_name_the_problem():
    X, y = sparse_data()
    with pytest.raises(ValueError, match="input dropout needs dense X"):
        fastbp.Sequential([fastbp.Dropout(0.2), fastbp.Dense(3, "softmax")]).fit(X, y)
    with pytest.raises(ValueError, match="residual connection from the input needs dense"):
        fastbp.Sequential(
            [fastbp.Residual(fastbp.Dense(23, "tanh")), fastbp.Dense(3, "softmax")]
        ).fit(X, y)
    m = model("float64")
    m.fit(X, y, epochs=1)
    with pytest.raises(TypeError, match="input_gradient needs dense X"):
        m.input_gradient(X)
    bad = X.copy()
    bad.data[5] = np.nan
    with pytest.raises(ValueError, match=r"X contains NaN \(first at index \(\d+, \d+\)\)"):
        m.predict(bad)
    with pytest.raises(ValueError, match="22 features, but the model expects 23"):
        m.predict(X[:, :22])
    assert m.predict(X[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="numeric"):
        m.predict(X.astype(np.complex128))


def test_compiled_csr_checks_its_structure():
    values = np.ones(3)
    ok_indices = np.array([0, 1, 2], dtype=np.intp)
    with pytest.raises(ValueError, match="indptr"):
        _core.Csr(values, ok_indices, np.array([0, 2], dtype=np.intp), 3)
    with pytest.raises(ValueError, match="decreases"):
        _core.Csr(values, ok_indices, np.array([0, 2, 1, 3], dtype=np.intp), 3)
    with pytest.raises(ValueError, match="column indices must lie in"):
        _core.Csr(values, np.array([0, 1, 3], dtype=np.intp), np.array([0, 3], dtype=np.intp), 3)
    with pytest.raises(TypeError, match="float32 or float64"):
        _core.Csr(values.astype(np.int64), ok_indices, np.array([0, 3], dtype=np.intp), 3)
    csr = _core.Csr(values, ok_indices, np.array([0, 1, 3], dtype=np.intp), 3)
    assert csr.shape == (2, 3) and csr.dtype == np.float64
