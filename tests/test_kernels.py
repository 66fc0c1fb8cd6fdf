"""Every compiled kernel of ``fastbp._core`` against a plain NumPy reference.

Each ``def`` function at the bottom of ``fastbp/_core.pyx`` (the module's Python
boundary) is checked in float32 and float64 over shapes that include 1x1, a single
row, widths that are not multiples of 8 and one large case. References are computed
in float64 from the very values handed to the kernel. Tolerances are about 1e-12
relative in float64 and 1e-5 in float32; where a result is a sum of k terms the
tolerance is the standard rounding-error bound ``c * k * eps * sum|terms|``; where the
kernel does one exact IEEE operation per element the results must be bit-identical.
"""

import itertools
import platform
import warnings
import zlib

import numpy as np
import pytest

from fastbp._backend import core

_core = core()

ACT = _core.ACTIVATION_CODES
LOSS = _core.LOSS_CODES

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}

# (rows, cols): 1x1, single rows, widths 3, 7, 13, 33 (not multiples of 8), one
# multiple of 8 and a large case.
SHAPES = [(1, 1), (1, 7), (1, 33), (3, 13), (7, 3), (13, 33), (2, 16), (300, 517)]
SMALL_SHAPES = SHAPES[:-1]

ACTIVATIONS = ["identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax"]
LOSSES = ["mse", "cross_entropy_labels", "cross_entropy", "binary_cross_entropy"]
SLOPE = 0.2


def eps(dtype):
    return float(np.finfo(dtype).eps)


def rng_for(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def readonly(x):
    x = np.array(x, copy=True)
    x.setflags(write=False)
    return x


def no_labels():
    return np.empty(0, dtype=np.intp)


# ---------------------------------------------------------------------------
# NumPy references (float64)
# ---------------------------------------------------------------------------


def sigmoid_ref(x):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def softmax_ref(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def logsumexp_ref(x):
    x = np.asarray(x, dtype=np.float64)
    top = x.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=1, keepdims=True)))[:, 0]


def act_ref(x, name, slope=SLOPE):
    x = np.asarray(x, dtype=np.float64)
    if name == "identity":
        return x.copy()
    if name == "sigmoid":
        return sigmoid_ref(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "relu":
        return np.where(x > 0, x, 0.0)
    if name == "leaky_relu":
        return np.where(x > 0, x, slope * x)
    if name == "softmax":
        return softmax_ref(x)
    raise AssertionError(name)


def act_derivative_times(z, delta, name, slope=SLOPE):
    """dL/dz given dL/da = delta and a = f(z), from the pre-activation z."""
    z = np.asarray(z, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    if name == "identity":
        return delta.copy()
    if name == "sigmoid":
        s = sigmoid_ref(z)
        return delta * s * (1 - s)
    if name == "tanh":
        return delta * (1 - np.tanh(z) ** 2)
    if name == "relu":
        return delta * (z > 0)
    if name == "leaky_relu":
        return delta * np.where(z > 0, 1.0, slope)
    if name == "softmax":
        s = softmax_ref(z)
        return s * (delta - (delta * s).sum(axis=1, keepdims=True))
    raise AssertionError(name)


def loss_ref(name, z, targets, labels):
    """(mean loss, n_correct, delta) in float64."""
    z = np.asarray(z, dtype=np.float64)
    n, k = z.shape
    if name == "mse":
        t = np.asarray(targets, dtype=np.float64)
        r = z - t
        return np.mean(r * r), None, 2 * r / z.size
    if name == "cross_entropy_labels":
        lse = logsumexp_ref(z)
        loss = np.mean(lse - z[np.arange(n), labels])
        delta = np.exp(z - lse[:, None])
        delta[np.arange(n), labels] -= 1
        correct = int(np.sum(np.argmax(z, axis=1) == labels))
        return loss, correct, delta / n
    if name == "cross_entropy":
        t = np.asarray(targets, dtype=np.float64)
        lse = logsumexp_ref(z)
        logp = z - lse[:, None]
        loss = np.mean(-(t * logp).sum(axis=1))
        delta = (np.exp(logp) * t.sum(axis=1, keepdims=True) - t) / n
        correct = int(np.sum(np.argmax(z, axis=1) == np.argmax(t, axis=1)))
        return loss, correct, delta
    if name == "binary_cross_entropy":
        t = np.asarray(targets, dtype=np.float64)
        loss = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
        delta = (sigmoid_ref(z) - t) / z.size
        correct = int(np.sum((z > 0) == (t >= 0.5)))
        return loss, correct, delta
    raise AssertionError(name)


def make_loss_inputs(name, shape, dtype, rng, scale=3.0):
    n, k = shape
    z = (scale * rng.normal(size=shape)).astype(dtype)
    labels = no_labels()
    if name == "mse":
        targets = rng.normal(size=shape).astype(dtype)
    elif name == "cross_entropy_labels":
        targets = np.empty((0, k), dtype=dtype)
        labels = rng.integers(0, k, size=n).astype(np.intp)
    elif name == "cross_entropy":
        # Rows of probabilities, one-hot rows, and rows not summing to one.
        t = rng.uniform(0.0, 1.0, size=shape)
        t /= t.sum(axis=1, keepdims=True)
        t[::3] = np.eye(k)[rng.integers(0, k, size=len(t[::3]))]
        t[1::3] *= 2.5
        targets = t.astype(dtype)
    else:
        t = rng.uniform(0.0, 1.0, size=shape)
        t.flat[::4] = 0.5
        t.flat[1::5] = 1.0
        t.flat[2::5] = 0.0
        targets = t.astype(dtype)
    return z, targets, labels


def call_loss(name, z, targets, labels):
    delta = np.full(z.shape, np.nan, dtype=z.dtype)
    # A row's loss: the mean over its outputs, except cross-entropy's one value.
    row_scale = 1.0 if name.startswith("cross_entropy") else 1.0 / z.shape[1]
    value, correct = _core.loss_delta(LOSS[name], z, targets, labels, delta, row_scale=row_scale)
    return value, correct, delta


# ---------------------------------------------------------------------------
# matmul
# ---------------------------------------------------------------------------

MATMUL_SHAPES = [  # (m, k, n)
    (1, 1, 1),
    (1, 7, 3),
    (1, 33, 1),
    (3, 13, 7),
    (7, 3, 13),
    (13, 33, 3),
    (33, 7, 33),
    (2, 16, 8),
    (300, 517, 33),
]


def matmul_operands(m, k, n, dtype, trans_a, trans_b, rng):
    opa = rng.normal(size=(m, k)).astype(dtype)
    opb = rng.normal(size=(k, n)).astype(dtype)
    a = np.ascontiguousarray(opa.T) if trans_a else opa
    b = np.ascontiguousarray(opb.T) if trans_b else opb
    return opa, opb, a, b


def check_gemm(got, opa, opb, alpha, beta, c0, dtype):
    opa64, opb64 = opa.astype(np.float64), opb.astype(np.float64)
    expected = alpha * (opa64 @ opb64) + beta * c0.astype(np.float64)
    k = opa.shape[1]
    bound = abs(alpha) * (np.abs(opa64) @ np.abs(opb64)) + abs(beta) * np.abs(c0.astype(np.float64))
    tol = (2 * k + 8) * eps(dtype) * bound
    err = np.abs(got.astype(np.float64) - expected)
    assert np.all(err <= tol), (
        f"max error {err.max():.3g} vs tolerance {tol.flat[np.argmax(err - tol)]:.3g}"
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mkn", MATMUL_SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_matches_numpy(dtype, mkn, trans_a, trans_b):
    m, k, n = mkn
    rng = rng_for("matmul", dtype, mkn, trans_a, trans_b)
    opa, opb, a, b = matmul_operands(m, k, n, dtype, trans_a, trans_b, rng)
    a_saved, b_saved = a.copy(), b.copy()
    c0 = rng.normal(size=(m, n)).astype(dtype)
    for alpha, beta in [(1.0, 0.0), (-0.7, 0.0), (1.0, 1.0), (2.5, 1.0), (1.0, 0.3)]:
        out = c0.copy()
        _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta)
        check_gemm(out, opa, opb, alpha, beta, c0, dtype)
    # The inputs are const: never written.
    np.testing.assert_array_equal(a, a_saved)
    np.testing.assert_array_equal(b, b_saved)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_beta_one_accumulates_prior_contents(dtype, trans_a, trans_b):
    rng = rng_for("accumulate", dtype, trans_a, trans_b)
    opa, opb, a, b = matmul_operands(5, 7, 3, dtype, trans_a, trans_b, rng)
    out = np.zeros((5, 3), dtype=dtype)
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=1.0)
    first = out.copy()
    check_gemm(first, opa, opb, 1.0, 0.0, np.zeros((5, 3), dtype=dtype), dtype)
    # Calling again adds the product to what out holds: about twice the first result.
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=1.0)
    check_gemm(out, opa, opb, 1.0, 1.0, first, dtype)
    assert np.abs(out - first).max() > 0.1
    # A constant prior content shifts every entry by that constant.
    out = np.full((5, 3), 100.0, dtype=dtype)
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=1.0)
    check_gemm(out, opa, opb, 1.0, 1.0, np.full((5, 3), 100.0, dtype=dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_beta_zero_overwrites_garbage(dtype, trans_a, trans_b):
    # With beta=0 the prior contents of out are never read (0 * nan would be nan).
    rng = rng_for("garbage", dtype, trans_a, trans_b)
    opa, opb, a, b = matmul_operands(4, 6, 9, dtype, trans_a, trans_b, rng)
    out = np.full((4, 9), np.nan, dtype=dtype)
    out[0, 0] = np.inf
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, alpha=1.0, beta=0.0)
    assert np.all(np.isfinite(out))
    check_gemm(out, opa, opb, 1.0, 0.0, np.zeros((4, 9), dtype=dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_matmul_empty_inner_dimension(dtype, trans_a, trans_b):
    m, n = 4, 3
    a = np.empty((0, m) if trans_a else (m, 0), dtype=dtype)
    b = np.empty((n, 0) if trans_b else (0, n), dtype=dtype)
    out = np.full((m, n), np.nan, dtype=dtype)
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, alpha=2.0, beta=0.0)
    np.testing.assert_array_equal(out, np.zeros((m, n), dtype=dtype))
    out = np.arange(m * n, dtype=dtype).reshape(m, n)
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, alpha=2.0, beta=0.5)
    np.testing.assert_array_equal(out, 0.5 * np.arange(m * n, dtype=dtype).reshape(m, n))


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_empty_output_is_a_no_op(dtype):
    a = np.ones((0, 5), dtype=dtype)
    b = np.ones((5, 3), dtype=dtype)
    out = np.empty((0, 3), dtype=dtype)
    _core.matmul(a, b, out)
    assert out.shape == (0, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "a_shape, b_shape, out_shape, trans_a, trans_b",
    [
        ((3, 4), (5, 2), (3, 2), False, False),  # inner dimensions differ
        ((3, 4), (4, 2), (2, 3), False, False),  # out transposed
        ((3, 4), (4, 2), (3, 3), False, False),  # out too wide
        ((3, 4), (4, 2), (4, 2), False, False),  # out too tall
        ((3, 4), (4, 2), (3, 2), True, False),  # trans_a makes the inner dim 3
        ((3, 4), (4, 2), (3, 2), False, True),  # trans_b makes the inner dim 2
        ((4, 3), (2, 4), (3, 3), True, True),  # op shapes (3, 4) @ (4, 2) need out (3, 2)
        ((4, 3), (2, 4), (2, 3), True, True),
        ((4, 3), (4, 2), (3, 2), True, True),  # op(b) is (2, 4): inner dims 4 and 2
        ((1, 1), (1, 1), (1, 2), False, False),
        ((3, 0), (1, 2), (3, 2), False, False),  # empty inner dimension mismatched
    ],
)
def test_matmul_wrong_shape_raises(dtype, a_shape, b_shape, out_shape, trans_a, trans_b):
    a = np.ones(a_shape, dtype=dtype)
    b = np.ones(b_shape, dtype=dtype)
    out = np.full(out_shape, 7.0, dtype=dtype)
    with pytest.raises(ValueError):
        _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b)
    np.testing.assert_array_equal(out, np.full(out_shape, 7.0, dtype=dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_accepts_readonly_inputs_and_rejects_readonly_out(dtype):
    rng = rng_for("ro-matmul", dtype)
    a = readonly(rng.normal(size=(6, 13)).astype(dtype))
    b = readonly(rng.normal(size=(13, 7)).astype(dtype))
    out = np.zeros((6, 7), dtype=dtype)
    _core.matmul(a, b, out, alpha=1.5)
    check_gemm(out, a, b, 1.5, 0.0, np.zeros((6, 7), dtype=dtype), dtype)
    out_t = np.zeros((13, 13), dtype=dtype)
    _core.matmul(a, a, out_t, trans_a=True)
    check_gemm(out_t, a.T, a, 1.0, 0.0, np.zeros((13, 13), dtype=dtype), dtype)
    with pytest.raises(ValueError):
        _core.matmul(a, b, readonly(np.zeros((6, 7), dtype=dtype)))


# ---------------------------------------------------------------------------
# The small-product kernel (matmul's path="small"; the step's choice by shape)
# ---------------------------------------------------------------------------

needs_small_kernel = pytest.mark.skipif(
    not _core.SMALL_GEMM_CPU,
    reason="no version of the kernel for this CPU and compiler: it never runs",
)
# Every version of the kernel this CPU runs (the portable one; on x86-64 AVX2 and
# AVX-512 as well where it has them).
each_isa = pytest.mark.parametrize("isa", _core.SMALL_GEMM_ISAS)
ODD = [1, 7, 13, 31, 33, 65]  # one row, widths around the vector and block sizes
FORMS = [(False, False), (False, True), (True, False), (True, True)]


@needs_small_kernel
@each_isa
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", FORMS)
def test_small_kernel_matches_numpy_over_odd_shapes(isa, dtype, trans_a, trans_b):
    # Every m, n and k in ODD: partial register blocks (m not a multiple of 6),
    # partial strips (n not a multiple of two vectors), out = and out +=.
    rng = rng_for("small-kernel", dtype, trans_a, trans_b)
    for m, n, k in itertools.product(ODD, ODD, ODD):
        opa, opb, a, b = matmul_operands(m, k, n, dtype, trans_a, trans_b, rng)
        c0 = rng.normal(size=(m, n)).astype(dtype)
        for beta in (0.0, 1.0):
            out = c0.copy()
            _core.matmul(
                a, b, out, trans_a=trans_a, trans_b=trans_b, beta=beta, path="small", isa=isa
            )
            check_gemm(out, opa, opb, 1.0, beta, c0, dtype)


@needs_small_kernel
@each_isa
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", FORMS)
@pytest.mark.parametrize("k", [255, 256, 257, 600])
def test_small_kernel_is_exact_on_small_integers(isa, dtype, trans_a, trans_b, k):
    # Integer entries in [-3, 3]: every partial sum is an integer below 2**24, exact in
    # any order, so the result must equal the product bit for bit; a misplaced entry
    # or a lost block of a transposed B (copied 256 rows of k at a time) would show.
    # Out's entries beside the product (a wider buffer's other columns) stay as set.
    rng = rng_for("small-kernel-exact", dtype, trans_a, trans_b, k)
    m, n = 19, 37
    opa = rng.integers(-3, 4, size=(m, k)).astype(dtype)
    opb = rng.integers(-3, 4, size=(k, n)).astype(dtype)
    a = np.ascontiguousarray(opa.T) if trans_a else opa
    b = np.ascontiguousarray(opb.T) if trans_b else opb
    exact = opa.astype(np.int64) @ opb.astype(np.int64)
    out = np.full((m, n), 5, dtype=dtype)
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=1.0, path="small", isa=isa)
    np.testing.assert_array_equal(out, (exact + 5).astype(dtype))
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=0.0, path="small", isa=isa)
    np.testing.assert_array_equal(out, exact.astype(dtype))


@needs_small_kernel
@each_isa
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", FORMS)
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_small_kernel_gives_a_row_the_same_bits_alone_or_among_others(
    isa, dtype, trans_a, trans_b, beta
):
    # The kernel sums each entry over p in order, whatever rows it computes with it:
    # in blocks of six rows (fourteen: six, four and four; twelve by one vector in a
    # last narrow strip: seven and seven), or, for a product of one or two rows with B
    # not transposed, in wide blocks of one row by eight vectors or two rows by four.
    # So each row of a 14 x 130 product (130 columns: eight strips and a narrow one;
    # alone, wide blocks and a strip left) is, bit for bit, the same row computed
    # alone or in a pair: a block that summed differently, or misplaced a column or
    # a row, would show. Random entries.
    rng = rng_for("small-kernel-rows", dtype, trans_a, trans_b, beta)
    m, n, k = 14, 130, 77
    opa, opb, a, b = matmul_operands(m, k, n, dtype, trans_a, trans_b, rng)
    c0 = rng.normal(size=(m, n)).astype(dtype)
    whole = c0.copy()
    _core.matmul(a, b, whole, trans_a=trans_a, trans_b=trans_b, beta=beta, path="small", isa=isa)
    check_gemm(whole, opa, opb, 1.0, beta, c0, dtype)
    for rows in (1, 2):
        for i in range(m - rows + 1):
            part = np.ascontiguousarray(a[:, i : i + rows] if trans_a else a[i : i + rows])
            out = c0[i : i + rows].copy()
            _core.matmul(
                part, b, out, trans_a=trans_a, trans_b=trans_b, beta=beta, path="small", isa=isa
            )
            np.testing.assert_array_equal(out, whole[i : i + rows], err_msg=f"rows {i}+{rows}")


@needs_small_kernel
@each_isa
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("lines", [1, 2, 4])
def test_small_kernel_copies_b_read_in_place_without_changing_a_bit(isa, dtype, trans_a, lines):
    # B not transposed, with rows 1, 2 or 4 cache lines apart (16, 32, 64 float32 or 8,
    # 16, 32 float64 columns: every strip whole) and m >= 48: the kernel copies B's
    # strips first once k fills the L1 sets those rows share (k >= 128, 64, 32), up
    # to 256 rows of k; below those k, and above 256, it reads B in place. The copy
    # must not change a bit: each row equals the same row computed alone (a wide
    # block, which never copies), and integer entries give the exact product.
    n = lines * 64 // np.dtype(dtype).itemsize
    rng = rng_for("small-kernel-copy-b", dtype, trans_a, lines)
    for m, k in itertools.product((48, 65), (31, 32, 63, 64, 127, 128, 255, 256, 257)):
        opa, opb, a, b = matmul_operands(m, k, n, dtype, trans_a, False, rng)
        c0 = rng.normal(size=(m, n)).astype(dtype)
        for beta in (0.0, 1.0):
            whole = c0.copy()
            _core.matmul(a, b, whole, trans_a=trans_a, beta=beta, path="small", isa=isa)
            check_gemm(whole, opa, opb, 1.0, beta, c0, dtype)
            for i in (0, 5, m - 7, m - 1):
                part = np.ascontiguousarray(a[:, i : i + 1] if trans_a else a[i : i + 1])
                out = c0[i : i + 1].copy()
                _core.matmul(part, b, out, trans_a=trans_a, beta=beta, path="small", isa=isa)
                np.testing.assert_array_equal(out, whole[i : i + 1], err_msg=f"{m, k} row {i}")
        ints_a = rng.integers(-3, 4, size=a.shape).astype(dtype)
        ints_b = rng.integers(-3, 4, size=b.shape).astype(dtype)
        exact = (ints_a.T if trans_a else ints_a).astype(np.int64) @ ints_b.astype(np.int64)
        out = np.empty((m, n), dtype)
        _core.matmul(ints_a, ints_b, out, trans_a=trans_a, path="small", isa=isa)
        np.testing.assert_array_equal(out, exact.astype(dtype), err_msg=f"{m, k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a, trans_b", FORMS)
@pytest.mark.parametrize(
    "mnk", [(32, 32, 64), (64, 100, 100), (1, 10, 7), (64, 8, 64), (130, 64, 64), (128, 512, 784)]
)
def test_auto_path_is_the_one_the_rule_names(dtype, trans_a, trans_b, mnk):
    m, n, k = mnk
    path = _core.gemm_path(m, n, k, trans_a, trans_b, dtype)
    rng = rng_for("auto-path", dtype, trans_a, trans_b, mnk)
    opa, opb, a, b = matmul_operands(m, k, n, dtype, trans_a, trans_b, rng)
    auto, chosen = np.empty((m, n), dtype), np.empty((m, n), dtype)
    _core.matmul(a, b, auto, trans_a=trans_a, trans_b=trans_b)
    _core.matmul(a, b, chosen, trans_a=trans_a, trans_b=trans_b, path=path)
    np.testing.assert_array_equal(auto, chosen)
    if not _core.SMALL_GEMM_CPU:  # no kernel: every product in BLAS
        assert path == "blas"


def test_the_rule_takes_the_kernel_for_small_networks_and_blas_for_big_or_narrow():
    # The tiny, small and deep networks' products (bench/gemm_paths.py measures them
    # 1.1-2x faster in the kernel), the tabular network's 256-wide layers over a
    # thread's 128 rows (1.1-1.2x: B copied first), a narrow output's gradient, a C
    # one or two strips wide however long its A, and one or two rows however wide;
    # the medium network's products, a 256-wide layer's product over 784 inputs, a
    # two-column output's forward product over many rows and a one-row product by a
    # wide transposed B, in BLAS.
    for m, n, k, ta, tb in [
        (32, 32, 64, False, False),
        (32, 32, 10, False, True),
        (64, 32, 32, True, False),
        (64, 100, 100, False, False),
        (64, 100, 100, False, True),
        (50, 100, 128, True, False),
        (128, 256, 256, False, False),
        (128, 256, 256, False, True),
        (152, 256, 256, True, False),
        (64, 10, 128, False, False),
        (256, 2, 128, True, False),
        (64, 8, 64, False, False),
        (256, 16, 784, False, False),
        (256, 32, 784, False, False),
        (32, 2, 256, False, False),
        (1, 4096, 784, False, False),
        (2, 4096, 784, True, False),
    ]:
        assert _core.gemm_path(m, n, k, ta, tb, "float32", isa="avx2") == "small", (m, n, k, ta, tb)
    for m, n, k, ta, tb in [
        (128, 512, 784, False, False),
        (392, 512, 256, True, False),
        (128, 2, 256, False, False),
        (128, 2, 256, False, True),
        (256, 64, 784, False, False),
        (64, 256, 784, False, False),
        (1, 4096, 784, False, True),
    ]:
        assert _core.gemm_path(m, n, k, ta, tb, "float32", isa="avx2") == "blas", (m, n, k, ta, tb)


def assert_rule_paths(isa, small, blas):
    """The rule of version ``isa`` takes the kernel for each shape of ``small`` and
    BLAS for each of ``blas`` (shapes: m, n, k, trans_a, trans_b, dtype)."""
    for expected, shapes in (("small", small), ("blas", blas)):
        for m, n, k, ta, tb, dtype in shapes:
            path = _core.gemm_path(m, n, k, ta, tb, dtype, isa=isa)
            assert path == expected, (m, n, k, ta, tb, dtype)


def test_the_avx512_rule_takes_the_kernel_from_two_vectors_wide_and_blas_below():
    # bench/GEMM_PATHS_AVX512.md: against OpenBLAS's SkylakeX kernels the AVX-512
    # kernel wins on rows of C from 128 bytes (64 with B transposed) while A stays
    # in the L2 cache: the small and deep networks' products, the tabular network's
    # and the medium network's over a thread's rows, and one or two rows however
    # wide. Narrow outputs (10 columns) up to OpenBLAS's limit for its small-matrix
    # kernels (m * n * k of 100^3), a one-row product by a transposed B, rows over
    # 2 KB and an A over 1 MB stay in BLAS.
    small = [
        (32, 32, 64, False, False, "float32"),
        (32, 32, 10, False, True, "float32"),
        (64, 100, 100, False, False, "float32"),
        (64, 100, 100, False, True, "float32"),
        (100, 100, 128, True, False, "float32"),
        (392, 128, 64, True, False, "float32"),
        (128, 256, 256, False, True, "float32"),
        (128, 512, 784, False, False, "float32"),
        (64, 16, 100, False, False, "float64"),
        (32, 8, 100, False, True, "float64"),
        (1, 4096, 784, False, False, "float32"),
        (2, 10, 784, True, False, "float64"),
        # narrow, past OpenBLAS's small kernels (m * n * k over 100^3): the medium
        # network's output layer, and an A of 1.6 MB read once
        (256, 10, 512, False, False, "float32"),
        (512, 10, 256, True, False, "float32"),
        (256, 8, 784, False, True, "float32"),
        (256, 10, 784, False, False, "float64"),
    ]
    blas = [
        (64, 10, 128, False, False, "float32"),
        (128, 10, 64, True, False, "float32"),
        (64, 16, 100, False, False, "float32"),
        (1, 100, 100, False, True, "float32"),
        (64, 784, 128, False, True, "float32"),
        (128, 512, 784, False, False, "float64"),
        (1024, 512, 784, False, False, "float32"),
        (784, 512, 512, True, False, "float32"),
        # narrow, within OpenBLAS's small kernels (m * n * k up to 100^3), or rows
        # under 32 bytes (two classes) past them
        (256, 10, 256, False, False, "float64"),
        (100, 10, 1000, True, False, "float64"),
        (256, 2, 4096, False, False, "float32"),
    ]
    assert_rule_paths("avx512", small, blas)


def test_the_portable_rule_keeps_only_the_wins_that_held_by_a_margin():
    # bench/GEMM_PATHS_PORTABLE.md: the portable kernel (SSE2) against OpenBLAS's SSE
    # kernels, a stand-in for arm64. Kernel: a one-row float32 product of whole
    # vectors (B not transposed), float64 products of one or two rows (B not
    # transposed), and float64 products with rows of C of at most 8 entries over
    # more rows. BLAS: float32 over more rows (the kernel's 0.4-0.8x), a one-row
    # float32 product with a partial vector (10 classes) or B transposed, two rows of
    # float32, a one-row float64 product by a transposed B, and wider float64 rows.
    small = [
        (1, 128, 64, False, False, "float32"),
        (1, 4096, 784, True, False, "float32"),
        (1, 8, 100, False, False, "float32"),
        (1, 10, 64, False, False, "float64"),
        (2, 4096, 784, False, False, "float64"),
        (2, 7, 13, True, False, "float64"),
        (64, 8, 100, False, True, "float64"),
        (256, 2, 784, True, False, "float64"),
    ]
    blas = [
        (32, 32, 64, False, False, "float32"),
        (64, 100, 100, False, True, "float32"),
        (128, 8, 100, True, False, "float32"),
        (1, 10, 64, False, False, "float32"),
        (1, 130, 64, False, False, "float32"),
        (1, 128, 64, False, True, "float32"),
        (2, 128, 64, False, False, "float32"),
        (1, 8, 100, False, True, "float64"),
        (64, 10, 100, False, False, "float64"),
        (128, 100, 100, True, False, "float64"),
    ]
    assert_rule_paths("portable", small, blas)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_path_and_repeats_errors(dtype):
    a, b, out = np.ones((3, 4), dtype), np.ones((4, 2), dtype), np.zeros((3, 2), dtype)
    with pytest.raises(ValueError, match="path must be 'auto', 'blas' or 'small'"):
        _core.matmul(a, b, out, path="fast")
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        _core.matmul(a, b, out, repeats=0)
    if _core.SMALL_GEMM_CPU:
        with pytest.raises(ValueError, match="alpha 2.0, beta 0.0"):
            _core.matmul(a, b, out, alpha=2.0, path="small")
        with pytest.raises(ValueError, match="alpha 1.0, beta 0.5"):
            _core.matmul(a, b, out, beta=0.5, path="small")
        with pytest.raises(ValueError, match="pass it with path='small', not 'auto'"):
            _core.matmul(a, b, out, isa=_core.SMALL_GEMM_ISAS[0])
        with pytest.raises(ValueError, match="isa must be one this CPU runs"):
            _core.matmul(a, b, out, path="small", isa="avx1024")
    else:
        with pytest.raises(ValueError, match="no version for this CPU and compiler"):
            _core.matmul(a, b, out, path="small")
    np.testing.assert_array_equal(out, 0)
    # repeats: the same product again (beta 0), so the same result
    _core.matmul(a, b, out, repeats=3)
    np.testing.assert_array_equal(out, 4)
    with pytest.raises(ValueError, match="dimensions from 1"):
        _core.gemm_path(0, 3, 3)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        _core.gemm_path(3, 3, 3, dtype="int32")
    with pytest.raises(ValueError, match="isa must be 'portable', 'avx2', 'avx512', not 'sse'"):
        _core.gemm_path(3, 3, 3, isa="sse")
    # the step's rule is the one of the widest version this CPU runs
    for shape in [(64, 10, 128, False, False), (64, 16, 100, False, False)]:
        expected = (
            _core.gemm_path(*shape, isa=_core.SMALL_GEMM_ISAS[-1])
            if _core.SMALL_GEMM_CPU
            else "blas"
        )
        assert _core.gemm_path(*shape) == expected


def test_matmul_rejects_mixed_dtypes_and_non_contiguous():
    a32 = np.ones((3, 4), dtype=np.float32)
    b64 = np.ones((4, 2), dtype=np.float64)
    with pytest.raises((ValueError, TypeError)):
        _core.matmul(a32, b64, np.zeros((3, 2), dtype=np.float64))
    with pytest.raises((ValueError, TypeError)):
        _core.matmul(a32, b64.astype(np.float32), np.zeros((3, 2), dtype=np.float64))
    with pytest.raises(ValueError):
        _core.matmul(np.ones((3, 8))[:, ::2], b64, np.zeros((3, 2)))
    with pytest.raises(ValueError):
        _core.matmul(np.ones((3, 4)), b64, np.zeros((2, 3)).T)


def test_matmul_refuses_sizes_beyond_blas():
    # BLAS takes 32-bit sizes: 2**31 rows wrapped to a negative count. The views
    # below claim 2**31 rows of one element; the check refuses them before any read.
    huge = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(2**31, 1), strides=(8, 8))
    with pytest.raises(ValueError, match="below 2"):
        _core.matmul(huge, np.ones((1, 1)), huge)


# ---------------------------------------------------------------------------
# fma_loop (the multiply-add peak of bench/run.py)
# ---------------------------------------------------------------------------

RUNNABLE_ISAS = _core.PEAK_ISAS[: _core.PEAK_ISAS.index(_core.PEAK_ISA) + 1]
# The portable loop keeps 12 chains on x86-64 (16 SSE registers), 16 elsewhere.
X86_64 = platform.machine().lower() in ("x86_64", "amd64")
# Lanes of all the chains of one thread: chains x lanes of each version and dtype.
PEAK_LANES = {
    ("portable", np.float32): (12 if X86_64 else 16) * 4,
    ("portable", np.float64): (12 if X86_64 else 16) * 2,
    ("avx2", np.float32): 12 * 8,
    ("avx2", np.float64): 12 * 4,
    ("avx512", np.float32): 16 * 16,
    ("avx512", np.float64): 16 * 8,
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("isa", RUNNABLE_ISAS)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rounds", [0, 1, 7, 100])
def test_fma_loop_runs_every_round_on_every_thread(dtype, isa, threads, rounds):
    # Lane j of n starts at (j + 1) / n; after r rounds of a <- a m + c it holds
    # 1 + m^r (a0 - 1) (the fixed point c / (1 - m) is 1). A round rounds at most
    # twice (the portable loop's multiply and add; once where fused), each within
    # eps/2 of a value below 1, and an error decays by m a round: a lane is off by at
    # most eps / (1 - m), 2 eps with the rounding of its start. With m = 1 - 2**-6
    # that is 66 eps a lane, while one round more or less moves the sum of the lanes
    # by m^r (1 - m) (n - 1) / 2 >= 0.2 * 2**-6 * (n - 1) / 2: hundreds of times
    # more, so the check below fails unless every thread ran exactly `rounds` rounds.
    m, c = 1 - 2.0**-6, 2.0**-6
    sums = np.full(threads, np.nan)
    team, flops = _core.fma_loop(sums, rounds, dtype, isa, m=m, c=c)
    lanes = PEAK_LANES[(isa, dtype)]
    assert flops == 2 * rounds * lanes
    assert team == (threads if _core.HAVE_OPENMP else 1)
    a0 = np.arange(1, lanes + 1) / lanes
    expected = np.sum(1 + m**rounds * (a0 - 1))
    tolerance = lanes * 66 * np.finfo(dtype).eps
    assert tolerance < m**rounds * (1 - m) * (lanes - 1) / 2 / 100
    np.testing.assert_allclose(sums[:team], expected, rtol=0, atol=tolerance)


def test_fma_loop_rejects_bad_arguments():
    sums = np.zeros(1)
    with pytest.raises(ValueError, match="isa must be one of"):
        _core.fma_loop(sums, 10, "float32", "sse9")
    if _core.PEAK_ISA != "avx512":
        with pytest.raises(ValueError, match="does not run the 'avx512' loop"):
            _core.fma_loop(sums, 10, "float32", "avx512")
    with pytest.raises(ValueError, match="float32 or float64"):
        _core.fma_loop(sums, 10, "int32")
    with pytest.raises(ValueError, match="1 to"):
        _core.fma_loop(np.zeros(0), 10)
    with pytest.raises(ValueError, match="1 to"):
        _core.fma_loop(np.zeros(_core.MAX_THREADS + 1), 10)
    with pytest.raises(ValueError, match="at least 0"):
        _core.fma_loop(sums, -1)


# ---------------------------------------------------------------------------
# bias_act_forward
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_act_forward_matches_numpy(dtype, shape, act, with_bias):
    rng = rng_for("forward", dtype, shape, act, with_bias)
    z0 = (3 * rng.normal(size=shape)).astype(dtype)
    if with_bias:
        bias = (2 * rng.normal(size=shape[1])).astype(dtype)
        zb = z0 + bias  # the kernel adds in the array's precision, as NumPy does
    else:
        bias = np.empty(0, dtype=dtype)
        zb = z0.copy()
    z = z0.copy()
    _core.bias_act_forward(z, bias, ACT[act], SLOPE)
    assert z.dtype == dtype
    if act in ("identity", "relu", "leaky_relu"):
        # One exact IEEE operation per element: bit-identical.
        if act == "identity":
            expected = zb
        elif act == "relu":
            expected = np.where(zb > 0, zb, dtype(0))
        else:
            expected = np.where(zb > 0, zb, zb * dtype(SLOPE))
        np.testing.assert_array_equal(z, expected)
    else:
        expected = act_ref(zb, act)
        # Softmax normalizes by a sum of shape[1] terms.
        rtol = RTOL[dtype] + (2 * shape[1] * eps(dtype) if act == "softmax" else 0)
        np.testing.assert_allclose(z, expected, rtol=rtol, atol=np.finfo(dtype).tiny)
    if act == "softmax":
        np.testing.assert_allclose(
            z.sum(axis=1, dtype=np.float64), 1.0, rtol=0, atol=(shape[1] + 2) * eps(dtype)
        )


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_is_broadcast_over_rows(dtype):
    z = np.zeros((3, 4), dtype=dtype)
    bias = np.array([1.0, -2.0, 3.0, -4.0], dtype=dtype)
    _core.bias_act_forward(z, readonly(bias), ACT["identity"], 0.0)
    np.testing.assert_array_equal(z, np.tile(bias, (3, 1)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_relu_uses_slope(dtype):
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], dtype=dtype)
    for slope in (0.0, 0.2, 0.01, 1.0):
        z = x.copy()
        _core.bias_act_forward(z, np.empty(0, dtype=dtype), ACT["leaky_relu"], slope)
        np.testing.assert_array_equal(z, np.where(x > 0, x, x * dtype(slope)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_is_stable_for_large_inputs(dtype):
    x = np.array(
        [[-1000.0, -200.0, -100.0, -30.0, -1.0, 0.0, 1.0, 30.0, 100.0, 200.0, 1000.0]], dtype=dtype
    )
    z = x.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            _core.bias_act_forward(z, np.empty(0, dtype=dtype), ACT["sigmoid"], 0.0)
    assert not np.any(np.isnan(z))
    assert z[0, 0] == 0.0 and z[0, -1] == 1.0
    assert z[0, 5] == 0.5
    assert np.all((z >= 0) & (z <= 1))
    assert np.all(np.diff(z[0]) >= 0)
    # float32 underflows to 0 (or a subnormal) where float64 still has e^-200.
    np.testing.assert_allclose(z, sigmoid_ref(x), rtol=RTOL[dtype], atol=np.finfo(dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_is_stable_for_large_logits(dtype):
    x = np.array([[1000.0, 1001.0], [-1000.0, -1001.0], [1000.0, -1000.0], [3.0, 3.0]], dtype=dtype)
    z = x.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _core.bias_act_forward(z, np.empty(0, dtype=dtype), ACT["softmax"], 0.0)
    e = np.e
    expected = np.array(
        [[1 / (1 + e), e / (1 + e)], [e / (1 + e), 1 / (1 + e)], [1.0, 0.0], [0.5, 0.5]]
    )
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z, expected, rtol=RTOL[dtype], atol=np.finfo(dtype).tiny)
    np.testing.assert_allclose(z.sum(axis=1), 1.0, rtol=0, atol=4 * eps(dtype))
    # With a bias that makes the logits huge as well.
    z = np.array([[0.0, 1.0, -2.0]], dtype=dtype)
    _core.bias_act_forward(z, np.full(3, 5000.0, dtype=dtype), ACT["softmax"], 0.0)
    np.testing.assert_allclose(z, softmax_ref([[0.0, 1.0, -2.0]]), rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_act_forward_errors(dtype):
    z = np.ones((3, 4), dtype=dtype)
    for bad in (3, 5, 1):
        with pytest.raises(ValueError):
            _core.bias_act_forward(z, np.ones(bad, dtype=dtype), ACT["relu"], 0.0)
    np.testing.assert_array_equal(z, np.ones((3, 4), dtype=dtype))
    with pytest.raises(ValueError):
        _core.bias_act_forward(readonly(z), np.ones(4, dtype=dtype), ACT["relu"], 0.0)
    with pytest.raises(ValueError):
        _core.bias_act_forward(
            np.ones((4, 3), dtype=dtype).T, np.ones(4, dtype=dtype), ACT["relu"], 0.0
        )
    # An unknown activation code was read as the identity: z silently became z + bias.
    for code in (-1, max(ACT.values()) + 1):
        with pytest.raises(ValueError, match="unknown activation code"):
            _core.bias_act_forward(z, np.ones(4, dtype=dtype), code, 0.0)
    np.testing.assert_array_equal(z, np.ones((3, 4), dtype=dtype))
    # Empty arrays are a no-op.
    _core.bias_act_forward(
        np.empty((0, 4), dtype=dtype), np.ones(4, dtype=dtype), ACT["softmax"], 0.0
    )
    _core.bias_act_forward(
        np.empty((3, 0), dtype=dtype), np.empty(0, dtype=dtype), ACT["softmax"], 0.0
    )


# ---------------------------------------------------------------------------
# act_backward
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 15, 16, 17, 33, 65, 1000])
def test_tanh_and_sigmoid_backward_are_the_formula_in_the_dtype(dtype, size):
    """The vector loops (AVX-512, AVX2 or baseline, with their remainders) compute
    d * (1 - a a) and d * (a (1 - a)) with one rounding per operation, as NumPy does
    in the same dtype: equal bits at every length."""
    rng = rng_for("tanh-sigmoid-backward", dtype, size)
    a = rng.uniform(-1, 1, size).astype(dtype)
    d0 = rng.normal(size=size).astype(dtype)
    one = dtype(1)
    for act, expected in (("tanh", d0 * (one - a * a)), ("sigmoid", d0 * (a * (one - a)))):
        d = d0.reshape(1, size).copy()
        _core.act_backward(a.reshape(1, size), d, ACT[act], 0.0)
        np.testing.assert_array_equal(d[0], expected, err_msg=act)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_act_backward_matches_derivative_from_z(dtype, shape, act):
    rng = rng_for("backward", dtype, shape, act)
    z = 2 * rng.normal(size=shape)
    z[z == 0] = 0.1
    a = readonly(act_ref(z, act).astype(dtype))  # const input: read-only is accepted
    delta0 = rng.normal(size=shape).astype(dtype)
    delta = delta0.copy()
    _core.act_backward(a, delta, ACT[act], SLOPE)
    expected = act_derivative_times(z, delta0, act)
    if act == "identity":
        np.testing.assert_array_equal(delta, delta0)
    elif act == "relu":
        np.testing.assert_array_equal(delta, np.where(z > 0, delta0, dtype(0)))
    elif act == "leaky_relu":
        np.testing.assert_array_equal(delta, np.where(z > 0, delta0, delta0 * dtype(SLOPE)))
    elif act == "softmax":
        s = softmax_ref(z)
        d64 = delta0.astype(np.float64)
        scale = s * (np.abs(d64) + np.abs(d64 * s).sum(axis=1, keepdims=True))
        tol = 2 * (shape[1] + 4) * eps(dtype) * scale
        err = np.abs(delta - expected)
        assert np.all(err <= tol), f"max error {err.max():.3g}"
    else:
        # a is f(z) rounded to dtype (relative error eps/2); the kernel's a*(1-a) or
        # 1-a^2 inherits that error times |d f'/d a| * |a|, plus a few roundings.
        s = act_ref(z, act)
        if act == "sigmoid":
            sens = np.abs(1 - 2 * s) * np.abs(s) + 4 * s * (1 - s)
        else:
            sens = 2 * s * s + 4 * (1 - s * s)
        tol = 2 * eps(dtype) * np.abs(delta0.astype(np.float64)) * sens
        err = np.abs(delta - expected)
        assert np.all(err <= tol), f"max error {err.max():.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (3, 5)])
def test_softmax_backward_matches_explicit_jacobian(dtype, shape):
    rng = rng_for("jacobian", dtype, shape)
    z = rng.normal(size=shape)
    s = softmax_ref(z)
    a = s.astype(dtype)
    delta0 = rng.normal(size=shape).astype(dtype)
    delta = delta0.copy()
    _core.act_backward(a, delta, ACT["softmax"], 0.0)
    for i in range(shape[0]):
        jac = np.diag(s[i]) - np.outer(s[i], s[i])  # d a_j / d z_l
        expected = jac.T @ delta0[i].astype(np.float64)
        np.testing.assert_allclose(
            delta[i], expected, rtol=0, atol=20 * eps(dtype) * np.abs(delta0[i]).max()
        )
    # Consistency: the gradient is orthogonal to the all-ones direction
    # (softmax is invariant to adding a constant to the logits).
    np.testing.assert_allclose(delta.sum(axis=1), 0.0, atol=20 * eps(dtype))


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softmax"])
def test_act_backward_matches_finite_differences_of_forward_kernel(act):
    # Chain the two kernels (float64): backward(forward(z)) against central
    # differences of forward.
    rng = rng_for("fd-act", act)
    z = rng.normal(size=(3, 5))
    w = rng.normal(size=(3, 5))  # L = sum(w * f(z)), so dL/da = w

    def forward(x):
        y = x.copy()
        _core.bias_act_forward(y, np.empty(0), ACT[act], 0.0)
        return y

    a = forward(z)
    delta = w.copy()
    _core.act_backward(a, delta, ACT[act], 0.0)
    h = 1e-6
    numeric = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (np.sum(w * forward(up)) - np.sum(w * forward(down))) / (2 * h)
    np.testing.assert_allclose(delta, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_act_backward_errors(dtype):
    a = np.ones((3, 4), dtype=dtype)
    for shape in [(4, 3), (3, 5), (2, 4), (1, 12)]:
        delta = np.full(shape, 2.0, dtype=dtype)
        with pytest.raises(ValueError):
            _core.act_backward(a, delta, ACT["tanh"], 0.0)
        np.testing.assert_array_equal(delta, np.full(shape, 2.0, dtype=dtype))
    with pytest.raises(ValueError):
        _core.act_backward(a, readonly(a), ACT["tanh"], 0.0)
    _core.act_backward(
        np.empty((0, 4), dtype=dtype), np.empty((0, 4), dtype=dtype), ACT["softmax"], 0.0
    )


# ---------------------------------------------------------------------------
# col_sums
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape",
    # Narrow blocks sum 32 columns at a time (33, 65: one or two blocks and a tail),
    # blocks wider than 128 columns row by row.
    SHAPES + [(517, 300), (0, 5), (0, 1), (40, 32), (9, 65), (40, 128), (40, 129)],
)
def test_col_sums_matches_numpy(dtype, shape):
    rng = rng_for("colsums", dtype, shape)
    d = readonly(rng.normal(size=shape).astype(dtype))
    out = np.full(shape[1], np.nan, dtype=dtype)
    _core.col_sums(d, out)
    d64 = d.astype(np.float64)
    expected = d64.sum(axis=0)
    tol = (shape[0] + 2) * eps(dtype) * np.abs(d64).sum(axis=0)
    if shape[0] == 0:
        np.testing.assert_array_equal(out, np.zeros(shape[1], dtype=dtype))
    elif shape[0] == 1:
        np.testing.assert_array_equal(out, d[0])
    else:
        err = np.abs(out - expected)
        assert np.all(err <= tol), f"max error {err.max():.3g}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", [1, 10, 31, 32, 33, 64, 100, 128, 129, 300])
def test_col_sums_of_whole_numbers_are_exact(dtype, cols):
    # Small whole numbers add exactly in any order: every column must be its own sum.
    d = np.random.default_rng(cols).integers(-50, 50, size=(37, cols)).astype(dtype)
    out = np.full(cols, np.nan, dtype=dtype)
    _core.col_sums(d, out)
    np.testing.assert_array_equal(out, d.sum(axis=0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_col_sums_errors(dtype):
    d = np.ones((3, 4), dtype=dtype)
    for n in (3, 5, 0):
        with pytest.raises(ValueError):
            _core.col_sums(d, np.zeros(n, dtype=dtype))
    with pytest.raises(ValueError):
        _core.col_sums(d, readonly(np.zeros(4, dtype=dtype)))
    out = np.empty(0, dtype=dtype)
    _core.col_sums(np.empty((3, 0), dtype=dtype), out)  # no columns: a no-op


# ---------------------------------------------------------------------------
# loss_delta
# ---------------------------------------------------------------------------


def assert_loss_matches(name, z, targets, labels, dtype, value, correct, delta, scale_tol=1.0):
    exp_value, exp_correct, exp_delta = loss_ref(name, z, targets, labels)
    rtol = RTOL[dtype] * scale_tol
    zmax = float(np.abs(z.astype(np.float64)).max())
    np.testing.assert_allclose(value, exp_value, rtol=rtol, atol=rtol * max(zmax, 1.0))
    if exp_correct is not None:
        assert correct == exp_correct
    # Compare delta scaled by its normalizer, so the tolerance is relative to O(1) terms.
    norm = z.size if name in ("mse", "binary_cross_entropy") else z.shape[0]
    np.testing.assert_allclose(
        delta.astype(np.float64) * norm, exp_delta * norm, rtol=rtol, atol=rtol * max(zmax, 1.0)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_delta_matches_numpy(dtype, shape, name):
    rng = rng_for("loss", dtype, shape, name)
    z, targets, labels = make_loss_inputs(name, shape, dtype, rng)
    z, targets, labels = readonly(z), readonly(targets), readonly(labels)  # const inputs
    value, correct, delta = call_loss(name, z, targets, labels)
    assert isinstance(value, float)
    assert delta.dtype == dtype
    assert_loss_matches(name, z, targets, labels, dtype, value, correct, delta)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LOSSES)
def test_loss_delta_extreme_logits(dtype, name):
    z = np.array(
        [[200.0, -200.0, 0.0], [-200.0, 200.0, 0.0], [0.0, 0.0, 200.0], [-200.0, -200.0, -200.0]],
        dtype=dtype,
    )
    labels = no_labels()
    if name == "cross_entropy_labels":
        targets = np.empty((0, 3), dtype=dtype)
        labels = np.array([1, 1, 0, 2], dtype=np.intp)
    elif name == "cross_entropy":
        targets = np.array([[0, 1, 0], [0, 1, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]], dtype=dtype)
    elif name == "binary_cross_entropy":
        targets = np.array([[0, 1, 0.5], [1, 0, 1], [0, 0.5, 1], [1, 0, 0.25]], dtype=dtype)
    else:
        targets = np.array([[200, 200, 0], [-200, 0, 0], [1, 2, 3], [0, 0, 0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, correct, delta = call_loss(name, z, targets, labels)
    assert np.isfinite(value)
    assert np.all(np.isfinite(delta))
    assert_loss_matches(name, z, targets, labels, dtype, value, correct, delta)
    if name == "cross_entropy_labels":
        # Rows: 400, 0, 200 and log(3) nats.
        np.testing.assert_allclose(value, (400 + 0 + 200 + np.log(3)) / 4, rtol=RTOL[dtype])
        assert correct == 1  # only row 1; row 3 ties, argmax is the first column, label 2
        np.testing.assert_allclose(delta[0] * 4, [1, -1, 0], atol=RTOL[dtype])
    if name == "binary_cross_entropy":
        # Elements with |z| = 200 and a 0/1 target cost 200 or 0; with t = 0.5 at z=0, log 2.
        assert value > 50


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2), (64, 3), (130, 64), (70, 65), (5, 4097)])
def test_cross_entropy_value_alone_equals_the_value_with_its_delta(dtype, shape):
    # evaluate_run scores softmax cross-entropy without a delta: blocks of rows in
    # a scratch block of the kernel's own (64 rows, 4096 entries), one row at a time
    # past 4096 classes. The same operations in the same order as loss_delta's, so
    # the value is the same to the bit. One input feature of 1, 2 or 4 makes the
    # logits x * w + b exact products and one rounding, alike in BLAS and NumPy.
    import fastbp

    n, k = shape
    rng = rng_for("ce-value", dtype, shape)
    X = rng.choice(np.array([1.0, 2.0, 4.0], dtype=dtype), size=(n, 1))
    labels = rng.integers(0, k, n).astype(np.intp)
    model = fastbp.Sequential(
        [fastbp.Dense(k)], loss="cross_entropy", input_dim=1, dtype=np.dtype(dtype).name
    )
    w, b = (3 * rng.normal(size=(1, k))).astype(dtype), rng.normal(size=k).astype(dtype)
    model.set_weights([(w, b)])
    logits = X @ w + b
    net = model._network
    ws = net.inference_workspace(n)
    stats = np.zeros(1, dtype=_core.struct_dtypes()["BatchStats"])
    no_targets = np.empty((0, k), dtype)
    kind = LOSS["cross_entropy_labels"]
    _core.evaluate_run(
        net.params, ws.buffer, ws.capacity, net.compiled, X, no_targets, labels, kind, 1.0, stats
    )
    with_delta, correct = _core.loss_delta(kind, logits, no_targets, labels, np.empty_like(logits))
    expected, expected_correct, _ = loss_ref("cross_entropy_labels", logits, None, labels)
    assert stats[0]["loss"] == with_delta
    assert stats[0]["correct"] == correct == expected_correct
    np.testing.assert_allclose(with_delta, expected, rtol=RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cols", range(1, 12))
def test_cross_entropy_labels_counts_a_row_correct_at_its_first_maximum(dtype, cols):
    # The row maximum runs in four interleaved maxima and a remainder: every column
    # count from 1 to 11, each maximum at every column, tied with a later column
    # (the first of the two is the prediction), and NaN, which never wins (a row
    # starting with NaN predicts column 0). A row is correct where its label is the
    # first column holding the maximum; the count says which rows were.
    rows, labels = [], []
    for at in range(cols):
        for tie in [None] + list(range(at + 1, cols)):
            row = np.arange(cols, dtype=np.float64) * -1.0 - 5  # all below the maximum
            row[at] = 3.0
            if tie is not None:
                row[tie] = 3.0
            # the first maximum (correct) and a column below the maximum (wrong);
            # tied, the first only (a scan that kept the last would miss it)
            for label in {at, (at + 1) % cols} if tie is None else {at}:
                rows.append(row.copy())
                labels.append(label)
    special = [(np.nan, 0), (np.nan, 1)] if cols > 1 else [(np.nan, 0)]
    for value, label in special:  # NaN first: column 0; NaN later: skipped
        row = np.zeros(cols)
        row[0] = value
        rows.append(row)
        labels.append(label)
        if cols > 2:
            row = np.zeros(cols)
            row[1], row[2] = np.nan, 1.0
            rows.append(row)
            labels.append(2 if label else 1)
    z = np.array(rows, dtype=dtype)
    labels = np.array(labels, dtype=np.intp)
    expected = 0
    for row, label in zip(z, labels):
        first = 0 if np.isnan(row[0]) else int(np.nanargmax(row))
        expected += first == label
    _, correct = _core.loss_delta(
        LOSS["cross_entropy_labels"], z, np.empty((0, cols), dtype), labels, np.empty_like(z)
    )
    assert correct == expected
    # each first maximum once; a NaN first with label 0, and past 2 columns a NaN
    # later, skipped, with the label of the maximum after it
    pairs = sum(1 + (cols - 1 - i) for i in range(cols))
    assert expected == pairs + 1 + (cols > 2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_labels_argmax_over_blocks_of_rows(dtype):
    # The kernel scores the rows in blocks of 64 (each row's maximum and shifted
    # logits, one exp over the block, then each row). 150 rows (two full blocks and
    # a partial one): the predicted class is each row's first largest logit, a NaN
    # never wins, and the loss and delta match NumPy's on the rows without NaN.
    rng = rng_for("ce-blocks", dtype)
    n, k = 150, 10
    z = rng.integers(-3, 4, size=(n, k)).astype(dtype)  # small integers: many ties
    z[::7, 4] = np.nan
    z[3::11, 0] = np.nan
    labels = rng.integers(0, k, n).astype(np.intp)
    expected = 0
    for row, label in zip(z, labels):
        best = 0
        for j in range(1, k):
            if row[j] > row[best]:  # False against NaN, either side
                best = j
        expected += best == label
    ties = sum(int(np.sum(row == np.nanmax(row)) > 1) for row in z)
    assert ties > 50 and expected > 0  # the cases above occur
    no_targets = np.empty((0, k), dtype=dtype)
    _, correct, _ = call_loss("cross_entropy_labels", z, no_targets, labels)
    assert correct == expected
    clean = ~np.isnan(z).any(axis=1)
    zc, lc = np.ascontiguousarray(z[clean]), np.ascontiguousarray(labels[clean])
    value, correct, delta = call_loss("cross_entropy_labels", zc, no_targets, lc)
    assert_loss_matches("cross_entropy_labels", zc, None, lc, dtype, value, correct, delta)
    # The delta written over the logits themselves: the same numbers.
    inplace = zc.copy()
    assert _core.loss_delta(LOSS["cross_entropy_labels"], inplace, no_targets, lc, inplace) == (
        value,
        correct,
    )
    np.testing.assert_array_equal(inplace, delta)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (4, 5)])
def test_loss_delta_matches_finite_differences(name, shape):
    rng = rng_for("fd-loss", name, shape)
    z, targets, labels = make_loss_inputs(name, shape, np.float64, rng, scale=1.5)
    value, _, delta = call_loss(name, z, targets, labels)
    h = 1e-6
    numeric = np.empty_like(z)
    for idx in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[idx] += h
        down[idx] -= h
        numeric[idx] = (
            call_loss(name, up, targets, labels)[0] - call_loss(name, down, targets, labels)[0]
        ) / (2 * h)
    np.testing.assert_allclose(delta, numeric, rtol=1e-6, atol=1e-9)
    if name in ("mse", "binary_cross_entropy") or shape[1] > 1:
        assert np.abs(delta).max() > 1e-4  # the check above is not vacuous


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_delta_counts_correct(dtype):
    z = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 1.0, 5.0], [4.0, 0.0, 1.0]], dtype=dtype)
    labels = np.array([0, 1, 0, 2], dtype=np.intp)
    _, correct, _ = call_loss("cross_entropy_labels", z, np.empty((0, 3), dtype=dtype), labels)
    assert correct == 2
    onehot = np.eye(3, dtype=dtype)[labels]
    _, correct, _ = call_loss("cross_entropy", z, onehot, no_labels())
    assert correct == 2
    soft = np.array(
        [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.6, 0.1, 0.3]], dtype=dtype
    )
    _, correct, _ = call_loss("cross_entropy", z, soft, no_labels())
    assert correct == 3
    zb = np.array([[2.0, -1.0, 0.0, 0.5]], dtype=dtype)
    tb = np.array([[1.0, 0.0, 0.0, 0.4]], dtype=dtype)
    _, correct, _ = call_loss("binary_cross_entropy", zb, tb, no_labels())
    assert correct == 3  # z=0 predicts 0: right for t=0; z=0.5 predicts 1: wrong for t=0.4


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_delta_errors(dtype):
    z = np.zeros((3, 4), dtype=dtype)
    t = np.zeros((3, 4), dtype=dtype)
    empty_t = np.empty((0, 4), dtype=dtype)
    labels = np.zeros(3, dtype=np.intp)
    d = np.zeros((3, 4), dtype=dtype)
    for name in ("mse", "cross_entropy", "binary_cross_entropy"):
        with pytest.raises(ValueError):  # targets of the wrong shape
            _core.loss_delta(LOSS[name], z, np.zeros((3, 5), dtype=dtype), no_labels(), d)
        with pytest.raises(ValueError):
            _core.loss_delta(LOSS[name], z, np.zeros((2, 4), dtype=dtype), no_labels(), d)
        with pytest.raises(ValueError):
            _core.loss_delta(LOSS[name], z, empty_t, no_labels(), d)
        with pytest.raises(ValueError):  # delta of the wrong shape
            _core.loss_delta(LOSS[name], z, t, no_labels(), np.zeros((3, 5), dtype=dtype))
        with pytest.raises(ValueError):  # delta is written
            _core.loss_delta(LOSS[name], z, t, no_labels(), readonly(d))
    ce = LOSS["cross_entropy_labels"]
    for bad in (2, 4, 0):
        with pytest.raises(ValueError):
            _core.loss_delta(ce, z, empty_t, np.zeros(bad, dtype=np.intp), d)
    with pytest.raises(ValueError):
        _core.loss_delta(ce, z, empty_t, labels, np.zeros((4, 3), dtype=dtype))
    for kind in (-1, 7, 99):
        with pytest.raises(ValueError):
            _core.loss_delta(kind, z, t, no_labels(), d)
    with pytest.raises(ValueError):  # empty batch
        _core.loss_delta(
            LOSS["mse"],
            np.empty((0, 4), dtype=dtype),
            np.empty((0, 4), dtype=dtype),
            no_labels(),
            np.empty((0, 4), dtype=dtype),
        )
    with pytest.raises(ValueError):
        _core.loss_delta(
            ce, np.empty((0, 4), dtype=dtype), empty_t, no_labels(), np.empty((0, 4), dtype=dtype)
        )
    np.testing.assert_array_equal(d, np.zeros((3, 4), dtype=dtype))


# ---------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------

SIZES = [1, 7, 13, 33, 300 * 517]
N_STEPS = 5


def opt_tolerances(dtype):
    return dict(rtol=RTOL[dtype], atol=1e-6 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    "momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.5, True)]
)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_sgd_update_matches_pytorch_rule(dtype, n, momentum, nesterov, weight_decay):
    rng = rng_for("sgd", dtype, n, momentum, nesterov, weight_decay)
    lr = 0.1
    params = rng.normal(size=n).astype(dtype)
    buf = np.zeros(n, dtype=dtype) if momentum else np.empty(0, dtype=dtype)
    p_ref = params.astype(np.float64)
    b_ref = np.zeros(n)
    for _ in range(N_STEPS):
        grads = readonly(rng.normal(size=n).astype(dtype))
        _core.sgd_update(params, grads, buf, lr, momentum, weight_decay, nesterov)
        g = grads.astype(np.float64) + weight_decay * p_ref
        if momentum:
            b_ref = momentum * b_ref + g
            g = g + momentum * b_ref if nesterov else b_ref
        p_ref = p_ref - lr * g
        np.testing.assert_allclose(params, p_ref, **opt_tolerances(dtype))
        if momentum:
            np.testing.assert_allclose(buf, b_ref, **opt_tolerances(dtype))
    assert params.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_errors(dtype):
    p = np.ones(5, dtype=dtype)
    with pytest.raises(ValueError):
        _core.sgd_update(p, np.ones(4, dtype=dtype), np.empty(0, dtype=dtype), 0.1, 0.0, 0.0, False)
    with pytest.raises(ValueError):  # momentum needs a buffer of the right size
        _core.sgd_update(p, np.ones(5, dtype=dtype), np.empty(0, dtype=dtype), 0.1, 0.9, 0.0, False)
    with pytest.raises(ValueError):
        _core.sgd_update(p, np.ones(5, dtype=dtype), np.zeros(6, dtype=dtype), 0.1, 0.9, 0.0, True)
    with pytest.raises(ValueError):
        _core.sgd_update(readonly(p), np.ones(5, dtype=dtype), np.empty(0, dtype=dtype), 0.1)
    np.testing.assert_array_equal(p, np.ones(5, dtype=dtype))
    _core.sgd_update(
        np.empty(0, dtype=dtype), np.empty(0, dtype=dtype), np.empty(0, dtype=dtype), 0.1, 0.9
    )


ADAM_SETTINGS = [  # lr, beta1, beta2, eps
    (1e-3, 0.9, 0.999, 1e-8),
    (0.05, 0.5, 0.9, 0.1),  # eps large enough to matter
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("setting", ADAM_SETTINGS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_update_matches_pytorch_rule(dtype, n, setting, weight_decay):
    lr, b1, b2, adam_eps = setting
    rng = rng_for("adam", dtype, n, setting, weight_decay)
    params = rng.normal(size=n).astype(dtype)
    m = np.zeros(n, dtype=dtype)
    v = np.zeros(n, dtype=dtype)
    p_ref, m_ref, v_ref = params.astype(np.float64), np.zeros(n), np.zeros(n)
    m_mag = np.zeros(n)  # the same average of |grad| + wd*|p|: the scale of m's rounding error
    for t in range(1, N_STEPS + 2):
        grads = readonly((rng.normal(size=n) * rng.choice([1e-3, 1.0, 10.0], size=n)).astype(dtype))
        _core.adam_update(params, grads, m, v, t, lr, b1, b2, adam_eps, weight_decay)
        g = grads.astype(np.float64) + weight_decay * p_ref
        m_ref = m_ref + (1 - b1) * (g - m_ref)
        g_mag = np.abs(grads.astype(np.float64)) + weight_decay * np.abs(p_ref)
        m_mag = m_mag + (1 - b1) * (g_mag - m_mag)
        v_ref = b2 * v_ref + (1 - b2) * g * g
        p_ref = p_ref - (lr / (1 - b1**t)) * m_ref / (
            np.sqrt(v_ref) / np.sqrt(1 - b2**t) + adam_eps
        )
        tol = opt_tolerances(dtype)
        err = np.abs(m - m_ref)
        assert np.all(err <= tol["rtol"] * m_mag), f"step {t}: m error {err.max():.3g}"
        np.testing.assert_allclose(v, v_ref, rtol=tol["rtol"], atol=tol["atol"] * 1e-3)
        np.testing.assert_allclose(params, p_ref, **tol)
    assert params.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_first_step_moves_each_parameter_by_about_lr(dtype):
    # Known closed form: at t=1, m_hat = g, v_hat = g^2, so p -= lr * g / (|g| + eps).
    g = np.array([3.0, -0.25, 1e-2, -40.0], dtype=dtype)
    p = np.zeros(4, dtype=dtype)
    _core.adam_update(
        p, g, np.zeros(4, dtype=dtype), np.zeros(4, dtype=dtype), 1, 0.01, 0.9, 0.999, 1e-8
    )
    g64 = g.astype(np.float64)
    np.testing.assert_allclose(p, -0.01 * g64 / (np.abs(g64) + 1e-8), rtol=10 * RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_update_errors(dtype):
    p = np.ones(5, dtype=dtype)
    ok = np.ones(5, dtype=dtype)
    for args in [
        (np.ones(4, dtype=dtype), ok.copy(), ok.copy()),
        (ok, np.ones(6, dtype=dtype), ok.copy()),
        (ok, ok.copy(), np.ones(4, dtype=dtype)),
    ]:
        with pytest.raises(ValueError):
            _core.adam_update(p, *args, 1, 1e-3, 0.9, 0.999, 1e-8)
    for step in (0, -1):
        with pytest.raises(ValueError):
            _core.adam_update(p, ok, ok.copy(), ok.copy(), step, 1e-3, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError):
        _core.adam_update(readonly(p), ok, ok.copy(), ok.copy(), 1, 1e-3, 0.9, 0.999, 1e-8)
    with pytest.raises(ValueError):
        _core.adam_update(p, ok, readonly(ok), ok.copy(), 1, 1e-3, 0.9, 0.999, 1e-8)
    np.testing.assert_array_equal(p, np.ones(5, dtype=dtype))


@pytest.mark.parametrize("bad", [[3, 0], [0, -1]])
def test_loss_delta_rejects_labels_out_of_range(bad):
    z, delta = np.zeros((2, 3)), np.full((2, 3), 7.0)
    with pytest.raises(ValueError, match="class labels"):
        _core.loss_delta(
            _core.LOSS_CODES["cross_entropy_labels"],
            z,
            np.empty((0, 3)),
            np.array(bad, dtype=np.intp),
            delta,
        )
    assert np.all(delta == 7.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_vectorized_math_within_4_ulp(dtype, name):
    """The branch-free exp behind tanh, sigmoid and softmax is accurate to a few ulp
    over the whole range, near zero included (results that would be subnormal may
    flush to zero)."""
    x = np.concatenate(
        [np.linspace(-750, 750, 200001), np.logspace(-12, 1.5, 2000), -np.logspace(-12, 1.5, 2000)]
    ).astype(dtype)
    z = x.reshape(1, -1).copy()
    _core.bias_act_forward(z, np.empty(0, dtype=dtype), _core.ACTIVATION_CODES[name])
    x64 = x.astype(np.float64)
    with np.errstate(over="ignore"):
        want = np.tanh(x64) if name == "tanh" else 1 / (1 + np.exp(-x64))
    normal = np.abs(want) >= np.finfo(dtype).tiny
    ulp = np.spacing(want.astype(dtype)).astype(np.float64)
    err = np.abs(z[0].astype(np.float64) - want) / np.abs(ulp)
    assert err[normal].max() <= 4
    assert np.abs(z[0] - want)[~normal].max(initial=0) <= np.finfo(dtype).tiny
    assert np.isnan(_apply(name, np.array([[np.nan]], dtype=dtype)))[0, 0]


def _apply(name, z):
    _core.bias_act_forward(z, np.empty(0, dtype=z.dtype), _core.ACTIVATION_CODES[name])
    return z


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elu_gelu_softplus_against_reference(dtype):
    import math

    x = np.concatenate([np.linspace(-30, 30, 2001), [-1e-7, 0.0, 1e-7, 19.9, 20.1, -100.0]])
    z = x.astype(dtype).reshape(1, -1)
    x64 = z[0].astype(np.float64)
    erf = np.vectorize(math.erf)
    references = {
        "elu": np.where(x64 > 0, x64, 1.5 * np.expm1(np.minimum(x64, 0))),
        "gelu": 0.5 * x64 * (1 + erf(x64 / math.sqrt(2))),
        "softplus": np.where(x64 > 20, x64, np.log1p(np.exp(np.minimum(x64, 20)))),
    }
    derivatives = {
        "elu": np.where(x64 > 0, 1.0, 1.5 * np.exp(np.minimum(x64, 0))),
        "gelu": 0.5 * (1 + erf(x64 / math.sqrt(2)))
        + x64 * np.exp(-(x64**2) / 2) / math.sqrt(2 * math.pi),
        "softplus": 1 / (1 + np.exp(-x64)),
    }
    rtol = 4e-6 if dtype == np.float32 else 1e-13
    for name, want in references.items():
        out = z.copy()
        _core.bias_act_forward(out, np.empty(0, dtype=dtype), _core.ACTIVATION_CODES[name], 1.5)
        np.testing.assert_allclose(out[0], want, rtol=rtol, atol=np.finfo(dtype).tiny * 10)
        d = np.ones_like(z)
        _core.act_backward(out, d, _core.ACTIVATION_CODES[name], 1.5, z)
        # ELU's derivative is a + alpha from the output a (as PyTorch computes it), so
        # it is exact to an ulp of alpha, not relatively, where it is tiny.
        np.testing.assert_allclose(
            d[0], derivatives[name], rtol=rtol * 10, atol=4e-7 if dtype == np.float32 else 1e-15
        )


def test_gelu_backward_needs_z():
    a = np.zeros((1, 2))
    with pytest.raises(ValueError, match="needs z"):
        _core.act_backward(a, a.copy(), _core.ACTIVATION_CODES["gelu"])


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(1, 40),
    k=st.integers(1, 40),
    n=st.integers(1, 40),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matmul_property_any_shape(m, k, n, trans_a, trans_b, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, m) if trans_a else (m, k))
    b = rng.normal(size=(n, k) if trans_b else (k, n))
    out = rng.normal(size=(m, n))
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + 0.5 * out
    _core.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b, beta=0.5)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 30),
    batch=st.integers(1, 12),
    width=st.integers(1, 9),
    seed=st.integers(0, 2**16),
)
def test_training_any_shape_matches_layer_by_layer_loop(rows, batch, width, seed):
    """For any data size, batch size and width, the fused step equals the hand loop."""
    import fastbp

    rng = np.random.default_rng(seed)
    X, y = rng.normal(size=(rows, 3)), rng.normal(size=(rows, 2))
    model = fastbp.Sequential(
        [fastbp.Dense(width, "tanh"), fastbp.Dense(2)],
        loss="mse",
        optimizer=fastbp.SGD(lr=0.1, momentum=0.5),
        dtype="float64",
        seed=seed,
        input_dim=3,
    )
    hidden, out = fastbp.Dense(width, "tanh"), fastbp.Dense(2)
    hidden.build(3, dtype=np.float64)
    out.build(width, dtype=np.float64)
    (w1, b1), (w2, b2) = model.get_weights()
    hidden.weight[...], hidden.bias[...], out.weight[...], out.bias[...] = w1, b1, w2, b2
    mse, opt = fastbp.MSE(), fastbp.SGD(lr=0.1, momentum=0.5)
    for start in range(0, rows, batch):
        mse.forward(out.forward(hidden.forward(X[start : start + batch])), y[start : start + batch])
        hidden.backward(out.backward(mse.backward()))
        opt.step(hidden.params + out.params, hidden.grads + out.grads)
    model.fit(X, y, epochs=1, batch_size=batch, shuffle=False)
    np.testing.assert_allclose(model.get_weights()[1][0], out.weight, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(model.get_weights()[0][0], hidden.weight, rtol=1e-11, atol=1e-13)


# ---------------------------------------------------------------------------
# the epoch's row order
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 7, 1000])
def test_permutation_is_a_permutation_fixed_by_its_seed(n):
    order = np.full(n, -1, dtype=np.intp)
    _core.permutation(order, 12345)
    assert sorted(order.tolist()) == list(range(n))
    again = np.empty(n, dtype=np.intp)
    _core.permutation(again, 12345)
    np.testing.assert_array_equal(again, order)  # a function of the seed alone
    if n >= 7:
        _core.permutation(again, 12346)
        assert (again != order).any()


def _reference_permutation(n, seed):
    """The rule in plain Python integers: Fisher-Yates from the last row down over
    splitmix64's stream, each bound drawn by Lemire's multiply-and-reject method
    (a draw whose low product is below 2^64 mod bound is redrawn)."""
    mask = 2**64 - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    order, state = list(range(n)), seed
    for i in range(n - 1, 0, -1):
        bound = i + 1
        while True:
            state = (state + 0x9E3779B97F4A7C15) & mask
            product = mix(state) * bound
            if product & mask >= 2**64 % bound:
                break
        j = product >> 64
        order[i], order[j] = order[j], order[i]
    return order


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
@pytest.mark.parametrize("seed", [0, 12345, 2**64 - 1])
def test_permutation_is_the_rule_on_every_machine(n, seed):
    # The same orders on every machine and build: the kernel's draws, integer
    # arithmetic only, against the rule written out (the kernel divides only for a
    # draw whose low product falls below the bound).
    order = np.empty(n, dtype=np.intp)
    _core.permutation(order, seed)
    assert order.tolist() == _reference_permutation(n, seed)


def test_permutation_draws_every_order_equally_often():
    # All 24 orders of 4 rows over 24,000 seeds: a chi-square statistic (23 degrees
    # of freedom) above 70 has probability below 1e-6 for uniform draws; a biased
    # shuffle (a draw modulo i, or i + 1 swapped for i) scores in the thousands.
    order = np.empty(4, dtype=np.intp)
    counts = {}
    for seed in range(24_000):
        _core.permutation(order, seed)
        counts[tuple(order)] = counts.get(tuple(order), 0) + 1
    assert len(counts) == 24
    observed = np.array(list(counts.values()), dtype=float)
    assert ((observed - 1000) ** 2 / 1000).sum() < 70


def test_permutation_puts_each_row_anywhere_equally_often():
    # Where row 0 of 50 lands, over 20,000 seeds (400 expected per place; 49
    # degrees of freedom, probability of a statistic above 110 below 1e-6).
    order = np.empty(50, dtype=np.intp)
    places = np.zeros(50)
    for seed in range(20_000):
        _core.permutation(order, seed * 0x9E3779B97F4A7C15 % 2**64)
        places[np.flatnonzero(order == 0)[0]] += 1
    assert ((places - 400) ** 2 / 400).sum() < 110
