# cython: language_level=3
"""Compiled kernels of fastbp.

The data model (what crosses from Python: the enums, ``LayerPlan``, ``NetPlan``,
``OptimizerConfig``, ``BatchStats``) is declared once in ``fastbp/_core.pxd``; read it
first. Design, in a few points:

1. Every kernel is a ``cdef ... noexcept nogil`` function over raw pointers to
   row-major (C-contiguous) data, written once for ``floating`` (float32 and
   float64). Kernels never allocate, never validate and never touch a Python
   object: the Python layer (``fastbp.network``, ``fastbp.trainer``) checks its inputs
   once, owns every buffer and hands the kernels preallocated memory.
2. Dense algebra goes through BLAS ``sgemm``/``dgemm`` from
   ``scipy.linalg.cython_blas``. BLAS is column-major; a row-major product
   ``C = op(A) @ op(B)`` is computed as the column-major ``C^T = op(B)^T @ op(A)^T``,
   so no array is ever transposed or copied.
3. The output activation is fused with the loss (softmax with cross-entropy,
   sigmoid with binary cross-entropy, exp with Poisson): one pass computes the loss
   value and the delta ``dL/dz`` with respect to the logits.
4. A training step is a sequence of named phases (``_gather``, ``_forward``,
   ``_loss_phase``, ``_deltas``, ``_gradients``, ``_reduce``, ``_clip_and_update``),
   each run by every thread of a team on its own share (rows for the forward and
   backward passes; for the gradients, and then the update, a contiguous range of
   the weight rows of all layers, taken in order, of equal work, and the bias
   entries of the layers whose rows it holds), with a barrier between phases that
   read each other's results: two a step without gradient clipping. ``train_run`` runs
   all of them for a run of minibatches without the GIL and without allocating;
   ``batch_gradients`` and ``apply_update`` run the two halves (gradients of a
   minibatch; the update from given gradients) for callers that reduce gradients in
   between. ``evaluate_run``, ``predict_run`` and ``input_gradient_run`` reuse the
   same passes, so gradient checks test the training path.
5. A workspace of capacity ``c`` rows is one flat array: each buffer of the plan
   (``LayerPlan.out_at``, ..., ``NetPlan.x_at``) starts at ``c * offset`` and holds ``c``
   rows. Inference needs only the first ``NetPlan.infer_width * c`` elements.
6. The ``def`` functions are the module's Python boundary. A ``Plan`` holds the
   plan structs (typed memoryviews of the arrays the Python side owns) after one
   structural check; each call then checks only its own buffers and data (shapes,
   sizes, indices: a wrong one raises, never corrupts memory) and runs the kernels.
"""

from cython cimport floating
from libc.math cimport log, logf, log1p, log1pf, sqrt, fabs, isfinite, pow, exp, erf, M_SQRT1_2
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm

cimport numpy as cnp
from cython.parallel cimport parallel

import numpy as np

from fastbp import _codes

cnp.import_array()

MAX_THREADS = MAX_PARTS
HAVE_OPENMP = bool(FBP_HAVE_OPENMP)
FLUSHES_SUBNORMALS = bool(FBP_FLUSHES_SUBNORMALS)
STATUS_OK = ST_OK
STATUS_NONFINITE_LOSS = ST_NONFINITE_LOSS


def _check_codes():
    # The compiled enums against the one Python list of codes.
    compiled = {
        "activations": [ACT_IDENTITY, ACT_SIGMOID, ACT_TANH, ACT_RELU, ACT_LEAKY_RELU,
                        ACT_SOFTMAX, ACT_ELU, ACT_GELU, ACT_SOFTPLUS, ACT_EXP],
        "losses": [LOSS_MSE, LOSS_CE_LABELS, LOSS_CE_SOFT, LOSS_BCE, LOSS_MAE, LOSS_HUBER,
                   LOSS_POISSON],
        "optimizers": [OPT_SGD, OPT_ADAM, OPT_RMSPROP, OPT_ADAGRAD],
    }
    python = {"activations": list(_codes.ACTIVATIONS.values()),
              "losses": list(_codes.LOSSES.values()),
              "optimizers": list(_codes.OPTIMIZERS.values())}
    counts = {"activations": ACT_COUNT, "losses": LOSS_COUNT, "optimizers": OPT_COUNT}
    for name in compiled:
        if compiled[name] != python[name] or list(range(counts[name])) != python[name]:
            raise ImportError("fastbp._core was built with other %s codes than fastbp._codes"
                              " lists: rebuild fastbp" % name)
    if (NO_SKIP, SKIP_INPUT, ST_OK, ST_NONFINITE_LOSS) != (
            _codes.NO_SKIP, _codes.SKIP_INPUT, _codes.STATUS_OK, _codes.STATUS_NONFINITE_LOSS):
        raise ImportError("fastbp._core disagrees with fastbp._codes: rebuild fastbp")


_check_codes()


def struct_dtypes():
    """The compiled structs as NumPy sees them through a memoryview (field names,
    types and offsets), to compare with ``fastbp._codes.STRUCTS``."""
    cdef LayerPlan layer[1]
    cdef NetPlan net[1]
    cdef OptimizerConfig opt[1]
    cdef BatchStats stats[1]
    return {"LayerPlan": np.asarray(<LayerPlan[:1]>layer).dtype,
            "NetPlan": np.asarray(<NetPlan[:1]>net).dtype,
            "OptimizerConfig": np.asarray(<OptimizerConfig[:1]>opt).dtype,
            "BatchStats": np.asarray(<BatchStats[:1]>stats).dtype}


# ---------------------------------------------------------------------------
# Scalar helpers: single precision math for float32, double for float64.
# ---------------------------------------------------------------------------

cdef inline floating _log(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef extern from "_parallel.h" nogil:
    # OpenMP glue: a barrier for the current team, and the team as it runs.
    const int FBP_HAVE_OPENMP
    void fbp_barrier()
    int fbp_team_size()
    int fbp_thread_id()
    # Phase timers of the step, in a build with FASTBP_PHASE_TIMES=1 (see the header).
    const int FBP_PHASE_TIMES
    const int FBP_PHASE_COUNT
    const int FBP_PHASE_PARTS
    enum: FBP_PHASE_ROW
    double fbp_phase_rows[][FBP_PHASE_ROW]
    double fbp_phase_clock()
    void fbp_phase_mark(int part, int phase, double* since)
    void fbp_phase_step(int part)


cdef extern from "_fpenv.h" nogil:
    # Subnormals flushed to zero on the calling thread while it trains (see the header).
    const int FBP_FLUSHES_SUBNORMALS
    unsigned long long fbp_flush_begin()
    void fbp_flush_end(unsigned long long saved)


cdef extern from "_prefetch.h" nogil:
    # A hint to fetch the rows of the next shuffled minibatch (see the header).
    void fbp_prefetch_rows(const void* base, const intp* order, Py_ssize_t n,
                           Py_ssize_t row_bytes)


cdef extern from "_random.h" nogil:
    # The 64 x 64 -> 128-bit product of unbiased bounded draws (see the header).
    unsigned long long fbp_mul_wide(unsigned long long a, unsigned long long b,
                                    unsigned long long* low)


cdef extern from "_vmath.h" nogil:
    # Branch-free, vectorizable exp, tanh and sigmoid, and the array loops built on
    # them, compiled for several instruction sets (see the header).
    float fbp_expf(float)
    double fbp_exp(double)
    float fbp_tanhf(float)
    double fbp_tanh(double)
    float fbp_sigmoidf(float)
    double fbp_sigmoid(double)
    float fbp_expm1_negf(float)
    double fbp_expm1_neg(double)
    void fbp_add_bias_f32(float* z, const float* bias, Py_ssize_t rows, Py_ssize_t cols)
    void fbp_add_bias_f64(double* z, const double* bias, Py_ssize_t rows, Py_ssize_t cols)
    void fbp_bias_relu_f32(float* z, const float* bias, Py_ssize_t rows, Py_ssize_t cols)
    void fbp_bias_relu_f64(double* z, const double* bias, Py_ssize_t rows, Py_ssize_t cols)
    void fbp_relu_f32(float* z, Py_ssize_t n)
    void fbp_relu_f64(double* z, Py_ssize_t n)
    void fbp_relu_backward_f32(const float* a, float* d, Py_ssize_t n)
    void fbp_relu_backward_f64(const double* a, double* d, Py_ssize_t n)
    void fbp_tanh_backward_f32(const float* a, float* d, Py_ssize_t n)
    void fbp_tanh_backward_f64(const double* a, double* d, Py_ssize_t n)
    void fbp_sigmoid_backward_f32(const float* a, float* d, Py_ssize_t n)
    void fbp_sigmoid_backward_f64(const double* a, double* d, Py_ssize_t n)
    void fbp_col_sums_f32(const float* d, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                          float* out)
    void fbp_col_sums_f64(const double* d, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                          double* out)
    void fbp_exp_f32(float* z, Py_ssize_t n)
    void fbp_exp_f64(double* z, Py_ssize_t n)
    void fbp_tanh_f32(float* z, Py_ssize_t n)
    void fbp_tanh_f64(double* z, Py_ssize_t n)
    void fbp_sigmoid_f32(float* z, Py_ssize_t n)
    void fbp_sigmoid_f64(double* z, Py_ssize_t n)
    void fbp_sgd_f32(float* p, const float* g, float* buf, Py_ssize_t n, float lr,
                     float momentum, float wd, int nesterov)
    void fbp_sgd_f64(double* p, const double* g, double* buf, Py_ssize_t n, double lr,
                     double momentum, double wd, int nesterov)
    void fbp_adam_f32(float* p, const float* g, float* m, float* v, Py_ssize_t n,
                      float step_size, float bias2_sqrt, float one_minus_beta1, float beta2,
                      float one_minus_beta2, float wd, float eps, float decay)
    void fbp_adam_f64(double* p, const double* g, double* m, double* v, Py_ssize_t n,
                      double step_size, double bias2_sqrt, double one_minus_beta1,
                      double beta2, double one_minus_beta2, double wd, double eps,
                      double decay)
    void fbp_rmsprop_f32(float* p, const float* g, float* v, float* buf, float* avg,
                         Py_ssize_t n, float lr, float alpha, float eps, float wd,
                         float momentum)
    void fbp_rmsprop_f64(double* p, const double* g, double* v, double* buf, double* avg,
                         Py_ssize_t n, double lr, double alpha, double eps, double wd,
                         double momentum)
    void fbp_adagrad_f32(float* p, const float* g, float* sum, Py_ssize_t n, float clr,
                         float wd, float eps)
    void fbp_adagrad_f64(double* p, const double* g, double* sum, Py_ssize_t n, double clr,
                         double wd, double eps)
    double fbp_sum_squares_f32(const float* g, Py_ssize_t n)
    double fbp_sum_squares_f64(const double* g, Py_ssize_t n)
    void fbp_scale_f32(float* g, Py_ssize_t n, float factor)
    void fbp_scale_f64(double* g, Py_ssize_t n, double factor)
    void fbp_clamp_f32(float* g, Py_ssize_t n, float limit)
    void fbp_clamp_f64(double* g, Py_ssize_t n, double limit)


cdef extern from "_smallgemm.h" nogil:
    # Register-blocked products read in place, for the small products where OpenBLAS's
    # packing costs as much as the arithmetic (see the header).
    int fbp_small_gemm_cpu()  # the widest version this CPU runs, one of:
    enum: FBP_GEMM_NONE, FBP_GEMM_PORTABLE, FBP_GEMM_AVX2, FBP_GEMM_AVX512
    enum: FBP_GEMM_KB  # the rows of B copied at a time (always, transposed)
    void fbp_gemm_small_f32(int isa, int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n,
                            Py_ssize_t k, const float* a, Py_ssize_t lda, const float* b,
                            Py_ssize_t ldb, int accumulate, float* c, Py_ssize_t ldc)
    void fbp_gemm_small_f64(int isa, int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n,
                            Py_ssize_t k, const double* a, Py_ssize_t lda, const double* b,
                            Py_ssize_t ldb, int accumulate, double* c, Py_ssize_t ldc)


cdef extern from "_peak.h" nogil:
    # The core's multiply-add peak, for bench/run.py (see the header).
    int fbp_peak_isa()
    int fbp_peak_lanes(int isa, int itemsize)
    int fbp_peak_chains(int isa)
    double fbp_peak_f32(int isa, long long rounds, float start, float m, float c)
    double fbp_peak_f64(int isa, long long rounds, double start, double m, double c)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return fbp_expf(x)
    else:
        return fbp_exp(x)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    if floating is float:
        return fbp_sigmoidf(x)
    else:
        return fbp_sigmoid(x)


cdef inline floating _expm1_neg(floating x) noexcept nogil:
    if floating is float:
        return fbp_expm1_negf(x)
    else:
        return fbp_expm1_neg(x)


# GELU's derivative needs the input z: Phi(z) + z phi(z), phi the standard normal density.
cdef inline double _gelu_grad(double z) noexcept nogil:
    return 0.5 * (1 + erf(z * M_SQRT1_2)) + z * 0.3989422804014327 * exp(-0.5 * z * z)


# ---------------------------------------------------------------------------
# BLAS
# ---------------------------------------------------------------------------

# The widest version of the small-product kernels this CPU runs (_smallgemm.h's
# FBP_GEMM_* codes: 0 none, 1 portable (SSE2 on x86-64, NEON on arm64), 2 AVX2 and
# FMA, 3 AVX-512F as well), decided once at import; the versions by name (their
# codes are the indices), and those it runs.
cdef int _SMALL_GEMM_CPU = fbp_small_gemm_cpu()
SMALL_GEMM_VERSIONS = (None, "portable", "avx2", "avx512")
SMALL_GEMM_ISAS = SMALL_GEMM_VERSIONS[1:_SMALL_GEMM_CPU + 1]
# Path of a product: BLAS or the small-product kernel, or chosen by shape.
cdef enum:
    GEMM_AUTO = 0
    GEMM_BLAS = 1
    GEMM_SMALL = 2
SMALL_GEMM_CPU = _SMALL_GEMM_CPU
GEMM_PATHS = {"auto": GEMM_AUTO, "blas": GEMM_BLAS, "small": GEMM_SMALL}


cdef inline bint _small_product(bint trans_a, bint trans_b, int m, int n, int k,
                                int itemsize, int isa) noexcept nogil:
    """Whether a product of ``op(A)`` (m x k) by ``op(B)`` (k x n) of ``itemsize``-byte
    entries takes version ``isa`` of the small-product kernel (the step: the widest
    this CPU runs) rather than BLAS. The rule reads only the shapes and the version,
    so a product's path, and its bits, are the same on every run
    of a machine. Each version's thresholds were fitted to ``bench/gemm_paths.py``
    (one thread, 2940 products of the NN, NT and TN forms, m from 1 to 256, n from 2
    to 512, k from 10 to 784, both dtypes), on the CPU named.

    The AVX2 and AVX-512 versions: one or two rows of C with B not transposed (wide
    blocks that read B once, where BLAS would copy all of it first) always take the
    kernel; a row of C over 2 KB never does.

    AVX2 (AMD Zen 3, OpenBLAS's Haswell kernels, which pack both operands;
    ``bench/GEMM_PATHS.md``): by the kernel's costs. It reads all of A again for
    each strip of two vectors' columns of C (so A must stay near, and a wide C
    tightens that), and it copies B first only for up to ``FBP_GEMM_KB`` of its rows
    (B read in place from rows a power of two apart falls out of the L1 cache). A C
    one strip wide (a row of at most 64 bytes) reads A once, whatever its size;
    there only float32 products of 2-7 columns over more than 32 rows, with A not
    transposed, stay in BLAS (a narrow block fills less than a vector). Two strips
    (at most 128 bytes) read it twice, still faster than BLAS whatever its size.
    Wider, A is at most 1 MB with B transposed (copied in chunks of ``FBP_GEMM_KB``
    rows, so always in the cache), else 256 KB, or 128 KB when k exceeds
    ``FBP_GEMM_KB``. The rule's path takes on average 1.6% longer than the faster of
    the two (always BLAS: 83%). The tiny, small and deep networks' products run
    1.1-2x faster in the kernel, one-row products 3-10x, gradients of narrow outputs
    1.5-3x, and the products of layers 256 wide over 128 rows 1.1-1.2x.

    AVX-512 (AMD Zen 4, where OpenBLAS runs its SkylakeX kernels, with small-product
    paths of their own; ``bench/GEMM_PATHS_AVX512.md``): the kernel wins from rows of
    C of two vectors' lanes (128 bytes), or one vector's (64 bytes) with B transposed
    and more than one row, while A is at most 1 MB (it is read again for each strip:
    beyond the L2 cache, BLAS's blocking wins). Narrower products stay in BLAS,
    whose small-matrix kernels for them fill the vectors better, up to OpenBLAS's
    own limit for those kernels, m * n * k of a million (100 cubed); a narrow product
    past it goes through BLAS's packed path, and there the kernel, which reads A
    once for one strip whatever its size, is 1.2-2.5x faster (every such product of
    the grid with rows of 32 bytes or more: a 10-class output over 128 rows and 784
    inputs, or the medium network's). The rule's path takes on average 4.1% longer
    than the faster of the two (always BLAS: 13.6%; fitted to earlier runs of the
    grid, so this is nearly out of sample); the products of the networks' layers from
    32 to 512 wide run 1.1-1.8x faster in the kernel.

    Portable (16-byte vectors: SSE2 on an x86-64 CPU without AVX2, NEON on arm64;
    ``bench/GEMM_PATHS_PORTABLE.md``): fitted on Zen 4 against OpenBLAS held to its
    SSE kernels, both sides with 16-byte vectors, a stand-in for arm64, which no
    machine of ours is. There the kernel loses most float32 products (0.4-0.8x: SSE2
    has no broadcast, so each entry of A costs a shuffle) and wins most float64 ones
    (1.0-2.5x); the rule keeps only the wins that held by a margin, as one for a CPU
    it was not measured on must: a one-row float32 product with B not transposed and
    whole vectors (n a multiple of 4; 1.5-3x, a partial vector's masked lanes cost
    more), a float64 product of one or two rows with B not transposed (1.6-7x), and
    a float64 product with rows of C of at most 64 bytes (8 columns) over more rows
    (1.4-2.5x). Its path takes on average 6.5% longer than the faster (always BLAS:
    25%), and never takes the kernel where it is more than 12% slower."""
    cdef long long row = <long long>n * itemsize, size = <long long>m * k * itemsize
    if isa == FBP_GEMM_NONE or m < 1 or n < 1 or k < 1:
        return False
    if isa == FBP_GEMM_PORTABLE:
        if m <= 2 and not trans_b:  # the wide blocks
            return itemsize == 8 or (m == 1 and n % 4 == 0)
        return itemsize == 8 and row <= 64 and m > 2
    if m <= 2 and not trans_b:
        return True
    if row > 2048:
        return False
    if isa == FBP_GEMM_AVX512:
        if row < (64 if trans_b else 128):  # one strip: BLAS's small kernels, up to 100^3
            return row >= 32 and <double>m * n * k > 1e6
        if size > 1048576:
            return False
        return m >= 2 if trans_b else True
    if row <= 64:
        return trans_a or itemsize == 8 or n >= 8 or m <= 32
    if row <= 128:
        return True
    if trans_b:
        return size <= 1048576
    return size <= (262144 if k <= FBP_GEMM_KB else 131072)


cdef void _gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                const floating* a, int lda, const floating* b, int ldb,
                floating beta, floating* c, int ldc, int path=GEMM_AUTO,
                int isa=0) noexcept nogil:
    """Row-major ``C (m x n) = alpha * op(A) (m x k) @ op(B) (k x n) + beta * C``.

    ``lda``, ``ldb`` and ``ldc`` are the row strides (in elements) of A, B and C as
    stored. A small product (``_small_product``) with alpha 1 and beta 0 or 1 runs
    the small-product kernel; any other product BLAS, as the column-major product
    ``C^T = op(B)^T @ op(A)^T``. ``path`` forces one (GEMM_SMALL: the CPU must run
    it, alpha be 1 and beta 0 or 1, m, n, k at least 1); ``isa`` a version of the
    kernel this CPU runs (0: the widest).
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    cdef int version = isa if isa else _SMALL_GEMM_CPU
    if path == GEMM_SMALL or (path == GEMM_AUTO and alpha == 1 and (beta == 0 or beta == 1)
                              and _small_product(trans_a, trans_b, m, n, k,
                                                 sizeof(floating), version)):
        if floating is float:
            fbp_gemm_small_f32(version, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta != 0,
                               c, ldc)
        else:
            fbp_gemm_small_f64(version, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta != 0,
                               c, ldc)
        return
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


# ---------------------------------------------------------------------------
# Bias and activations
# ---------------------------------------------------------------------------

cdef void _softmax_rows(floating* z, Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef floating* row
    cdef floating top, total
    for i in range(rows):
        row = z + i * cols
        top = row[0]
        for j in range(1, cols):
            top = row[j] if row[j] > top else top
        for j in range(cols):  # vectorized
            row[j] = _exp(row[j] - top)
        total = 0
        for j in range(cols):
            total = total + row[j]
        total = 1 / total
        for j in range(cols):
            row[j] = row[j] * total


cdef void _bias_act(floating* z, const floating* bias, Py_ssize_t rows, Py_ssize_t cols,
                    int act, floating param, floating* keep_z) noexcept nogil:
    """In place ``z = f(z + bias)`` (bias broadcast over rows; NULL for none). When
    ``keep_z`` is not NULL, ``z + bias`` is copied there first (GELU's backward
    needs it). ``param``: leaky_relu's negative slope, ELU's alpha.

    One loop per activation, branch-free in the element, so that each vectorizes;
    the bias, relu and its fusion for the usual hidden layer are loops of _vmath.h,
    compiled for AVX-512 and AVX2 too (exact operations: the same bits on each).
    """
    cdef Py_ssize_t i, size = rows * cols
    cdef floating v
    if bias != NULL and act == ACT_RELU and keep_z == NULL:  # the usual hidden layer
        if floating is float:
            fbp_bias_relu_f32(z, bias, rows, cols)
        else:
            fbp_bias_relu_f64(z, bias, rows, cols)
        return
    if bias != NULL:
        if floating is float:
            fbp_add_bias_f32(z, bias, rows, cols)
        else:
            fbp_add_bias_f64(z, bias, rows, cols)
    if keep_z != NULL:
        memcpy(keep_z, z, size * sizeof(floating))
    if act == ACT_RELU:
        if floating is float:
            fbp_relu_f32(z, size)
        else:
            fbp_relu_f64(z, size)
    elif act == ACT_LEAKY_RELU:
        for i in range(size):
            v = z[i]
            z[i] = v * param if v < 0 else v
    elif act == ACT_SIGMOID:
        if floating is float:
            fbp_sigmoid_f32(z, size)
        else:
            fbp_sigmoid_f64(z, size)
    elif act == ACT_TANH:
        if floating is float:
            fbp_tanh_f32(z, size)
        else:
            fbp_tanh_f64(z, size)
    elif act == ACT_SOFTMAX:
        _softmax_rows(z, rows, cols)
    elif act == ACT_ELU:
        for i in range(size):
            v = z[i]
            z[i] = param * _expm1_neg(v) if v < 0 else v
    elif act == ACT_SOFTPLUS:
        # log(1 + e^z), PyTorch's threshold: z itself above 20, where they agree.
        for i in range(size):
            v = z[i]
            z[i] = v if v > 20 else log1p(exp(v))
    elif act == ACT_GELU:
        for i in range(size):
            v = z[i]
            z[i] = 0.5 * v * (1 + erf(v * M_SQRT1_2))
    elif act == ACT_EXP:
        for i in range(size):
            z[i] = _exp(z[i])


cdef inline floating _derivative(int act, floating a, floating z, floating param) noexcept nogil:
    """f'(z) from the output ``a = f(z)`` (and ``z`` itself for GELU)."""
    if act == ACT_SIGMOID:
        return a * (1 - a)
    if act == ACT_TANH:
        return 1 - a * a
    if act == ACT_RELU:
        return 1 if a > 0 else 0
    if act == ACT_LEAKY_RELU:
        return 1 if a > 0 else param
    if act == ACT_ELU:
        return 1 if a > 0 else a + param
    if act == ACT_SOFTPLUS:
        return -_expm1_neg(-a)  # sigmoid(z) = 1 - e^(-a), exact for small a
    if act == ACT_GELU:
        return <floating>_gelu_grad(z)
    if act == ACT_EXP:
        return a
    return 1


cdef void _act_backward(const floating* a, const floating* z, floating* d, Py_ssize_t rows,
                        Py_ssize_t cols, int act, floating param) noexcept nogil:
    """In place ``d = d * f'(z)``, with the derivative written from the output ``a = f(z)``
    (GELU: from ``z``, which it keeps)."""
    cdef Py_ssize_t i, j, size = rows * cols
    cdef floating v, dot
    cdef const floating* arow
    cdef floating* drow
    if act == ACT_RELU:
        if floating is float:
            fbp_relu_backward_f32(a, d, size)
        else:
            fbp_relu_backward_f64(a, d, size)
    elif act == ACT_LEAKY_RELU:
        # slope >= 0 (checked in Python), so a > 0 exactly where z > 0.
        for i in range(size):
            d[i] = d[i] if a[i] > 0 else d[i] * param
    elif act == ACT_SIGMOID:
        if floating is float:
            fbp_sigmoid_backward_f32(a, d, size)
        else:
            fbp_sigmoid_backward_f64(a, d, size)
    elif act == ACT_TANH:
        if floating is float:
            fbp_tanh_backward_f32(a, d, size)
        else:
            fbp_tanh_backward_f64(a, d, size)
    elif act == ACT_ELU:
        # alpha > 0 (checked in Python), so a > 0 exactly where z > 0.
        for i in range(size):
            v = a[i]
            d[i] = d[i] if v > 0 else d[i] * (v + param)
    elif act == ACT_SOFTPLUS:
        for i in range(size):
            d[i] = d[i] * -_expm1_neg(-a[i])
    elif act == ACT_GELU:
        for i in range(size):
            d[i] = d[i] * <floating>_gelu_grad(z[i])
    elif act == ACT_EXP:
        for i in range(size):
            d[i] = d[i] * a[i]
    elif act == ACT_SOFTMAX:
        # Jacobian-vector product of softmax: d_z = a * (d_a - sum(d_a * a)).
        for i in range(rows):
            arow = a + i * cols
            drow = d + i * cols
            dot = 0
            for j in range(cols):
                dot = dot + drow[j] * arow[j]
            for j in range(cols):
                drow[j] = arow[j] * (drow[j] - dot)


cdef void _col_sums(const floating* d, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t ld,
                    floating* out) noexcept nogil:
    """``out[j] = sum_i d[i, j]`` over a (rows x cols) block with row stride ``ld``
    (the bias gradient), summed in row order."""
    if floating is float:
        fbp_col_sums_f32(d, rows, cols, ld, out)
    else:
        fbp_col_sums_f64(d, rows, cols, ld, out)


# ---------------------------------------------------------------------------
# Losses: value (summed over the rows) and delta in one pass.
# ``scale`` turns the sum into the mean over the whole batch: the delta written is
# ``scale * d(sum)/dz``. ``delta`` may be NULL to compute the value only.
# ---------------------------------------------------------------------------

cdef enum:
    CE_BLOCK = 64       # rows scored together by _loss_ce_labels
    CE_SCRATCH = 4096   # its room for the exponentials when there is no delta


cdef inline floating _row_max(const floating* row, Py_ssize_t cols,
                              Py_ssize_t* best) noexcept nogil:
    """A row's largest value; its first column in ``best`` (NaN never wins)."""
    cdef Py_ssize_t j
    cdef floating top = row[0]
    best[0] = 0
    for j in range(1, cols):
        if row[j] > top:
            top = row[j]
            best[0] = j
    return top


cdef double _loss_ce_labels(const floating* z, const intp* labels, const floating* weights,
                            Py_ssize_t rows, Py_ssize_t cols, floating* delta, floating scale,
                            BatchStats* stats) noexcept nogil:
    """Softmax cross-entropy on logits with integer class labels (rows weighted).

    A block of rows at a time: each row's maximum and the shifted logits ``z - max``
    (into ``delta``, or a scratch block for the value alone), one vectorized exp
    over the whole block, then each row summed, scored and, with ``delta``, scaled
    into the gradient. Rows too wide for the scratch block are scored one by one."""
    cdef Py_ssize_t i, j, b0, nb, best, block
    cdef const floating* row
    cdef floating* erow
    cdef floating* e
    cdef floating top, total, w
    cdef floating tops[CE_BLOCK]
    cdef floating picked[CE_BLOCK]
    cdef floating scratch[CE_SCRATCH]
    cdef double loss = 0
    cdef intp correct = 0
    block = CE_BLOCK if delta != NULL else min(<Py_ssize_t>CE_BLOCK, CE_SCRATCH // cols)
    if block == 0:  # value only, rows wider than the scratch block
        for i in range(rows):
            row = z + i * cols
            w = weights[i] if weights != NULL else 1
            top = _row_max(row, cols, &best)
            correct += best == labels[i]
            total = 0
            for j in range(cols):
                total = total + _exp(row[j] - top)
            loss += w * (_log(total) + top - row[labels[i]])
        stats.correct += correct
        return loss
    b0 = 0
    while b0 < rows:
        nb = min(block, rows - b0)
        e = delta + b0 * cols if delta != NULL else scratch
        for i in range(nb):
            row = z + (b0 + i) * cols
            erow = e + i * cols
            top = _row_max(row, cols, &best)
            correct += best == labels[b0 + i]
            tops[i] = top
            picked[i] = row[labels[b0 + i]]
            for j in range(cols):
                erow[j] = row[j] - top
        if floating is float:
            fbp_exp_f32(e, nb * cols)
        else:
            fbp_exp_f64(e, nb * cols)
        for i in range(nb):
            erow = e + i * cols
            w = weights[b0 + i] if weights != NULL else 1
            total = 0
            for j in range(cols):
                total = total + erow[j]
            loss += w * (_log(total) + tops[i] - picked[i])
            if delta != NULL:
                total = scale * w / total
                for j in range(cols):
                    erow[j] = erow[j] * total
                erow[labels[b0 + i]] = erow[labels[b0 + i]] - scale * w
        b0 += nb
    stats.correct += correct
    return loss


cdef double _loss_ce_soft(const floating* z, const floating* target, const floating* weights,
                          Py_ssize_t rows, Py_ssize_t cols, floating* delta, floating scale,
                          BatchStats* stats) noexcept nogil:
    """Softmax cross-entropy on logits with probability (or one-hot) targets.

    loss_i = -sum_j t_ij log p_ij; d loss_i / dz_ij = p_ij * sum_j t_ij - t_ij.
    """
    cdef Py_ssize_t i, j, best, best_t
    cdef const floating* row
    cdef const floating* trow
    cdef floating* drow
    cdef floating top, top_t, total, lse, mass, w
    cdef double loss = 0, row_loss
    cdef intp correct = 0
    for i in range(rows):
        row = z + i * cols
        trow = target + i * cols
        w = weights[i] if weights != NULL else 1
        top = row[0]
        best = 0
        top_t = trow[0]
        best_t = 0
        mass = 0
        for j in range(cols):
            if row[j] > top:
                top = row[j]
                best = j
            if trow[j] > top_t:
                top_t = trow[j]
                best_t = j
            mass = mass + trow[j]
        if best == best_t:
            correct += 1
        total = 0
        for j in range(cols):
            total = total + _exp(row[j] - top)
        lse = _log(total) + top
        row_loss = 0
        for j in range(cols):
            row_loss += trow[j] * (lse - row[j])
        loss += w * row_loss
        if delta != NULL:
            drow = delta + i * cols
            for j in range(cols):
                drow[j] = scale * w * (_exp(row[j] - lse) * mass - trow[j])
    stats.correct += correct
    return loss


cdef double _loss_elementwise(int kind, double param, const floating* out,
                              const floating* target, const floating* weights, Py_ssize_t rows,
                              Py_ssize_t cols, floating* delta, floating scale,
                              BatchStats* stats) noexcept nogil:
    """The losses that average over every element (rows weighted), value and delta:

    - mse: (o - t)^2, 2 (o - t);
    - mae: |o - t|, sign(o - t);
    - huber (param = delta): (o - t)^2 / 2 within delta, else delta (|o - t| - delta / 2);
      its derivative o - t, clipped to [-delta, delta];
    - binary cross-entropy on logits z (sigmoid fused, stable for any |z|):
      max(z, 0) - z t + log(1 + exp(-|z|)), sigmoid(z) - t; counts correct 0/1 guesses;
    - poisson on log-rates z (exp fused): exp(z) - t z, exp(z) - t; with param = 1 the
      value adds t log t - t (half the Poisson deviance: zero at a perfect fit).

    For the regression losses, ``stats`` accumulates the sums of |prediction - t| and
    (prediction - t)^2, the prediction being exp(z) for poisson.
    """
    cdef Py_ssize_t i, j
    cdef const floating* o
    cdef const floating* t
    cdef floating* d
    cdef floating v, r, w, g
    cdef floating huber = param
    cdef double loss = 0, row_loss, absolute = 0, square = 0, e
    cdef intp correct = 0
    for i in range(rows):
        o = out + i * cols
        t = target + i * cols
        d = delta + i * cols if delta != NULL else NULL
        if kind != LOSS_BCE:
            for j in range(cols):
                e = (exp(o[j]) if kind == LOSS_POISSON else o[j]) - t[j]
                absolute += fabs(e)
                square += e * e
        w = weights[i] if weights != NULL else 1
        row_loss = 0
        for j in range(cols):
            v = o[j]
            if kind == LOSS_MSE:
                r = v - t[j]
                row_loss += r * r
                g = 2 * r
            elif kind == LOSS_MAE:
                r = v - t[j]
                row_loss += fabs(r)
                g = (r > 0) - (r < 0)
            elif kind == LOSS_HUBER:
                r = v - t[j]
                if fabs(r) <= huber:
                    row_loss += 0.5 * r * r
                    g = r
                else:
                    row_loss += huber * (fabs(r) - 0.5 * huber)
                    g = huber if r > 0 else -huber
            elif kind == LOSS_BCE:
                row_loss += (v if v > 0 else 0) - v * t[j] + _log1p(_exp(-fabs(v)))
                if (v > 0) == (t[j] >= 0.5):
                    correct += 1
                g = _sigmoid(v) - t[j]
            else:  # LOSS_POISSON
                row_loss += exp(v) - t[j] * v
                if param != 0 and t[j] > 0:
                    row_loss += param * (t[j] * log(t[j]) - t[j])
                g = exp(v) - t[j]
            if d != NULL:
                d[j] = scale * w * g
        loss += w * row_loss
    stats.correct += correct
    stats.abs_residual += absolute
    stats.sq_residual += square
    return loss


cdef double _loss(int kind, double param, const floating* out, const floating* target,
                  const intp* labels, const floating* weights, Py_ssize_t rows,
                  Py_ssize_t cols, floating* delta, floating scale,
                  BatchStats* stats) noexcept nogil:
    """Weighted sum of the loss over ``rows`` rows; writes ``scale * w_i * dloss/dout``
    into ``delta`` (NULL: value only). ``weights`` NULL: every row weighs 1. Adds the
    count of correct predictions (classification) or the residual sums (regression)
    to ``stats``."""
    if kind == LOSS_CE_LABELS:
        return _loss_ce_labels(out, labels, weights, rows, cols, delta, scale, stats)
    if kind == LOSS_CE_SOFT:
        return _loss_ce_soft(out, target, weights, rows, cols, delta, scale, stats)
    return _loss_elementwise(kind, param, out, target, weights, rows, cols, delta, scale,
                             stats)


cdef inline double _loss_scale(double row_scale, double total_weight) noexcept nogil:
    # A row's loss is row_scale times the sum over its outputs (the Loss decides:
    # 1 / n_outputs averages over every element); the batch's is their weighted mean.
    return row_scale / total_weight


# ---------------------------------------------------------------------------
# Optimizers: one pass over the flat parameter buffer.
# ---------------------------------------------------------------------------

cdef void _sgd_update(floating* p, const floating* g, floating* buf, Py_ssize_t n,
                      floating lr, floating momentum, floating weight_decay,
                      bint nesterov) noexcept nogil:
    """PyTorch's SGD (dampening 0). ``buf`` starts at zero, so the first step sets it to g."""
    if floating is float:
        fbp_sgd_f32(p, g, buf, n, lr, momentum, weight_decay, nesterov)
    else:
        fbp_sgd_f64(p, g, buf, n, lr, momentum, weight_decay, nesterov)


cdef struct StepScalars:
    # The scalars of an optimizer's rule that depend on the step number only:
    # computed once a step (``_step_scalars``), not once per range of the update.
    double step_size   # Adam: lr / (1 - beta1^t)
    double bias2_sqrt  # Adam: sqrt(1 - beta2^t)
    double eps         # Adam: eps, or eps / bias2_sqrt with eps_uncorrected
    double clr         # Adagrad: lr / (1 + (t - 1) lr_decay)


cdef inline void _adam_scalars(double lr, double beta1, double beta2, double eps,
                               bint eps_uncorrected, long long step,
                               StepScalars* out) noexcept nogil:
    """Adam's bias corrections at ``step`` (from 1). ``eps_uncorrected`` adds eps to
    sqrt(v) before its bias correction (scikit-learn's Adam:
    ``lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)``), not after."""
    out.step_size = lr / (1 - pow(beta1, <double>step))
    out.bias2_sqrt = sqrt(1 - pow(beta2, <double>step))
    out.eps = eps / out.bias2_sqrt if eps_uncorrected else eps


cdef void _step_scalars(const OptimizerConfig* o, long long step,
                        StepScalars* out) noexcept nogil:
    """The step-number scalars of rule ``o`` at ``step`` (from 1)."""
    memset(out, 0, sizeof(StepScalars))
    if o.kind == OPT_ADAM:
        _adam_scalars(o.lr, o.beta1, o.beta2, o.eps, o.eps_uncorrected != 0, step, out)
    elif o.kind == OPT_ADAGRAD:
        out.clr = o.lr / (1 + (step - 1) * o.lr_decay)


cdef void _adam_update(floating* p, const floating* g, floating* m, floating* v,
                       Py_ssize_t n, double lr, double beta1, double beta2,
                       double weight_decay, bint decoupled,
                       const StepScalars* at) noexcept nogil:
    """PyTorch's Adam (L2 weight decay added to the gradient) or AdamW (decoupled:
    the weights shrink by lr * weight_decay first), with the step's bias corrections
    ``at`` (``_adam_scalars``)."""
    cdef double wd = 0 if decoupled else weight_decay
    cdef double decay = 1 - lr * weight_decay if decoupled else 1
    if floating is float:
        fbp_adam_f32(p, g, m, v, n, at.step_size, at.bias2_sqrt, 1 - beta1, beta2,
                     1 - beta2, wd, at.eps, decay)
    else:
        fbp_adam_f64(p, g, m, v, n, at.step_size, at.bias2_sqrt, 1 - beta1, beta2,
                     1 - beta2, wd, at.eps, decay)


cdef inline floating* _row(floating* state, Py_ssize_t stride, intp row) noexcept nogil:
    # A named optimizer state row (-1: unused).
    return state + row * stride if row >= 0 else NULL


cdef void _optimizer_step(const OptimizerConfig* o, floating* p, const floating* g,
                          floating* state, Py_ssize_t stride, Py_ssize_t n,
                          const StepScalars* at) noexcept nogil:
    """One update of ``n`` parameters from ``p`` by the rule ``o`` (the rules are
    written in the docstrings of ``fastbp.optimizers``) with the step's scalars
    ``at`` (``_step_scalars``); the state rows that ``o`` names start at ``state``
    (offset like ``p``), ``stride`` apart."""
    cdef floating* momentum_buffer = _row(state, stride, o.momentum_buffer)
    cdef floating* square_avg = _row(state, stride, o.square_avg)
    cdef floating* grad_avg = _row(state, stride, o.grad_avg)
    cdef floating* total = _row(state, stride, o.sum)
    if o.kind == OPT_SGD:
        _sgd_update(p, g, momentum_buffer, n, <floating>o.lr, <floating>o.momentum,
                    <floating>o.weight_decay, o.nesterov != 0)
    elif o.kind == OPT_ADAM:
        _adam_update(p, g, _row(state, stride, o.exp_avg), _row(state, stride, o.exp_avg_sq),
                     n, o.lr, o.beta1, o.beta2, o.weight_decay, o.decoupled != 0, at)
    elif o.kind == OPT_RMSPROP:
        if floating is float:
            fbp_rmsprop_f32(p, g, square_avg, momentum_buffer, grad_avg, n, o.lr, o.alpha,
                            o.eps, o.weight_decay, o.momentum)
        else:
            fbp_rmsprop_f64(p, g, square_avg, momentum_buffer, grad_avg, n, o.lr, o.alpha,
                            o.eps, o.weight_decay, o.momentum)
    else:
        if floating is float:
            fbp_adagrad_f32(p, g, total, n, at.clr, o.weight_decay, o.eps)
        else:
            fbp_adagrad_f64(p, g, total, n, at.clr, o.weight_decay, o.eps)


cdef inline bint _all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    # x - x is 0 for a finite x and NaN for NaN or infinity; the flags OR together
    # (no floating-point sum: the loop vectorizes).
    cdef Py_ssize_t i
    cdef bint bad = False
    for i in range(n):
        bad |= (x[i] - x[i]) != 0
    return not bad


cdef inline double _sum_squares(const floating* g, Py_ssize_t n) noexcept nogil:
    if floating is float:
        return fbp_sum_squares_f32(g, n)
    else:
        return fbp_sum_squares_f64(g, n)


cdef inline void _scale(floating* g, Py_ssize_t n, floating factor) noexcept nogil:
    if floating is float:
        fbp_scale_f32(g, n, factor)
    else:
        fbp_scale_f64(g, n, factor)


cdef inline void _clamp(floating* g, Py_ssize_t n, floating limit) noexcept nogil:
    if floating is float:
        fbp_clamp_f32(g, n, limit)
    else:
        fbp_clamp_f64(g, n, limit)


# ---------------------------------------------------------------------------
# Dropout: masks from a counter-based hash of (seed, step, site, row, column), so
# that forward and backward agree without storing a mask, and the mask does not
# depend on how rows are split over threads. Site 0 is the network input, site
# l + 1 the output of layer l.
# ---------------------------------------------------------------------------

cdef struct Masks:
    unsigned long long seed
    long long step              # the optimizer step being taken (a new mask each step)
    long long row0              # the batch's first row in the global minibatch (a share's offset)


cdef inline unsigned long long _mix(unsigned long long z) noexcept nogil:
    # splitmix64's finalizer: every input bit affects every output bit.
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL
    return z ^ (z >> 31)


cdef inline unsigned long long _drop_key(const Masks* masks, Py_ssize_t site) noexcept nogil:
    return _mix(masks.seed ^ _mix((<unsigned long long>masks.step << 8) ^ <unsigned long long>site))


cdef void _permutation(intp* order, Py_ssize_t n, unsigned long long seed) noexcept nogil:
    """``order`` = a uniformly random permutation of 0..n-1 drawn from ``seed``:
    Fisher-Yates over splitmix64's stream, each bound drawn without bias by
    Lemire's multiply-and-reject method. (The threshold of the draws to redraw,
    2^64 mod bound, is below the bound: a division computes it only for a draw
    whose low product falls below the bound, about bound / 2^64 of them.)"""
    cdef Py_ssize_t i, j
    cdef intp swap
    cdef unsigned long long state = seed, bound, high, low, reject
    for i in range(n):
        order[i] = i
    for i in range(n - 1, 0, -1):
        bound = <unsigned long long>(i + 1)
        state = state + 0x9e3779b97f4a7c15ULL
        high = fbp_mul_wide(_mix(state), bound, &low)
        if low < bound:
            reject = (0 - bound) % bound  # 2^64 mod bound: the low products to redraw
            while low < reject:
                state = state + 0x9e3779b97f4a7c15ULL
                high = fbp_mul_wide(_mix(state), bound, &low)
        j = <Py_ssize_t>high
        swap = order[i]
        order[i] = order[j]
        order[j] = swap


cdef inline unsigned long long _threshold(double rate) noexcept nogil:
    # Drop where the hash is below rate * 2^64.
    return <unsigned long long>(rate * 18446744073709551616.0)


cdef inline bint _dropped(unsigned long long row_key, Py_ssize_t j,
                          unsigned long long threshold) noexcept nogil:
    return _mix(row_key + <unsigned long long>j * 0x9e3779b97f4a7c15ULL) < threshold


cdef void _dropout_forward(floating* a, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row0,
                           double rate, const Masks* masks, Py_ssize_t site) noexcept nogil:
    """Inverted dropout in place on rows ``row0 <= i < row0 + rows`` of the batch:
    each entry is zeroed with probability rate, else scaled by 1 / (1 - rate)."""
    cdef unsigned long long key = _drop_key(masks, site), threshold = _threshold(rate), row_key
    cdef floating scale = 1 / (1 - rate)
    cdef Py_ssize_t i, j
    cdef floating* row
    for i in range(rows):
        row_key = _mix(key ^ <unsigned long long>(masks.row0 + row0 + i))
        row = a + i * cols
        for j in range(cols):
            row[j] = 0 if _dropped(row_key, j, threshold) else row[j] * scale


cdef void _dropout_act_backward(const floating* a, const floating* z, floating* d,
                                Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row0,
                                double rate, const Masks* masks, Py_ssize_t site, int act,
                                floating param) noexcept nogil:
    """``d = d * mask / (1 - rate) * f'(z)`` for a layer whose output ``a`` went through
    dropout: the derivative is taken at the output before dropout, a * (1 - rate)
    where kept (softmax is not allowed before dropout)."""
    cdef unsigned long long key = _drop_key(masks, site), threshold = _threshold(rate), row_key
    cdef floating scale = 1 / (1 - rate), keep = 1 - rate
    cdef Py_ssize_t i, j, k
    for i in range(rows):
        row_key = _mix(key ^ <unsigned long long>(masks.row0 + row0 + i))
        for j in range(cols):
            k = i * cols + j
            if _dropped(row_key, j, threshold):
                d[k] = 0
            else:
                d[k] = d[k] * scale * _derivative(act, a[k] * keep,
                                                  z[k] if z != NULL else 0, param)


# ---------------------------------------------------------------------------
# Sparse input: the first layer's products on CSR rows, never densified.
# ---------------------------------------------------------------------------

cdef struct SparseRows:
    # The rows of a CSR input as a batch (or chunk) sees them: its row i is row
    # order[i] of the matrix, or first + i when order is NULL. NULL values: dense input.
    const void* values
    const intp* indices         # the column of each value
    const intp* indptr          # (n_rows + 1,) where each row's values start
    const intp* order
    Py_ssize_t first


cdef inline Py_ssize_t _source(const SparseRows* sx, Py_ssize_t i) noexcept nogil:
    return sx.order[i] if sx.order != NULL else sx.first + i


cdef void _sparse_product(const SparseRows* sx, Py_ssize_t row0, Py_ssize_t rows,
                          const floating* w, Py_ssize_t n_out, floating* out) noexcept nogil:
    """``out = X[rows] @ w`` for the batch's rows row0 <= i < row0 + rows, each a sum
    of the weight rows its nonzero columns select."""
    cdef const floating* values = <const floating*>sx.values
    cdef Py_ssize_t i, j, at, src
    cdef floating v
    cdef floating* o
    cdef const floating* wr
    for i in range(rows):
        o = out + i * n_out
        memset(o, 0, n_out * sizeof(floating))
        src = _source(sx, row0 + i)
        for at in range(sx.indptr[src], sx.indptr[src + 1]):
            v = values[at]
            wr = w + sx.indices[at] * n_out
            for j in range(n_out):
                o[j] += v * wr[j]


cdef void _sparse_gradient(const SparseRows* sx, Py_ssize_t rows, const floating* delta,
                           Py_ssize_t n_out, Py_ssize_t i0, Py_ssize_t i1,
                           floating* grad) noexcept nogil:
    """Rows ``i0 <= i < i1`` of ``grad = X[rows]^T @ delta`` over the batch's ``rows``
    rows (row stride ``n_out`` for both): each nonzero of a column in ``[i0, i1)``
    adds its scaled delta row."""
    cdef const floating* values = <const floating*>sx.values
    cdef Py_ssize_t i, j, at, src, column
    cdef floating v
    cdef floating* g
    cdef const floating* dr
    memset(grad + i0 * n_out, 0, (i1 - i0) * n_out * sizeof(floating))
    for i in range(rows):
        src = _source(sx, i)
        dr = delta + i * n_out
        for at in range(sx.indptr[src], sx.indptr[src + 1]):
            column = sx.indices[at]
            if column < i0 or column >= i1:
                continue
            v = values[at]
            g = grad + column * n_out
            for j in range(n_out):
                g[j] += v * dr[j]


# ---------------------------------------------------------------------------
# Forward and backward through the whole network. ``cap`` is the workspace's
# capacity in rows; a layer's buffer starts at work + cap * offset (see LayerPlan).
# ---------------------------------------------------------------------------

cdef inline floating* _passed_on(floating* work, Py_ssize_t cap,
                                 const LayerPlan* layer) noexcept nogil:
    """What a layer passes on: its residual sum where it has one, else its output."""
    return work + cap * (layer.sum_at if layer.sum_at >= 0 else layer.out_at)


cdef inline floating* _kept_z(floating* work, Py_ssize_t cap, const LayerPlan* layer,
                              Py_ssize_t at) noexcept nogil:
    """The layer's kept pre-activation (GELU), at entry ``at``; NULL where none."""
    return work + cap * layer.z_at + at if layer.z_at >= 0 else NULL


cdef void _forward(const floating* params, floating* work, Py_ssize_t cap,
                   const LayerPlan* plan, Py_ssize_t n_layers, const floating* x,
                   const SparseRows* sx, Py_ssize_t row0, Py_ssize_t rows, const Masks* masks,
                   bint training) noexcept nogil:
    """Forward pass of rows ``row0 <= i < row0 + rows`` of the batch, whose first row
    is at ``x`` (or, with ``sx`` not NULL, are CSR rows: the first layer's product
    reads them sparse; a sparse network has no residual from its input); each
    layer's output lands in those rows of its buffer (a residual
    layer's sum with its skip source in its sum buffer). ``training`` keeps the
    pre-activations that backward needs; ``masks`` (NULL: none) applies dropout to
    the layers' outputs (the input's dropout is the caller's, on its copy)."""
    cdef Py_ssize_t l, i, at
    cdef const LayerPlan* layer
    cdef floating* out
    cdef floating* total
    cdef const floating* skip
    cdef const floating* x0 = x
    for l in range(n_layers):
        layer = &plan[l]
        at = row0 * layer.n_out
        out = work + cap * layer.out_at + at
        if l == 0 and sx != NULL:
            _sparse_product(sx, row0, rows, params + layer.weight_at, layer.n_out, out)
        else:
            _gemm(False, False, <int>rows, <int>layer.n_out, <int>layer.n_in, <floating>1,
                  x, <int>layer.n_in, params + layer.weight_at, <int>layer.n_out,
                  <floating>0, out, <int>layer.n_out)
        _bias_act(out, params + layer.bias_at, rows, layer.n_out, <int>layer.activation,
                  <floating>layer.act_param, _kept_z(work, cap, layer, at) if training else NULL)
        if layer.skip != NO_SKIP:
            skip = x0 if layer.skip == SKIP_INPUT else _passed_on(work, cap, &plan[layer.skip]) + at
            total = work + cap * layer.sum_at + at
            for i in range(rows * layer.n_out):
                total[i] = out[i] + skip[i]
            out = total
        if masks != NULL and layer.dropout_after > 0:
            _dropout_forward(out, rows, layer.n_out, row0, layer.dropout_after, masks, l + 1)
        x = out


cdef void _deltas(const floating* params, floating* work, Py_ssize_t cap,
                  const LayerPlan* plan, Py_ssize_t n_layers, Py_ssize_t row0,
                  Py_ssize_t rows, const Masks* masks, floating* input_skip) noexcept nogil:
    """Backward pass of the deltas for rows ``row0 <= i < row0 + rows``.

    On entry the last layer's delta buffer holds dL/d(output) (from the loss). Going
    down, each layer's buffer holds dL/d(what the layer passes on); a residual layer
    copies it to its skip source's buffer (``input_skip`` for the network input, when
    not NULL), then every layer turns it into dL/dz through its activation (and the
    dropout after it), and passes ``delta_l @ W_l^T`` down, added to a skip copy
    already there. The first layer's input gradient is skipped, and so are the deltas
    below the lowest trainable layer (frozen layers need none).
    """
    cdef Py_ssize_t l, j, at, lowest = 0
    cdef const LayerPlan* layer
    cdef floating* dl
    cdef floating beta
    while lowest < n_layers and not plan[lowest].trainable:
        lowest += 1
    for l in range(n_layers - 1, lowest - 1, -1):
        layer = &plan[l]
        at = row0 * layer.n_out
        dl = work + cap * layer.delta_at + at
        if layer.skip >= lowest:
            memcpy(work + cap * plan[layer.skip].delta_at + at, dl,
                   rows * layer.n_out * sizeof(floating))
        elif layer.skip == SKIP_INPUT and input_skip != NULL:
            memcpy(input_skip + at, dl, rows * layer.n_out * sizeof(floating))
        if masks != NULL and layer.dropout_after > 0:
            _dropout_act_backward(work + cap * layer.out_at + at, _kept_z(work, cap, layer, at),
                                  dl, rows, layer.n_out, row0, layer.dropout_after, masks,
                                  l + 1, <int>layer.activation, <floating>layer.act_param)
        else:
            _act_backward(work + cap * layer.out_at + at, _kept_z(work, cap, layer, at), dl,
                          rows, layer.n_out, <int>layer.activation, <floating>layer.act_param)
        if l == lowest:
            break
        beta = 0
        for j in range(l, n_layers):  # does a skip copy already wait in delta_{l-1}?
            if plan[j].skip == l - 1:
                beta = 1
        _gemm(False, True, <int>rows, <int>layer.n_in, <int>layer.n_out, <floating>1, dl,
              <int>layer.n_out, params + layer.weight_at, <int>layer.n_out, beta,
              work + cap * plan[l - 1].delta_at + row0 * layer.n_in, <int>layer.n_in)


cdef inline void _share(Py_ssize_t n, int part, int n_parts, Py_ssize_t* lo,
                        Py_ssize_t* hi) noexcept nogil:
    """Part ``part`` of ``n_parts``'s share ``[lo, hi)`` of ``n`` items (rows of a
    batch, entries of a bias or of the flat buffer): the rule by which a team splits
    its work, in contiguous shares that differ by at most one. The gradients' weight
    rows are cut by ``_grad_share``, across the layers, in shares of equal work."""
    lo[0] = n * part // n_parts
    hi[0] = n * (part + 1) // n_parts


cdef void _grad_share(const LayerPlan* plan, Py_ssize_t n_layers, Py_ssize_t l, int part,
                      int n_parts, Py_ssize_t* i0, Py_ssize_t* i1, Py_ssize_t* c0,
                      Py_ssize_t* c1) noexcept nogil:
    """Part ``part`` of ``n_parts``'s share of layer ``l``'s gradients (and of their
    update): weight rows ``[i0, i1)`` and bias entries ``[c0, c1)``.

    The weight rows of the trainable layers, one after the other, are cut into
    contiguous shares of equal work (a row of layer l costs ``n_out`` multiply-adds
    per batch row), so that a part computes whole layers where it can: it then reads
    the activations and deltas of the other parts' batch rows for fewer layers (on
    a deep network of equal layers, two parts read a third less of each other's
    data than with every layer split in two) and multiplies taller blocks. Row ``i``
    of layer ``l`` belongs to part ``p`` with ``p W <= (S + i n_out) n_parts <
    (p + 1) W``, ``W`` the work of all trainable layers and ``S`` that of those
    before ``l``. A layer's bias entries are shared (``_share``) among the parts
    that own its rows. A frozen layer has no share."""
    cdef long long before = 0, total = 0, n_in = plan[l].n_in, n_out = plan[l].n_out
    cdef long long unit = n_out * n_parts, lo, hi
    cdef Py_ssize_t j
    cdef int first, last
    i0[0] = i1[0] = c0[0] = c1[0] = 0
    if not plan[l].trainable:
        return
    for j in range(n_layers):
        if plan[j].trainable:
            if j < l:
                before += plan[j].n_in * plan[j].n_out
            total += plan[j].n_in * plan[j].n_out
    # The first row of part p: the least i with (before + i n_out) n_parts >= p total.
    lo = part * total - before * n_parts
    hi = (part + 1) * total - before * n_parts
    lo = 0 if lo <= 0 else (lo + unit - 1) // unit
    hi = 0 if hi <= 0 else (hi + unit - 1) // unit
    i0[0] = lo if lo < n_in else n_in
    i1[0] = hi if hi < n_in else n_in
    first = <int>(before * n_parts // total)
    last = <int>((before + (n_in - 1) * n_out) * n_parts // total)
    if first <= part <= last:
        _share(n_out, part - first, last - first + 1, c0, c1)


cdef double _gradients(const floating* params, floating* grads, floating* work,
                       Py_ssize_t cap, const LayerPlan* plan, Py_ssize_t n_layers,
                       const floating* x, const SparseRows* sx, Py_ssize_t rows,
                       double penalty_factor, int part, int n_parts) noexcept nogil:
    """Weight and bias gradients over all ``rows`` rows of the batch, for part
    ``part`` of ``n_parts`` of the trainable layers: of each, weight rows ``[i0, i1)``
    (``grad_weight[i0:i1] = a_prev[:, i0:i1]^T @ delta``) and bias entries ``[c0, c1)``
    (column sums of ``delta[:, c0:c1]``), plus the gradients of the layer's L1 and L2
    penalties times ``penalty_factor``. Parts write disjoint contiguous ranges (by
    ``_grad_share``), the ones they update (``_update_range``). Returns this part's
    share of the penalty."""
    cdef Py_ssize_t l, i0, i1, c0, c1, n_out
    cdef const LayerPlan* layer
    cdef const floating* a_prev
    cdef const floating* delta
    cdef floating* grad_weight
    cdef double penalty = 0
    for l in range(n_layers):
        layer = &plan[l]
        if not layer.trainable:
            continue
        n_out = layer.n_out
        _grad_share(plan, n_layers, l, part, n_parts, &i0, &i1, &c0, &c1)
        a_prev = x if l == 0 else _passed_on(work, cap, &plan[l - 1])
        delta = work + cap * layer.delta_at
        grad_weight = grads + layer.weight_at
        if i1 > i0:
            if l == 0 and sx != NULL:
                _sparse_gradient(sx, rows, delta, n_out, i0, i1, grad_weight)
            else:
                _gemm(True, False, <int>(i1 - i0), <int>n_out, <int>rows, <floating>1,
                      a_prev + i0, <int>layer.n_in, delta, <int>n_out, <floating>0,
                      grad_weight + i0 * n_out, <int>n_out)
            if layer.l1_weight != 0 or layer.l2_weight != 0:
                penalty += _penalize(params + layer.weight_at + i0 * n_out,
                                     grad_weight + i0 * n_out, (i1 - i0) * n_out,
                                     layer.l1_weight * penalty_factor,
                                     layer.l2_weight * penalty_factor)
        if c1 > c0:
            _col_sums(delta + c0, rows, c1 - c0, n_out, grads + layer.bias_at + c0)
            if layer.l1_bias != 0 or layer.l2_bias != 0:
                penalty += _penalize(params + layer.bias_at + c0, grads + layer.bias_at + c0,
                                     c1 - c0, layer.l1_bias * penalty_factor,
                                     layer.l2_bias * penalty_factor)
    return penalty


cdef double _penalize(const floating* w, floating* g, Py_ssize_t n, double l1,
                      double l2) noexcept nogil:
    """Add the gradient of ``l1 * sum|w| + l2 * sum(w^2)`` over ``n`` contiguous
    entries to ``g``; return the penalty."""
    cdef Py_ssize_t i
    cdef floating v
    cdef floating a1 = l1, a2 = 2 * l2
    cdef double absolute = 0, square = 0
    for i in range(n):
        v = w[i]
        absolute += fabs(v)
        square += v * v
        g[i] += a1 * ((v > 0) - (v < 0)) + a2 * v
    return l1 * absolute + l2 * square


# ---------------------------------------------------------------------------
# The training step, in phases. Every thread of a team (all of it when one) runs
# every phase on its own share: ``part`` of ``n_parts``.
# ---------------------------------------------------------------------------

cdef struct Run:
    # One compiled call's data, read by every thread. Arrays are float32 or float64
    # as the call's ``floating`` (held as void pointers: a struct cannot be fused).
    const NetPlan* net
    const LayerPlan* plan
    Py_ssize_t n_layers
    Py_ssize_t capacity         # rows of the workspace
    const void* X               # (n, n_inputs), NULL for sparse input
    SparseRows sparse           # CSR input (values NULL for dense), order unset
    const void* targets         # (n, n_outputs), NULL with class labels
    const intp* labels          # (n,), NULL without
    const void* sample_weight   # (n,), NULL: every row weighs 1
    const intp* order           # (n,) row order of the epoch, NULL: storage order
    Py_ssize_t n
    Py_ssize_t batch_size
    int loss_kind
    double loss_param
    intp* label_work            # gathered labels and weights of a shuffled batch
    void* weight_work
    const OptimizerConfig* opt  # NULL: gradients only
    void* state                 # (rows, n_params) optimizer state
    Py_ssize_t n_params
    const intp* segments        # (n_segments, 2) trainable flat ranges [start, stop)
    Py_ssize_t n_segments
    bint dropout                # whether the network has dropout (masks from net.dropout_seed)
    long long mask_row0         # Masks.row0 of the call's batches
    double penalty_weight       # > 0: per-sample penalties divide by it, not the batch's weight
    BatchStats* stats           # one per minibatch of the call, from its first


cdef struct Part:
    # One thread's share of a minibatch's sums (read by all after a barrier).
    BatchStats stats
    double penalty
    double norm                 # squared norm of its share of the gradient


cdef struct Batch:
    # A minibatch as one thread sees it.
    Py_ssize_t start            # first position in the epoch's row order
    Py_ssize_t rows
    Py_ssize_t r0               # this thread's rows [r0, r1)
    Py_ssize_t r1
    const void* x               # the batch's first input row (gathered or in place)
    SparseRows sx               # the batch's rows of a CSR input
    const SparseRows* sparse    # &sx for CSR input, else NULL
    const void* targets
    const intp* labels
    const void* weights
    double total_weight         # the batch's sum of sample weights (rows when unweighted)
    double scale                # turns loss sums into the (weighted) batch mean; 0: no weight


cdef inline void _prefetch_next(const Run* r, Py_ssize_t start, Py_ssize_t item, int part,
                                int n_parts) noexcept nogil:
    """Ask for this thread's share of the dense input and target rows (of ``item``
    bytes an entry) of the shuffled minibatch that starts at ``start`` (nothing
    past the epoch's end)."""
    cdef Py_ssize_t rows, r0, r1
    if start >= r.n:
        return
    rows = r.batch_size if start + r.batch_size <= r.n else r.n - start
    _share(rows, part, n_parts, &r0, &r1)
    if r.X != NULL:
        fbp_prefetch_rows(r.X, r.order + start + r0, r1 - r0, r.net.n_inputs * item)
    if r.targets != NULL:
        fbp_prefetch_rows(r.targets, r.order + start + r0, r1 - r0, r.net.n_outputs * item)


cdef void _gather(const Run* r, Batch* b, floating* work, Py_ssize_t index,
                  const Masks* masks, int part, int n_parts) noexcept nogil:
    """Locate minibatch ``index``: with a row order, this thread copies its share of
    the rows (inputs, targets or labels, weights) into the batch buffers; the input
    dropout applies on that copy. Every thread sums the whole batch's weight."""
    cdef Py_ssize_t d = r.net.n_inputs, k = r.net.n_outputs, i, src
    cdef const floating* X = <const floating*>r.X
    cdef const floating* targets = <const floating*>r.targets
    cdef const floating* weights = <const floating*>r.sample_weight
    cdef floating* xb = work + r.capacity * r.net.x_at
    cdef floating* yb = work + r.capacity * r.net.y_at
    cdef bint input_dropout = masks != NULL and r.net.input_dropout > 0
    cdef double total_weight
    b.start = index * r.batch_size
    b.rows = r.batch_size if b.start + r.batch_size <= r.n else r.n - b.start
    _share(b.rows, part, n_parts, &b.r0, &b.r1)
    total_weight = b.rows
    b.sparse = NULL
    if r.sparse.values != NULL:  # CSR rows are read in place, in the epoch's order
        b.sx = r.sparse
        b.sx.order = r.order + b.start if r.order != NULL else NULL
        b.sx.first = b.start
        b.sparse = &b.sx
    if r.order != NULL:
        for i in range(b.r0, b.r1):
            src = r.order[b.start + i]
            if X != NULL:
                memcpy(xb + i * d, X + src * d, d * sizeof(floating))
            if targets == NULL:
                r.label_work[i] = r.labels[src]
            else:
                memcpy(yb + i * k, targets + src * k, k * sizeof(floating))
            if weights != NULL:
                (<floating*>r.weight_work)[i] = weights[src]
        b.x = xb if X != NULL else NULL
        b.targets = yb if targets != NULL else NULL
        b.labels = r.label_work if targets == NULL else NULL
        b.weights = r.weight_work if weights != NULL else NULL
        if weights != NULL:
            total_weight = 0
            for i in range(b.rows):
                total_weight += weights[r.order[b.start + i]]
        _prefetch_next(r, b.start + r.batch_size, sizeof(floating), part, n_parts)
    else:
        b.x = X + b.start * d if X != NULL else NULL
        b.targets = targets + b.start * k if targets != NULL else NULL
        b.labels = r.labels + b.start if targets == NULL else NULL
        b.weights = weights + b.start if weights != NULL else NULL
        if weights != NULL:
            total_weight = 0
            for i in range(b.rows):
                total_weight += weights[b.start + i]
        if input_dropout:  # dropout needs a copy of the input to change
            memcpy(xb + b.r0 * d, X + (b.start + b.r0) * d, (b.r1 - b.r0) * d * sizeof(floating))
            b.x = xb
    if input_dropout:
        _dropout_forward(xb + b.r0 * d, b.r1 - b.r0, d, b.r0, r.net.input_dropout, masks, 0)
    # Weights that sum to zero (0/0, not divergence): scale 0 marks a minibatch
    # with nothing to learn, which the step skips.
    b.total_weight = total_weight
    b.scale = _loss_scale(r.net.loss_scale, total_weight) if total_weight > 0 else 0


cdef void _forward_loss_backward(const Run* r, const Batch* b, const floating* params,
                                 floating* work, const Masks* masks, Part* mine) noexcept nogil:
    """This thread's rows: forward, the loss sums and the output delta in one pass,
    then the deltas down the network."""
    cdef Py_ssize_t d = r.net.n_inputs, k = r.net.n_outputs, rows = b.r1 - b.r0
    cdef const LayerPlan* last = &r.plan[r.n_layers - 1]
    cdef const floating* targets = <const floating*>b.targets
    cdef const floating* weights = <const floating*>b.weights
    memset(&mine.stats, 0, sizeof(BatchStats))
    if rows == 0:
        return
    _forward(params, work, r.capacity, r.plan, r.n_layers,
             <const floating*>b.x + b.r0 * d if b.x != NULL else NULL, b.sparse, b.r0, rows,
             masks, True)
    mine.stats.loss = _loss(r.loss_kind, r.loss_param,
                            _passed_on(work, r.capacity, last) + b.r0 * k,
                            targets + b.r0 * k if targets != NULL else NULL,
                            b.labels + b.r0 if targets == NULL else NULL,
                            weights + b.r0 if weights != NULL else NULL, rows, k,
                            work + r.capacity * last.delta_at + b.r0 * k,
                            <floating>b.scale, &mine.stats)
    _deltas(params, work, r.capacity, r.plan, r.n_layers, b.r0, rows, masks, NULL)


cdef bint _reduce(const Run* r, const Batch* b, const Part* parts, int part, int n_parts,
                  BatchStats* out) noexcept nogil:
    """Every thread sums the parts' losses (so that all agree whether it is finite);
    part 0 writes the batch's statistics. Returns whether the loss is finite."""
    cdef int t
    cdef double total = 0
    for t in range(n_parts):
        total += parts[t].stats.loss
    if part == 0:
        out.loss = total * b.scale if isfinite(total) else total
        out.abs_residual = out.sq_residual = 0
        out.correct = 0
        for t in range(n_parts):
            out.abs_residual += parts[t].stats.abs_residual
            out.sq_residual += parts[t].stats.sq_residual
            out.correct += parts[t].stats.correct
    return isfinite(total)


cdef inline double _clip_factor(double clipnorm, double sum_squares) noexcept nogil:
    # torch.nn.utils.clip_grad_norm_: scale by clipnorm / (norm + 1e-6) when below 1.
    return clipnorm / (sqrt(sum_squares) + 1e-6)


cdef inline bint _overlap(const intp* segments, Py_ssize_t s, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Intersect trainable segment ``s`` with [lo, hi) into [a, b); whether non-empty."""
    a[0] = segments[2 * s] if segments[2 * s] > lo else lo
    b[0] = segments[2 * s + 1] if segments[2 * s + 1] < hi else hi
    return b[0] > a[0]


cdef inline Py_ssize_t _update_ranges(const Run* r) noexcept nogil:
    """How many flat ranges ``_update_range`` splits a part's share into."""
    return 2 * r.n_layers if r.plan != NULL else 1


cdef inline void _update_range(const Run* r, Py_ssize_t k, int part, int n_parts,
                               Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Flat range ``[lo, hi)`` number ``k`` of part ``part``'s share of the update. In
    a training step (a run with a plan) the part updates the entries whose gradients
    it computed (``_gradients``): layer ``k // 2``'s weight rows (``k`` even) or bias
    entries (``k`` odd), so no barrier separates the gradients from the update.
    Without a plan (``apply_update``) its share is a slice of the flat buffer."""
    cdef const LayerPlan* layer
    cdef Py_ssize_t i0, i1, c0, c1
    if r.plan == NULL:
        _share(r.n_params, part, n_parts, lo, hi)
        return
    layer = &r.plan[k // 2]
    _grad_share(r.plan, r.n_layers, k // 2, part, n_parts, &i0, &i1, &c0, &c1)
    if k % 2 == 0:  # the weight rows, as flat offsets
        lo[0] = layer.weight_at + i0 * layer.n_out
        hi[0] = layer.weight_at + i1 * layer.n_out
    else:  # the bias entries
        lo[0] = layer.bias_at + c0
        hi[0] = layer.bias_at + c1


cdef void _clip_and_update(const Run* r, floating* params, floating* grads, floating* state,
                           long long step, Part* parts, int part, int n_parts) noexcept nogil:
    """Gradient clipping (the global norm over the trainable segments, then each
    entry), then the optimizer update, each thread on its share (``_update_range``)
    of the trainable segments. The one statement of the clipping rule: the
    hand-written ``Optimizer.step`` runs it too, through ``apply_update``."""
    cdef const OptimizerConfig* o = r.opt
    cdef Py_ssize_t k, n_ranges = _update_ranges(r), p0, p1, s, a, z
    cdef double factor = 1, total = 0
    cdef int t
    cdef StepScalars at
    _step_scalars(o, step, &at)
    if o.clipnorm > 0:
        parts[part].norm = 0
        for k in range(n_ranges):
            _update_range(r, k, part, n_parts, &p0, &p1)
            for s in range(r.n_segments):
                if _overlap(r.segments, s, p0, p1, &a, &z):
                    parts[part].norm += _sum_squares(grads + a, z - a)
        if n_parts > 1:
            fbp_barrier()
        for t in range(n_parts):
            total += parts[t].norm
        factor = _clip_factor(o.clipnorm, total)
    for k in range(n_ranges):
        _update_range(r, k, part, n_parts, &p0, &p1)
        for s in range(r.n_segments):
            if _overlap(r.segments, s, p0, p1, &a, &z):
                if factor < 1:
                    _scale(grads + a, z - a, <floating>factor)
                if o.clipvalue > 0:
                    _clamp(grads + a, z - a, <floating>o.clipvalue)
                _optimizer_step(o, params + a, grads + a, state + a if state != NULL else NULL,
                                r.n_params, z - a, &at)


cdef void _update_part(const Run* r, floating* params, floating* grads, floating* state,
                       long long step, Part* parts, int part, int n_parts) noexcept nogil:
    """``_clip_and_update`` as ``apply_update``'s threads run it: with subnormals
    flushed, as in ``_train_part``."""
    cdef unsigned long long fp_env = fbp_flush_begin()
    _clip_and_update(r, params, grads, state, step, parts, part, n_parts)
    fbp_flush_end(fp_env)


cdef void _train_part(const Run* r, floating* params, floating* grads, floating* work,
                      floating* state, Part* parts, Py_ssize_t first_batch,
                      Py_ssize_t stop_batch, long long* step, int* status, Py_ssize_t* done,
                      int part, int n_parts) noexcept nogil:
    """Minibatches ``first_batch <= b < stop_batch`` as run by one thread: gather,
    forward, loss and deltas (rows), a barrier, the loss reduced, the gradients and,
    with an optimizer, clipping and the update (the same weight rows and bias
    entries, so no barrier between them but clipnorm's), and a barrier. Stops
    before the gradients at a non-finite loss; skips a minibatch whose weights sum
    to zero after its statistics. Runs with subnormals flushed to zero (``_fpenv.h``),
    the thread's own setting restored on the way out."""
    cdef Batch b
    cdef Py_ssize_t index, local_done = 0
    cdef long long local_step = step[0]
    cdef int local_status = ST_OK, t
    cdef BatchStats* out
    cdef Masks masks  # each thread's own: the masks of the step being taken
    cdef const Masks* dropping = &masks if r.dropout else NULL
    cdef double since  # the phase timers' clock (phase_times; 0 in other builds)
    cdef unsigned long long fp_env = fbp_flush_begin()
    masks.seed = r.net.dropout_seed
    masks.row0 = r.mask_row0
    for index in range(first_batch, stop_batch):
        out = &r.stats[index - first_batch]
        masks.step = local_step + 1
        since = fbp_phase_clock()
        _gather(r, &b, work, index, dropping, part, n_parts)
        _forward_loss_backward(r, &b, params, work, dropping, &parts[part])
        fbp_phase_mark(part, 0, &since)
        if n_parts > 1:
            fbp_barrier()
        fbp_phase_mark(part, 1, &since)
        if not _reduce(r, &b, parts, part, n_parts, out):
            local_status = ST_NONFINITE_LOSS
            break
        if b.scale == 0:  # no weight: no gradient, no update, no optimizer step
            if n_parts > 1:
                fbp_barrier()  # every part has read the others' sums
            fbp_phase_mark(part, 4, &since)
            fbp_phase_step(part)
            local_done += 1
            continue
        parts[part].penalty = _gradients(
            params, grads, work, r.capacity, r.plan, r.n_layers, <const floating*>b.x,
            b.sparse, b.rows,
            1 / (r.penalty_weight if r.penalty_weight > 0 else b.total_weight)
            if r.net.penalty_per_weight else 1, part, n_parts)
        fbp_phase_mark(part, 2, &since)
        if r.opt != NULL:  # the part updates what it computed: no barrier before
            local_step += 1
            _clip_and_update(r, params, grads, state, local_step, parts, part, n_parts)
        fbp_phase_mark(part, 3, &since)
        if n_parts > 1:
            fbp_barrier()  # the next forward pass reads every part's parameters
        fbp_phase_mark(part, 4, &since)
        fbp_phase_step(part)
        if part == 0:  # (no part writes its penalty again before the next barrier)
            out.penalty = 0
            for t in range(n_parts):
                out.penalty += parts[t].penalty
            out.loss += out.penalty
        local_done += 1
    fbp_flush_end(fp_env)
    if part == 0:
        step[0] = local_step
        status[0] = local_status
        done[0] = local_done


# ---------------------------------------------------------------------------
# Python boundary: whole-network entry points. Each checks its arguments once
# (a bad plan or array raises instead of touching memory out of bounds), then
# runs the kernels without the GIL.
# ---------------------------------------------------------------------------

cdef Py_ssize_t _bind_input(object X, Plan plan, Py_ssize_t n_params, Py_ssize_t work_size,
                            Py_ssize_t capacity, bint training, const floating* kind,
                            const void** dense, SparseRows* sparse) except -1:
    """Check the input ``X`` of a call (a C-contiguous array of the call's dtype or a
    ``Csr``) with the call's plan and buffers; point ``dense`` at its rows or fill
    ``sparse``. Returns its number of rows. (``kind`` only selects the dtype.)"""
    cdef const floating[:, ::1] rows
    cdef Csr csr
    cdef Py_ssize_t l
    memset(sparse, 0, sizeof(SparseRows))
    dense[0] = NULL
    if isinstance(X, Csr):
        csr = <Csr>X
        if floating is double:
            want = "float64"
        else:
            want = "float32"
        if csr.dtype != want:
            raise TypeError("X's values are %s but the parameters %s" % (csr.dtype, want))
        _check_call(plan, n_params, work_size, capacity, training, csr.n_cols, True)
        if plan.net.input_dropout > 0:
            raise ValueError("input dropout needs dense X")
        for l in range(plan.n_layers):
            if plan.layers[l].skip == SKIP_INPUT:
                raise ValueError("a residual connection from the input needs dense X")
        if csr.n_rows < 1:
            raise ValueError("at least one row is needed")
        sparse.values, sparse.indices, sparse.indptr = csr.values_at, csr.indices_at, csr.indptr_at
        return csr.n_rows
    rows = X
    _check_call(plan, n_params, work_size, capacity, training, rows.shape[1])
    if rows.shape[0] < 1:
        raise ValueError("at least one row is needed")
    dense[0] = &rows[0, 0]
    return rows.shape[0]


cdef Run _data_run(Plan plan, Py_ssize_t capacity,
                   Py_ssize_t work_size, Py_ssize_t n_params, bint training,
                   object X, const floating[:, ::1] targets,
                   const intp[::1] labels, const void* sample_weight, Py_ssize_t n_weights,
                   int loss_kind, double loss_param) except *:
    """The checked plan and data of a call, as a Run without optimizer or batches."""
    cdef Run r
    cdef bint use_labels = loss_kind == LOSS_CE_LABELS
    memset(&r, 0, sizeof(Run))
    r.n = _bind_input(X, plan, n_params, work_size, capacity, training, &targets[0, 0]
                      if targets.shape[0] else <const floating*>NULL, &r.X, &r.sparse)
    if not 0 <= loss_kind < LOSS_COUNT:
        raise ValueError("unknown loss code %d" % loss_kind)
    r.net, r.plan, r.n_layers, r.capacity = plan.net, plan.layers, plan.n_layers, capacity
    r.dropout = plan.dropout
    r.loss_kind, r.loss_param = loss_kind, loss_param
    if use_labels:
        if labels.shape[0] != r.n:
            raise ValueError("labels do not match X: %d for %d rows" % (labels.shape[0], r.n))
        _check_labels(labels, plan.net.n_outputs)
        r.labels = &labels[0]
    else:
        if targets.shape[0] != r.n or targets.shape[1] != plan.net.n_outputs:
            raise ValueError("targets do not match X and the output layer")
        r.targets = &targets[0, 0]
    if n_weights:
        if n_weights != r.n:
            raise ValueError("sample_weight must have one entry per row of X")
        r.sample_weight = sample_weight
    return r


cdef _bind_batches(Run* r, Py_ssize_t batch_size, Py_ssize_t first_batch,
                   Py_ssize_t stop_batch, const intp[::1] order, intp[::1] label_work,
                   void* weight_work, Py_ssize_t weight_work_size, BatchStats[::1] stats):
    # Minibatches first_batch <= b < stop_batch of batch_size rows in ``order``.
    if batch_size < 1 or batch_size > r.capacity:
        raise ValueError("batch_size must lie in [1, capacity=%d]" % r.capacity)
    if first_batch < 0 or stop_batch < first_batch:
        raise ValueError("bad batch range %d..%d" % (first_batch, stop_batch))
    if stop_batch > first_batch and (stop_batch - 1) * batch_size >= r.n:
        raise ValueError("batch %d starts past the end of X" % (stop_batch - 1))
    if stats.shape[0] < stop_batch - first_batch:
        raise ValueError("stats needs one entry per minibatch")
    if order.shape[0]:
        if order.shape[0] != r.n:
            raise ValueError("order must have one entry per row")
        _check_order(order, r.n)
        if r.labels != NULL and label_work.shape[0] < batch_size:
            raise ValueError("label workspace too small")
        if r.sample_weight != NULL and weight_work_size < batch_size:
            raise ValueError("weight workspace too small")
        r.order = &order[0]
    r.batch_size = batch_size
    r.label_work = &label_work[0] if label_work.shape[0] else NULL
    r.weight_work = weight_work
    r.stats = &stats[0] if stats.shape[0] else NULL


cdef tuple _run_team(const Run* r, floating* params, floating* grads, floating* work,
                     floating* state, Py_ssize_t first_batch, Py_ssize_t stop_batch,
                     long long step, int n_threads):
    # The phases of each minibatch on a team of n_threads (a team of one without
    # OpenMP); returns (status, batches done, optimizer steps taken in all).
    cdef Part parts[MAX_PARTS]
    cdef int status = ST_OK
    cdef Py_ssize_t done = 0
    if n_threads < 1 or n_threads > MAX_PARTS:
        raise ValueError("n_threads must lie in [1, %d]" % MAX_PARTS)
    if stop_batch > first_batch and n_threads == 1:
        # One thread enters no OpenMP region: nothing of the runtime is touched,
        # which a process forked after a parallel fit needs (fastbp._threads).
        with nogil:
            _train_part(r, params, grads, work, state, parts, first_batch, stop_batch,
                        &step, &status, &done, 0, 1)
    elif stop_batch > first_batch:
        with nogil, parallel(num_threads=n_threads):
            # The team may be smaller than asked (nested or limited OpenMP): split
            # over the threads that actually run.
            _train_part(r, params, grads, work, state, parts, first_batch, stop_batch,
                        &step, &status, &done, fbp_thread_id(), fbp_team_size())
    return status, done, step


def train_run(floating[::1] params, floating[::1] grads, floating[::1] work,
              Py_ssize_t capacity, intp[::1] label_work, floating[::1] weight_work,
              Plan plan not None,
              object X, const floating[:, ::1] targets, const intp[::1] labels,
              const floating[::1] sample_weight, const intp[::1] order,
              Py_ssize_t batch_size, Py_ssize_t first_batch, Py_ssize_t stop_batch,
              int loss_kind, double loss_param, const OptimizerConfig[::1] opt,
              floating[:, ::1] state, const intp[:, ::1] segments, long long step,
              BatchStats[::1] stats, int n_threads=1):
    """Train on minibatches ``first_batch <= b < stop_batch`` of one epoch: the fused
    step (gradients, then clipping and the update) for each.

    Rows ``order[b * batch_size : (b + 1) * batch_size]`` of ``X`` form batch ``b``
    (``order`` empty: rows in storage order, read in place). ``stats[b]`` receives
    the batch's mean loss (weighted by ``sample_weight`` when not empty:
    sum(w_i loss_i) / sum(w_i)) plus the trainable layers' penalties, its residual
    sums or its correct count. The optimizer ``opt[0]`` (state rows in ``state``)
    updates the flat ranges listed in ``segments`` and nothing else, taking steps
    ``step + 1, step + 2, ...``. Stops before updating at a batch whose loss is not
    finite (its raw loss sum in ``stats[b].loss``). A batch whose sample weights sum
    to zero has loss 0 and is skipped: no gradient, no update, no step counted.

    ``n_threads > 1`` splits every step over that many OpenMP threads (BLAS should
    then run single-threaded); the result depends on the thread count only through
    the order of floating-point sums inside BLAS.

    Returns ``(status, batches_done, step)``, ``step`` the optimizer's step count
    afterwards.
    """
    if grads.shape[0] != params.shape[0]:
        raise ValueError("grads and params differ in size")
    cdef Run r = _data_run(plan, capacity, work.shape[0], params.shape[0], True, X,
                           targets, labels, &sample_weight[0] if sample_weight.shape[0] else NULL,
                           sample_weight.shape[0], loss_kind, loss_param)
    if not 0 <= first_batch <= stop_batch <= stats.shape[0]:
        raise ValueError("stats needs one entry per minibatch of the epoch, and"
                         " 0 <= first_batch <= stop_batch")
    _bind_batches(&r, batch_size, first_batch, stop_batch, order, label_work,
                  &weight_work[0] if weight_work.shape[0] else NULL, weight_work.shape[0],
                  stats[first_batch:])
    _bind_optimizer(&r, opt, state, segments, params.shape[0])
    return _run_team(&r, &params[0], &grads[0], &work[0],
                     &state[0, 0] if state.shape[0] and state.shape[1] else NULL,
                     first_batch, stop_batch, step, n_threads)


def batch_gradients(const floating[::1] params, floating[::1] grads, floating[::1] work,
                    Py_ssize_t capacity, intp[::1] label_work, floating[::1] weight_work,
                    Plan plan not None,
                    object X, const floating[:, ::1] targets,
                    const intp[::1] labels, const floating[::1] sample_weight,
                    const intp[::1] order, Py_ssize_t batch_size, Py_ssize_t batch,
                    int loss_kind, double loss_param, long long step,
                    BatchStats[::1] stats, int n_threads=1, Py_ssize_t mask_row0=0,
                    double penalty_weight=0.0):
    """The first half of a training step: the gradient of minibatch ``batch`` (rows as
    ``train_run`` takes them) into ``grads`` for the trainable layers, with dropout
    masks of step ``step + 1``; no update. ``stats[0]`` receives the batch's
    statistics as in ``train_run``. Returns the status (``STATUS_OK`` or
    ``STATUS_NONFINITE_LOSS``: then ``grads`` is not written; nor is it when the
    batch's sample weights sum to zero).

    For a share of a larger (global) minibatch, as data-parallel training takes
    them: ``mask_row0`` is the index of the batch's first row in the global
    minibatch, so that a row's dropout mask is the one it has there; with
    ``penalty_weight > 0`` the penalties of a network whose penalties are per
    sample divide by it (the global minibatch's sample weight) instead of the
    batch's own weight."""
    if grads.shape[0] != params.shape[0]:
        raise ValueError("grads and params differ in size")
    if mask_row0 < 0:
        raise ValueError("mask_row0 must be >= 0, got %d" % mask_row0)
    if not (penalty_weight >= 0 and isfinite(penalty_weight)):
        raise ValueError("penalty_weight must be finite and >= 0, got %r" % penalty_weight)
    cdef Run r = _data_run(plan, capacity, work.shape[0], params.shape[0], True, X,
                           targets, labels, &sample_weight[0] if sample_weight.shape[0] else NULL,
                           sample_weight.shape[0], loss_kind, loss_param)
    _bind_batches(&r, batch_size, batch, batch + 1, order, label_work,
                  &weight_work[0] if weight_work.shape[0] else NULL, weight_work.shape[0],
                  stats)
    r.mask_row0, r.penalty_weight = mask_row0, penalty_weight
    return _run_team(&r, <floating*>&params[0], &grads[0], &work[0], <floating*>NULL, batch,
                     batch + 1, step, n_threads)[0]


def apply_update(floating[::1] params, floating[::1] grads, floating[:, ::1] state,
                 const OptimizerConfig[::1] opt, const intp[:, ::1] segments, long long step,
                 int n_threads=1):
    """The second half of a training step: clip ``grads`` in place (``opt[0]``'s
    clipnorm over the ``segments``, then clipvalue) and apply update number ``step``
    (from 1) to the flat ranges in ``segments``, as ``train_run`` does after each
    minibatch."""
    cdef Run r
    cdef Part parts[MAX_PARTS]
    if grads.shape[0] != params.shape[0]:
        raise ValueError("grads and params differ in size")
    if step < 1:
        raise ValueError("step counts from 1")
    if n_threads < 1 or n_threads > MAX_PARTS:
        raise ValueError("n_threads must lie in [1, %d]" % MAX_PARTS)
    memset(&r, 0, sizeof(Run))
    _bind_optimizer(&r, opt, state, segments, params.shape[0])
    if params.shape[0] == 0:
        return
    cdef floating* state_ptr = &state[0, 0] if state.shape[0] and state.shape[1] else NULL
    if n_threads == 1:  # no OpenMP region (as in _run_team)
        with nogil:
            _update_part(&r, &params[0], &grads[0], state_ptr, step, parts, 0, 1)
        return
    with nogil, parallel(num_threads=n_threads):
        _update_part(&r, &params[0], &grads[0], state_ptr, step, parts, fbp_thread_id(),
                     fbp_team_size())


def input_gradient_run(const floating[::1] params, floating[::1] work, Py_ssize_t capacity,
                       Plan plan not None,
                       const floating[:, ::1] X, const floating[:, ::1] targets,
                       const intp[::1] labels, int loss_kind, double loss_param,
                       Py_ssize_t output, floating[:, ::1] out):
    """Gradient with respect to the inputs, by the same backward pass, into ``out``
    (shape of ``X``): row i is d loss_i / d x_i, sample i's own loss (``output`` < 0),
    or d f_i / d x_i for output column ``output`` as predict gives it (after the
    output activation). The workspace (a training one) must hold ``X.shape[0]``
    rows; every layer of ``plan`` must be trainable."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], i, j, l
    cdef Run r
    cdef floating* wp = &work[0]
    cdef floating* res
    cdef floating* seed
    cdef floating* row
    cdef floating p
    cdef BatchStats ignored
    cdef bint input_skip = False
    cdef const LayerPlan* first
    if n < 1:
        raise ValueError("at least one row is needed")
    if capacity < n:
        raise ValueError("the workspace must hold every row")
    memset(&r, 0, sizeof(Run))
    if output < 0:
        r = _data_run(plan, capacity, work.shape[0], params.shape[0], True, X, targets,
                      labels, NULL, 0, loss_kind, loss_param)
    else:
        _check_call(plan, params.shape[0], work.shape[0], capacity, True, d)
        r.net, r.plan, r.n_layers = plan.net, plan.layers, plan.n_layers
    first = plan.layers
    cdef Py_ssize_t k = plan.net.n_outputs
    cdef int output_act = <int>plan.net.output_activation
    if out.shape[0] != n or out.shape[1] != d:
        raise ValueError("out must have the shape of X")
    if output >= k:
        raise ValueError("output %d is not below the %d outputs" % (output, k))
    for l in range(plan.n_layers):
        if not plan.layers[l].trainable:
            raise ValueError("input_gradient_run needs every layer marked trainable")
        input_skip |= plan.layers[l].skip == SKIP_INPUT
    memset(&ignored, 0, sizeof(BatchStats))
    with nogil:
        _forward(&params[0], wp, capacity, r.plan, r.n_layers, &X[0, 0], NULL, 0, n, NULL,
                 True)
        res = _passed_on(wp, capacity, &r.plan[r.n_layers - 1])
        seed = wp + capacity * r.plan[r.n_layers - 1].delta_at
        if output < 0:
            # each row's own loss: the row scale, no mean over rows.
            _loss(loss_kind, loss_param, res, <const floating*>r.targets, r.labels,
                  <floating*>NULL, n, k, seed, <floating>r.net.loss_scale, &ignored)
        else:
            # predict's output activation, applied to a copy in the delta buffer: the
            # backward pass reads ``res``, the last layer's own output, unchanged.
            memcpy(seed, res, n * k * sizeof(floating))
            _bias_act(seed, <floating*>NULL, n, k, output_act, <floating>0, <floating*>NULL)
            for i in range(n):
                row = seed + i * k
                p = row[output]
                if output_act == ACT_SOFTMAX:  # d p_j / d z = p_j (e_j - p)
                    for j in range(k):
                        row[j] = -p * row[j]
                    row[output] += p
                else:  # identity, sigmoid, exponential: elementwise
                    for j in range(k):
                        row[j] = 0
                    row[output] = _derivative(output_act, p, p, <floating>0)
        # A residual connection from the input leaves its share in out first.
        _deltas(&params[0], wp, capacity, r.plan, r.n_layers, 0, n, NULL, &out[0, 0])
        _gemm(False, True, <int>n, <int>d, <int>first.n_out, <floating>1,
              wp + capacity * first.delta_at, <int>first.n_out,
              &params[0] + first.weight_at, <int>first.n_out,
              <floating>(1 if input_skip else 0), &out[0, 0], <int>d)


cdef bint _predict_rows(const floating* params, floating* work, Py_ssize_t capacity,
                        const NetPlan* net, const LayerPlan* plan, Py_ssize_t n_layers,
                        const floating* dense, SparseRows* sparse, Py_ssize_t n,
                        floating* out) noexcept nogil:
    """Forward pass over the ``n`` rows of dense or sparse X in chunks of ``capacity``
    rows into ``out`` (n x n_outputs), the output activation
    (``NetPlan.output_activation``: the one fused into the loss in training) applied.
    Returns False, having stopped, at the first chunk that holds NaN or infinity:
    the check costs a pass over X's values, not a separate NumPy call."""
    cdef Py_ssize_t start = 0, rows, d = net.n_inputs, k = net.n_outputs
    cdef const SparseRows* sx = sparse if dense == NULL else NULL
    cdef const LayerPlan* last = &plan[n_layers - 1]
    cdef floating* res
    while start < n:
        rows = capacity if start + capacity <= n else n - start
        if dense != NULL:
            if not _all_finite(dense + start * d, rows * d):
                return False
        else:
            sparse.first = start
            if not _all_finite(<const floating*>sparse.values + sparse.indptr[start],
                               sparse.indptr[start + rows] - sparse.indptr[start]):
                return False
        _forward(params, work, capacity, plan, n_layers,
                 dense + start * d if dense != NULL else NULL, sx, 0, rows, NULL, False)
        res = _passed_on(work, capacity, last)
        _bias_act(res, <floating*>NULL, rows, k, <int>net.output_activation, <floating>0,
                  <floating*>NULL)
        memcpy(out + start * k, res, rows * k * sizeof(floating))
        start += rows
    return True


def predict_run(const floating[::1] params, floating[::1] work, Py_ssize_t capacity,
                Plan plan not None, object X, floating[:, ::1] out):
    """Forward pass over all rows of ``X`` (dense or ``Csr``) in chunks of
    ``capacity`` rows into ``out`` (see ``_predict_rows``). Returns False when X
    holds NaN or infinity (the caller says where)."""
    cdef Py_ssize_t n
    cdef const void* dense
    cdef SparseRows sparse
    cdef bint finite
    n = _bind_input(X, plan, params.shape[0], work.shape[0], capacity, False, &out[0, 0]
                    if out.shape[0] else <floating*>NULL, &dense, &sparse)
    if out.shape[0] != n or out.shape[1] != plan.net.n_outputs:
        raise ValueError("out has the wrong shape")
    with nogil:
        finite = _predict_rows(&params[0], &work[0], capacity, plan.net, plan.layers,
                               plan.n_layers, <const floating*>dense, &sparse, n, &out[0, 0])
    return finite


cdef class Predictor:
    """One thread's predictions with one network's parameters: the plan, the
    parameters and a workspace of ``capacity`` rows bound (and checked) once, so
    that a call checks only its input and allocates only its output (the one-row
    predict of a service). Not for sharing between threads: the workspace is its
    own. Keeps the arrays alive; the parameters are read as they are at each call.
    """
    cdef readonly Plan plan
    cdef readonly cnp.ndarray params
    cdef readonly cnp.ndarray work
    cdef readonly Py_ssize_t capacity
    cdef int typenum
    cdef void* params_at
    cdef void* work_at

    def __cinit__(self, cnp.ndarray params not None, cnp.ndarray work not None,
                  Py_ssize_t capacity, Plan plan not None):
        cdef int typenum = cnp.PyArray_TYPE(params)
        if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
            raise TypeError("params must be float32 or float64")
        for name, a in (("params", params), ("work", work)):
            if (cnp.PyArray_TYPE(a) != typenum or cnp.PyArray_NDIM(a) != 1
                    or not cnp.PyArray_ISCARRAY(a)):
                raise TypeError("%s must be a writable, aligned, contiguous 1-D array of"
                                " the parameters' dtype" % name)
        _check_call(plan, cnp.PyArray_SIZE(params), cnp.PyArray_SIZE(work), capacity, False,
                    plan.net.n_inputs)
        self.plan, self.params, self.work, self.capacity = plan, params, work, capacity
        self.typenum = typenum
        self.params_at, self.work_at = cnp.PyArray_DATA(params), cnp.PyArray_DATA(work)

    def run(self, object X):
        """The outputs for ``X`` as a new array: X a ``Csr`` or an ndarray that the
        kernels read as it is (C-contiguous and aligned, of the parameters' dtype and
        the network's width, with rows); ``NotImplemented`` for an ndarray that is
        not (the caller converts it first); None when X holds NaN or infinity (the
        caller says where)."""
        cdef cnp.ndarray rows, out
        cdef cnp.npy_intp dims[2]
        cdef const void* dense = NULL
        cdef SparseRows sparse
        cdef Py_ssize_t n
        cdef bint finite
        memset(&sparse, 0, sizeof(SparseRows))
        if cnp.PyArray_Check(X):
            rows = <cnp.ndarray>X
            if not (cnp.PyArray_CheckExact(X) and cnp.PyArray_NDIM(rows) == 2
                    and cnp.PyArray_TYPE(rows) == self.typenum
                    and cnp.PyArray_ISCARRAY_RO(rows)
                    and cnp.PyArray_DIMS(rows)[1] == self.plan.net.n_inputs
                    and cnp.PyArray_DIMS(rows)[0] > 0):
                return NotImplemented
            n, dense = cnp.PyArray_DIMS(rows)[0], cnp.PyArray_DATA(rows)
        elif not isinstance(X, Csr):
            raise TypeError("X must be an ndarray or a fastbp._core.Csr")
        elif self.typenum == cnp.NPY_FLOAT:
            n = _bind_input(X, self.plan, cnp.PyArray_SIZE(self.params),
                            cnp.PyArray_SIZE(self.work), self.capacity, False, <float*>NULL,
                            &dense, &sparse)
        else:
            n = _bind_input(X, self.plan, cnp.PyArray_SIZE(self.params),
                            cnp.PyArray_SIZE(self.work), self.capacity, False, <double*>NULL,
                            &dense, &sparse)
        dims[0], dims[1] = n, self.plan.net.n_outputs
        out = cnp.PyArray_EMPTY(2, dims, self.typenum, 0)
        cdef void* out_at = cnp.PyArray_DATA(out)
        cdef Plan plan = self.plan
        with nogil:
            if self.typenum == cnp.NPY_FLOAT:
                finite = _predict_rows(<const float*>self.params_at, <float*>self.work_at,
                                       self.capacity, plan.net, plan.layers, plan.n_layers,
                                       <const float*>dense, &sparse, n, <float*>out_at)
            else:
                finite = _predict_rows(<const double*>self.params_at, <double*>self.work_at,
                                       self.capacity, plan.net, plan.layers, plan.n_layers,
                                       <const double*>dense, &sparse, n, <double*>out_at)
        return out if finite else None


def evaluate_run(const floating[::1] params, floating[::1] work, Py_ssize_t capacity,
                 Plan plan not None, object X, const floating[:, ::1] targets,
                 const intp[::1] labels, int loss_kind, double loss_param,
                 BatchStats[::1] stats):
    """Over all rows of ``X`` in chunks of ``capacity`` rows: ``stats[0]`` receives the
    mean loss (without penalties), the count of correct predictions or the residual
    sums."""
    cdef Run r = _data_run(plan, capacity, work.shape[0], params.shape[0], False, X,
                           targets, labels, NULL, 0, loss_kind, loss_param)
    cdef Py_ssize_t start, rows, k = plan.net.n_outputs, d = plan.net.n_inputs
    cdef double total = 0
    cdef const floating* targets_ptr = <const floating*>r.targets
    cdef const floating* dense = <const floating*>r.X
    cdef SparseRows* sx = &r.sparse if r.sparse.values != NULL else NULL
    if stats.shape[0] != 1:
        raise ValueError("stats must hold one BatchStats")
    memset(&stats[0], 0, sizeof(BatchStats))
    with nogil:
        start = 0
        while start < r.n:
            rows = capacity if start + capacity <= r.n else r.n - start
            r.sparse.first = start
            _forward(&params[0], &work[0], capacity, r.plan, r.n_layers,
                     dense + start * d if dense != NULL else NULL, sx, 0, rows, NULL, False)
            total += _loss(loss_kind, loss_param,
                           _passed_on(&work[0], capacity, &r.plan[r.n_layers - 1]),
                           targets_ptr + start * k if targets_ptr != NULL else NULL,
                           r.labels + start if r.labels != NULL else NULL, <floating*>NULL,
                           rows, k, <floating*>NULL, <floating>1, &stats[0])
            start += rows
    stats[0].loss = total * _loss_scale(r.net.loss_scale, r.n)


# ---------------------------------------------------------------------------
# Checks of the boundary.
# ---------------------------------------------------------------------------

cdef _bind_optimizer(Run* r, const OptimizerConfig[::1] opt, const floating[:, ::1] state,
                     const intp[:, ::1] segments, Py_ssize_t n_params):
    # The rule, its named state rows (each needed one present, each present one
    # inside ``state``) and the trainable segments.
    cdef const OptimizerConfig* o
    cdef Py_ssize_t s, i
    cdef intp rows[6]
    cdef bint needed[6]
    if opt.shape[0] != 1:
        raise ValueError("opt must hold one OptimizerConfig")
    o = &opt[0]
    if not 0 <= o.kind < OPT_COUNT:
        raise ValueError("unknown optimizer code %d" % o.kind)
    rows[:] = [o.momentum_buffer, o.exp_avg, o.exp_avg_sq, o.square_avg, o.grad_avg, o.sum]
    needed[:] = [(o.kind == OPT_SGD or o.kind == OPT_RMSPROP) and o.momentum != 0,
                 o.kind == OPT_ADAM, o.kind == OPT_ADAM, o.kind == OPT_RMSPROP,
                 o.kind == OPT_RMSPROP and o.centered != 0, o.kind == OPT_ADAGRAD]
    for i in range(6):
        if (needed[i] and rows[i] < 0) or rows[i] >= state.shape[0] or rows[i] < -1:
            raise ValueError("the optimizer's state rows do not match its rule (row %d)" % i)
    if state.shape[0] and state.shape[1] != n_params:
        raise ValueError("the optimizer state rows must have %d entries" % n_params)
    if segments.shape[0] and segments.shape[1] != 2:
        raise ValueError("segments must have shape (n, 2)")
    for s in range(segments.shape[0]):
        if not 0 <= segments[s, 0] <= segments[s, 1] <= n_params:
            raise ValueError("segment %d is outside the parameter buffer" % s)
    r.opt = o
    r.n_params = n_params
    r.segments = &segments[0, 0] if segments.shape[0] else NULL
    r.n_segments = segments.shape[0]


cdef class Plan:
    """A network plan as the kernels read it, checked once: the ``NetPlan`` and the
    ``LayerPlan`` rows (arrays of the dtypes in ``fastbp._codes``, which stay owned by
    the Python side and alive as long as this object). The kernels re-read only the
    fields that may change after the check (a layer's ``trainable`` flag, the
    dropout seed); a plan whose other fields change needs a new Plan."""
    cdef const NetPlan[::1] _net
    cdef const LayerPlan[::1] _layers
    cdef const NetPlan* net
    cdef const LayerPlan* layers
    cdef readonly Py_ssize_t n_layers
    cdef readonly Py_ssize_t n_params
    cdef bint dropout

    # __cinit__, not __init__: Plan.__new__ cannot make a Plan that skipped the check.
    def __cinit__(self, const NetPlan[::1] net not None, const LayerPlan[::1] layers not None,
                  Py_ssize_t n_params):
        cdef Py_ssize_t l
        _check_structure(net, layers, n_params)
        self._net, self._layers = net, layers
        self.net, self.layers = &net[0], &layers[0]
        self.n_layers, self.n_params = layers.shape[0], n_params
        self.dropout = self.net.input_dropout > 0
        for l in range(self.n_layers):
            self.dropout |= self.layers[l].dropout_after > 0


cdef class Csr:
    """A CSR matrix as the kernels read it, checked once (the ``Plan`` of data):
    ``values`` (float32 or float64), ``indices`` (intp, each below ``n_cols``) and
    ``indptr`` (intp, ``n_rows + 1`` entries from 0, never decreasing, ending at the
    number of values). The arrays stay referenced here; ``matrix`` is free for the
    caller (fastbp keeps its scipy matrix there)."""
    cdef readonly object values
    cdef readonly object indices
    cdef readonly object indptr
    cdef readonly Py_ssize_t n_rows
    cdef readonly Py_ssize_t n_cols
    cdef readonly bint double_values
    cdef public object matrix
    cdef const void* values_at
    cdef const intp* indices_at
    cdef const intp* indptr_at

    def __cinit__(self, values, const intp[::1] indices not None,
                  const intp[::1] indptr not None, Py_ssize_t n_cols):
        cdef Py_ssize_t i, nnz
        if (not isinstance(values, np.ndarray) or values.ndim != 1
                or values.dtype not in (np.float32, np.float64)
                or not values.flags.c_contiguous):
            raise TypeError("values must be a C-contiguous 1-D float32 or float64 array")
        nnz = values.shape[0]
        if indptr.shape[0] < 1 or indptr[0] != 0 or indptr[indptr.shape[0] - 1] != nnz:
            raise ValueError("indptr must start at 0 and end at the number of values")
        if indices.shape[0] != nnz:
            raise ValueError("indices and values differ in length")
        if n_cols < 1:
            raise ValueError("n_cols must be positive")
        for i in range(indptr.shape[0] - 1):
            if indptr[i + 1] < indptr[i]:
                raise ValueError("indptr decreases at row %d" % i)
        _check_indices(indices, n_cols, "column indices")
        self.values, self.indices, self.indptr = values, indices.base, indptr.base
        self.n_rows, self.n_cols = indptr.shape[0] - 1, n_cols
        self.double_values = values.dtype == np.float64
        self.values_at = cnp.PyArray_DATA(values)
        self.indices_at = &indices[0] if nnz else NULL
        self.indptr_at = &indptr[0]
        self.matrix = None

    @property
    def shape(self):
        return (self.n_rows, self.n_cols)

    @property
    def dtype(self):
        return self.values.dtype


cdef _check_call(Plan plan, Py_ssize_t n_params, Py_ssize_t work_size, Py_ssize_t capacity,
                 bint training, Py_ssize_t d, bint sparse=False):
    # What the plan's own check cannot know: this call's buffers and input width.
    if plan is None or plan.net == NULL or plan.n_layers < 1:
        raise TypeError("plan must be a fastbp._core.Plan")
    if n_params != plan.n_params:
        raise ValueError("the parameter buffer has %d entries, the plan %d"
                         % (n_params, plan.n_params))
    if d != plan.net.n_inputs:
        raise ValueError("X has %d features, the network expects %d" % (d, plan.net.n_inputs))
    if capacity < 1:
        raise ValueError("capacity must be positive")
    # Sparse input is read in place: a training workspace may end before the input
    # batch (NetPlan.x_at: the last buffer).
    if work_size < capacity * (
            (plan.net.x_at if sparse else plan.net.train_width) if training
            else plan.net.infer_width):
        raise ValueError("the workspace is too small for %d rows" % capacity)


cdef _check_buffer(intp offset, intp width, intp limit, str what, Py_ssize_t l):
    # A workspace buffer of ``width`` entries per row at ``offset`` (in rows).
    if offset < 0 or offset + width > limit:
        raise ValueError("the %s buffer of layer %d lies outside the workspace" % (what, l))


cdef _check_structure(const NetPlan[::1] net, const LayerPlan[::1] plan, Py_ssize_t n_params):
    # Structural checks of a plan, so that no later call can touch memory out of
    # bounds through it. The model builds the plan; users never do.
    cdef Py_ssize_t l, n_layers = plan.shape[0]
    cdef const NetPlan* nw
    cdef const LayerPlan* layer
    cdef intp infer, train, source_width
    if net.shape[0] != 1 or n_layers < 1:
        raise ValueError("a plan is one NetPlan and at least one LayerPlan")
    nw = &net[0]
    infer, train = nw.infer_width, nw.train_width
    if nw.n_inputs < 1 or not 0 <= nw.output_activation < ACT_COUNT:
        raise ValueError("bad NetPlan")
    if not 0 <= nw.input_dropout < 1:
        raise ValueError("dropout rates must lie in [0, 1)")
    if infer < 1 or train < infer:
        raise ValueError("bad workspace widths")
    if plan[n_layers - 1].n_out != nw.n_outputs:
        raise ValueError("the last layer's width is not the network's output width")
    _check_buffer(nw.x_at, nw.n_inputs, train, "input batch", -1)
    _check_buffer(nw.y_at, nw.n_outputs, train, "target batch", -1)
    if nw.x_at + nw.n_inputs != train:
        raise ValueError("the input batch must end the training workspace")
    for l in range(n_layers):
        layer = &plan[l]
        if layer.n_in < 1 or layer.n_out < 1:
            raise ValueError("layer %d has an empty dimension" % l)
        if layer.n_in != (nw.n_inputs if l == 0 else plan[l - 1].n_out):
            raise ValueError("layer %d input size does not match the layer below" % l)
        if not 0 <= layer.activation < ACT_COUNT:
            raise ValueError("layer %d has an unknown activation code" % l)
        if layer.weight_at < 0 or layer.bias_at < 0 \
                or layer.weight_at + layer.n_in * layer.n_out > n_params \
                or layer.bias_at + layer.n_out > n_params:
            raise ValueError("layer %d lies outside the parameter buffer" % l)
        if not 0 <= layer.dropout_after < 1 or (l == n_layers - 1 and layer.dropout_after):
            raise ValueError("layer %d: dropout rates lie in [0, 1), 0 after the last" % l)
        _check_buffer(layer.out_at, layer.n_out, infer, "output", l)
        if layer.skip != NO_SKIP:
            if not SKIP_INPUT <= layer.skip < l:
                raise ValueError("layer %d has a bad skip connection" % l)
            source_width = nw.n_inputs if layer.skip == SKIP_INPUT else plan[layer.skip].n_out
            if source_width != layer.n_out:
                raise ValueError("layer %d adds a skip of another width" % l)
            _check_buffer(layer.sum_at, layer.n_out, infer, "residual sum", l)
        _check_buffer(layer.delta_at, layer.n_out, train, "delta", l)
        if layer.activation == ACT_GELU or layer.z_at >= 0:
            _check_buffer(layer.z_at, layer.n_out, train, "pre-activation", l)


cdef _check_indices(const intp[::1] values, Py_ssize_t limit, str what):
    # An index out of [0, limit) would read or write outside a row or an array.
    cdef Py_ssize_t i
    cdef bint bad = False
    with nogil:
        for i in range(values.shape[0]):
            bad |= (values[i] < 0) | (values[i] >= limit)
    if bad:
        raise ValueError("%s must lie in [0, %d)" % (what, limit))


cdef inline _check_order(const intp[::1] order, Py_ssize_t n):
    _check_indices(order, n, "order's row indices")


cdef inline _check_labels(const intp[::1] labels, Py_ssize_t n_classes):
    _check_indices(labels, n_classes, "class labels")


# ---------------------------------------------------------------------------
# Python boundary: single kernels (hand-written layer API and tests).
# ---------------------------------------------------------------------------

PHASE_TIMES = bool(FBP_PHASE_TIMES)
PHASES = ("work", "first barrier", "gradients", "update", "second barrier")
assert FBP_PHASE_PARTS == MAX_PARTS and FBP_PHASE_COUNT == len(PHASES) < FBP_PHASE_ROW


def phase_times(bint reset=False):
    """In a build with ``FASTBP_PHASE_TIMES=1`` (``PHASE_TIMES``), the seconds that each
    thread of the training steps run since the last reset spent in each phase of a
    step (``PHASES``: gather, forward, loss and deltas; waiting at the first barrier;
    the loss's reduction and the gradients; the clipping and the update; waiting at
    the second), and its steps: ``(seconds, steps)``, arrays of shapes
    ``(MAX_THREADS, 5)`` and ``(MAX_THREADS,)``,
    row ``t`` the thread that takes part ``t`` of each step. ``reset`` zeroes them
    after reading. The counts are the process's, of every fit: time one fit at a time.
    ``None`` in other builds."""
    cdef int t, k
    if not FBP_PHASE_TIMES:
        return None
    seconds = np.empty((MAX_PARTS, FBP_PHASE_COUNT))
    steps = np.empty(MAX_PARTS, dtype=np.int64)
    for t in range(MAX_PARTS):
        steps[t] = <long long>fbp_phase_rows[t][FBP_PHASE_COUNT]
        for k in range(FBP_PHASE_COUNT):
            seconds[t, k] = fbp_phase_rows[t][k]
        if reset:
            memset(fbp_phase_rows[t], 0, sizeof(fbp_phase_rows[t]))
    return seconds, steps


def permutation(intp[::1] order not None, unsigned long long seed):
    """Fill ``order`` with a uniformly random permutation of 0..len(order)-1, a
    function of ``seed`` alone (the same on every machine): an epoch's row order."""
    with nogil:
        _permutation(&order[0] if order.shape[0] else NULL, order.shape[0], seed)


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
           bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0,
           str path="auto", Py_ssize_t repeats=1, isa=None):
    """``out = alpha * op(a) @ op(b) + beta * out`` for C-contiguous arrays.

    ``path``: "auto" (as the training step chooses), "blas" or "small" (the
    small-product kernel: needs ``SMALL_GEMM_CPU``, alpha 1 and beta 0 or 1).
    ``isa``: with path "small", the version of the kernel, one of ``SMALL_GEMM_ISAS``
    (default: the widest, the one the training step takes).
    ``repeats`` runs the same product that many times without the GIL (for timing
    the paths in ``bench/gemm_paths.py``; with beta 0 every run gives the same out).
    """
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t kb = b.shape[1] if trans_b else b.shape[0]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    cdef int chosen = GEMM_PATHS.get(path, -1)
    if chosen < 0:
        raise ValueError("matmul path must be 'auto', 'blas' or 'small', not %r" % (path,))
    if chosen == GEMM_SMALL and not _SMALL_GEMM_CPU:
        raise ValueError("the small-product kernel has no version for this CPU and"
                         " compiler (x86-64 or arm64 with GCC or Clang); use path='blas'"
                         " or 'auto'")
    cdef int version = 0
    if isa is not None:
        if chosen != GEMM_SMALL:
            raise ValueError("matmul isa chooses a version of the small-product kernel:"
                             " pass it with path='small', not %r" % (path,))
        if isa not in SMALL_GEMM_ISAS:
            raise ValueError("matmul isa must be one this CPU runs (%s), not %r"
                             % (", ".join(map(repr, SMALL_GEMM_ISAS)) or "none", isa))
        version = SMALL_GEMM_VERSIONS.index(isa)
    if chosen == GEMM_SMALL and (alpha != 1 or (beta != 0 and beta != 1)):
        raise ValueError("the small-product kernel computes out = op(a) @ op(b) (beta 0)"
                         " or out += op(a) @ op(b) (beta 1); got alpha %r, beta %r"
                         % (alpha, beta))
    if repeats < 1:
        raise ValueError("matmul repeats must be at least 1, got %d" % repeats)
    if k != kb or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("matmul shapes do not match: (%d, %d) @ (%d, %d) -> (%d, %d)"
                         % (m, k, kb, n, out.shape[0], out.shape[1]))
    if m >= 2**31 or n >= 2**31 or k >= 2**31:  # BLAS takes 32-bit sizes
        raise ValueError("matmul dimensions must be below 2**31")
    if m == 0 or n == 0:
        return
    cdef Py_ssize_t i, j
    if k == 0:
        # An empty inner dimension: op(a) @ op(b) is zero.
        for i in range(m):
            for j in range(n):
                out[i, j] = 0 if beta == 0 else <floating>beta * out[i, j]
        return
    cdef Py_ssize_t _run
    with nogil:
        for _run in range(repeats):
            _gemm(trans_a, trans_b, <int>m, <int>n, <int>k, <floating>alpha,
                  &a[0, 0], <int>a.shape[1], &b[0, 0], <int>b.shape[1],
                  <floating>beta, &out[0, 0], <int>n, chosen, version)


def gemm_path(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, bint trans_a=False,
              bint trans_b=False, dtype="float32", isa=None):
    """The path, "small" or "blas", that the training step takes for a product of
    ``op(A)`` (m x k) by ``op(B)`` (k x n) of ``dtype`` (``_small_product``) on this
    CPU, or, given ``isa`` ("portable", "avx2" or "avx512"), on a CPU whose widest
    version of the kernel that is (the rule reads only the shapes and the version)."""
    if m < 1 or n < 1 or k < 1 or m >= 2**31 or n >= 2**31 or k >= 2**31:
        raise ValueError("gemm_path takes dimensions from 1 to 2**31 - 1, got %d, %d, %d"
                         % (m, n, k))
    kind = np.dtype(dtype)
    if kind != np.float32 and kind != np.float64:
        raise ValueError("gemm_path dtype must be float32 or float64, not %r" % (dtype,))
    if isa is not None and isa not in SMALL_GEMM_VERSIONS[1:]:
        raise ValueError("gemm_path isa must be %s, not %r"
                         % (", ".join(map(repr, SMALL_GEMM_VERSIONS[1:])), isa))
    cdef int version = _SMALL_GEMM_CPU if isa is None else SMALL_GEMM_VERSIONS.index(isa)
    return ("small" if _small_product(trans_a, trans_b, <int>m, <int>n, <int>k, kind.itemsize,
                                      version) else "blas")


# The versions of the multiply-add loop (_peak.h's FBP_PEAK_* codes are the indices),
# and the widest this CPU runs.
PEAK_ISAS = ("portable", "avx2", "avx512")
PEAK_ISA = PEAK_ISAS[fbp_peak_isa()]


cdef void _peak_part(int isa, bint wide, long long rounds, double start, double m,
                     double c, double* sums, int* team) noexcept nogil:
    # One thread's loop: the sum of its chains into sums[thread]; thread 0 also
    # records how many threads the team has.
    cdef int t = fbp_thread_id()
    if t == 0:
        team[0] = fbp_team_size()
    if wide:
        sums[t] = fbp_peak_f64(isa, rounds, start, m, c)
    else:
        sums[t] = fbp_peak_f32(isa, rounds, <float>start, <float>m, <float>c)


def fma_loop(double[::1] sums not None, long long rounds, dtype="float32", isa=None,
             double start=1.0, double m=0.9990234375, double c=0.0009765625):
    """Run ``rounds`` rounds of the multiply-add loop of ``_peak.h`` on ``len(sums)``
    threads at once (an OpenMP team; one thread enters no OpenMP region).

    Each thread keeps its own chains ``a <- a * m + c`` in registers, the lanes
    starting at ``start * (j + 1) / lanes`` (``j`` = 0 .. lanes - 1), and writes their
    sum into ``sums[thread]``. ``isa``: "avx512", "avx2" or "portable" (default: the
    widest this CPU runs, ``PEAK_ISA``). The defaults (m = 1 - 2**-10, c = 2**-10)
    keep every chain in (0, 1] for ``start`` in (0, 1].

    Returns ``(threads, flops)``: how many threads ran (fewer than asked where OpenMP
    is missing or limited) and the floating-point operations each did,
    ``2 * rounds * chains * lanes``. Time the call to get the rate.
    """
    cdef int version = PEAK_ISAS.index(PEAK_ISA) if isa is None else -1
    if isa is not None:
        if isa not in PEAK_ISAS:
            raise ValueError("fma_loop isa must be one of %s, not %r"
                             % (", ".join(map(repr, PEAK_ISAS)), isa))
        version = PEAK_ISAS.index(isa)
        if version > PEAK_ISAS.index(PEAK_ISA):
            raise ValueError("this CPU does not run the %r loop (the widest it runs is %r)"
                             % (isa, PEAK_ISA))
    kind = np.dtype(dtype)
    if kind != np.float32 and kind != np.float64:
        raise ValueError("fma_loop dtype must be float32 or float64, not %r" % (dtype,))
    if not 1 <= sums.shape[0] <= MAX_PARTS:
        raise ValueError("fma_loop runs on 1 to %d threads (one entry of sums each), got %d"
                         % (MAX_PARTS, sums.shape[0]))
    if rounds < 0:
        raise ValueError("fma_loop rounds must be at least 0, got %d" % rounds)
    cdef int n_threads = <int>sums.shape[0], team = 1
    cdef bint wide = kind == np.float64
    if n_threads == 1:
        with nogil:
            _peak_part(version, wide, rounds, start, m, c, &sums[0], &team)
    else:
        with nogil, parallel(num_threads=n_threads):
            _peak_part(version, wide, rounds, start, m, c, &sums[0], &team)
    cdef long long lanes = fbp_peak_chains(version) * fbp_peak_lanes(version, kind.itemsize)
    return team, 2 * rounds * lanes


def bias_act_forward(floating[:, ::1] z, const floating[::1] bias, int act, double slope=0.0):
    """In place ``z = f(z + bias)``; ``bias`` of length 0 means no bias."""
    if bias.shape[0] != 0 and bias.shape[0] != z.shape[1]:
        raise ValueError("bias has %d entries, z has %d columns" % (bias.shape[0], z.shape[1]))
    if not 0 <= act < ACT_COUNT:
        raise ValueError("unknown activation code %d" % act)
    if z.shape[0] == 0 or z.shape[1] == 0:
        return
    with nogil:
        _bias_act(&z[0, 0], &bias[0] if bias.shape[0] else NULL, z.shape[0], z.shape[1],
                  act, <floating>slope, NULL)


def act_backward(const floating[:, ::1] a, floating[:, ::1] delta, int act, double slope=0.0,
                 const floating[:, ::1] z=None):
    """In place ``delta *= f'(z)`` given the activation output ``a = f(z)`` (and, for
    GELU, the input ``z``)."""
    if a.shape[0] != delta.shape[0] or a.shape[1] != delta.shape[1]:
        raise ValueError("a and delta differ in shape")
    if act == ACT_GELU and (z is None or z.shape[0] != a.shape[0] or z.shape[1] != a.shape[1]):
        raise ValueError("GELU's derivative needs z of a's shape")
    if not 0 <= act < ACT_COUNT:
        raise ValueError("unknown activation code %d" % act)
    if a.shape[0] == 0 or a.shape[1] == 0:
        return
    with nogil:
        _act_backward(&a[0, 0], &z[0, 0] if act == ACT_GELU else NULL, &delta[0, 0],
                      a.shape[0], a.shape[1], act, <floating>slope)


def col_sums(const floating[:, ::1] d, floating[::1] out):
    """``out = d.sum(axis=0)``."""
    if out.shape[0] != d.shape[1]:
        raise ValueError("out has %d entries, d has %d columns" % (out.shape[0], d.shape[1]))
    if d.shape[1] == 0:
        return
    with nogil:
        _col_sums(&d[0, 0] if d.shape[0] else NULL, d.shape[0], d.shape[1], d.shape[1], &out[0])


def loss_delta(int kind, const floating[:, ::1] out, const floating[:, ::1] targets,
               const intp[::1] labels, floating[:, ::1] delta, double param=1.0,
               double row_scale=1.0):
    """Mean loss of ``out`` against ``targets`` (or integer ``labels`` for
    cross-entropy with labels) and its gradient with respect to ``out`` in ``delta``;
    a row's loss is ``row_scale`` times the sum over its columns.

    Returns ``(mean_loss, n_correct)``.
    """
    cdef Py_ssize_t rows = out.shape[0], cols = out.shape[1]
    cdef BatchStats stats
    cdef double value
    memset(&stats, 0, sizeof(BatchStats))
    if delta.shape[0] != rows or delta.shape[1] != cols:
        raise ValueError("delta and out differ in shape")
    if kind == LOSS_CE_LABELS:
        if labels.shape[0] != rows:
            raise ValueError("labels and out differ in length")
        _check_labels(labels, cols)
    elif targets.shape[0] != rows or targets.shape[1] != cols:
        raise ValueError("targets and out differ in shape")
    if not 0 <= kind < LOSS_COUNT:
        raise ValueError("unknown loss code %d" % kind)
    if rows == 0 or cols == 0:
        raise ValueError("empty batch")
    with nogil:
        value = _loss(kind, param, &out[0, 0],
                      &targets[0, 0] if kind != LOSS_CE_LABELS else NULL,
                      &labels[0] if kind == LOSS_CE_LABELS else NULL, <floating*>NULL,
                      rows, cols, &delta[0, 0], _loss_scale(row_scale, rows), &stats)
    return value * _loss_scale(row_scale, rows), stats.correct


def sgd_update(floating[::1] params, const floating[::1] grads, floating[::1] momentum_buffer,
               double lr, double momentum=0.0, double weight_decay=0.0, bint nesterov=False):
    """One SGD step in place (see ``fastbp.optimizers.SGD`` for the rule)."""
    cdef Py_ssize_t n = params.shape[0]
    if grads.shape[0] != n or (momentum != 0 and momentum_buffer.shape[0] != n):
        raise ValueError("params, grads and momentum buffer differ in size")
    if n == 0:
        return
    with nogil:
        _sgd_update(&params[0], &grads[0], &momentum_buffer[0] if momentum != 0 else NULL,
                    n, <floating>lr, <floating>momentum, <floating>weight_decay, nesterov)


def adam_update(floating[::1] params, const floating[::1] grads, floating[::1] exp_avg,
                floating[::1] exp_avg_sq, long long step, double lr, double beta1,
                double beta2, double eps, double weight_decay=0.0, bint decoupled=False):
    """One Adam (or, decoupled, AdamW) step in place; ``step`` is this step's number,
    from 1."""
    cdef Py_ssize_t n = params.shape[0]
    if grads.shape[0] != n or exp_avg.shape[0] != n or exp_avg_sq.shape[0] != n:
        raise ValueError("params, grads and Adam state differ in size")
    if step < 1:
        raise ValueError("step counts from 1")
    if n == 0:
        return
    cdef StepScalars at
    with nogil:
        _adam_scalars(lr, beta1, beta2, eps, False, step, &at)
        _adam_update(&params[0], &grads[0], &exp_avg[0], &exp_avg_sq[0], n, lr, beta1,
                     beta2, weight_decay, decoupled, &at)


# Codes as seen from Python: the one list in fastbp._codes (checked at import).
ACTIVATION_CODES = dict(_codes.ACTIVATIONS)
LOSS_CODES = dict(_codes.LOSSES)
OPTIMIZER_CODES = dict(_codes.OPTIMIZERS)
