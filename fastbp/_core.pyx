# cython: language_level=3
"""Compiled kernels of fastbp.

Design, in a few points:

1. Every kernel is a ``cdef ... noexcept nogil`` function over raw pointers to
   row-major (C-contiguous) data, written once for ``floating`` (float32 and
   float64). Kernels never allocate, never validate and never touch a Python
   object: the Python layer (``fastbp.model``, ``fastbp.layers``) checks its inputs
   once, owns every buffer and hands the kernels preallocated memory.
2. Dense algebra goes through BLAS ``sgemm``/``dgemm`` from
   ``scipy.linalg.cython_blas``. BLAS is column-major; a row-major product
   ``C = op(A) @ op(B)`` is computed as the column-major ``C^T = op(B)^T @ op(A)^T``,
   so no array is ever transposed or copied.
3. The output activation is fused with the loss (softmax with cross-entropy,
   sigmoid with binary cross-entropy, exp with Poisson): one pass computes the loss
   value and the delta ``dL/dz`` with respect to the logits.
4. ``train_run`` is the whole minibatch step (gather the shuffled rows, dropout,
   forward, loss, backward, penalties, clipping, optimizer update) for a run of
   minibatches, without the GIL and without allocating, split over OpenMP threads
   when asked (rows for the forward and backward passes, columns for the gradients,
   flat ranges for the update; three barriers per step). ``loss_grad``,
   ``evaluate_run``, ``predict_run`` and ``input_gradient_run`` reuse the same
   passes, so gradient checks test the training path.
5. The ``def`` functions are the module's Python boundary: they take typed
   memoryviews, check shapes, offsets and indices (a wrong one raises, never
   corrupts memory) and call the kernels. They serve the model, the hand-written
   layer API and the tests.

Layer table (``spec``, an intp array of shape (n_layers, SPEC_WIDTH)), per layer:
``n_in, n_out, activation code, weight offset, bias offset`` into the flat parameter
and gradient buffers, ``trainable`` (0: no gradient is computed for the layer, and
no delta below the lowest trainable layer), ``skip`` (a residual connection: the
layer's output is f(z) plus the output of that layer, -1 for the network input, -2
for none; the sum goes to its own buffer, the next layer's input).

Workspace layout (``layout``, an intp array): offsets into one flat workspace of
the gathered input and target batches, then per layer its output, its delta, its
kept pre-activation (GELU) and its residual sum (-1 where a layer has none). Each
buffer holds up to ``capacity`` rows; a batch of ``rows <= capacity`` uses the
leading rows, and each thread its own share of them.
"""

from cython cimport floating
from libc.math cimport log, logf, log1p, log1pf, sqrt, fabs, isfinite, pow, exp, erf, M_SQRT1_2
from libc.string cimport memcpy, memset
from scipy.linalg.cython_blas cimport sgemm, dgemm

cimport numpy as cnp
from cython.parallel cimport parallel

cnp.import_array()

ctypedef cnp.intp_t intp

# Activation codes (mirrored in fastbp/activations.py).
cdef enum:
    ACT_IDENTITY = 0
    ACT_SIGMOID = 1
    ACT_TANH = 2
    ACT_RELU = 3
    ACT_LEAKY_RELU = 4
    ACT_SOFTMAX = 5
    ACT_ELU = 6
    ACT_GELU = 7
    ACT_SOFTPLUS = 8
    ACT_EXP = 9

# Loss codes (mirrored in fastbp/losses.py).
cdef enum:
    LOSS_MSE = 0
    LOSS_CE_LABELS = 1
    LOSS_CE_SOFT = 2
    LOSS_BCE = 3
    LOSS_MAE = 4
    LOSS_HUBER = 5
    LOSS_POISSON = 6

# Optimizer codes (mirrored in fastbp/optimizers.py).
cdef enum:
    OPT_SGD = 0
    OPT_ADAM = 1
    OPT_RMSPROP = 2
    OPT_ADAGRAD = 3

# The hyperparameter vector: the optimizer's own in 0..7, then gradient clipping.
cdef enum:
    HYPER_CLIPNORM = 8
    HYPER_CLIPVALUE = 9
    HYPER_SIZE = 10

# Columns of the layer table.
cdef enum:
    SPEC_N_IN = 0
    SPEC_N_OUT = 1
    SPEC_ACT = 2
    SPEC_W_OFF = 3
    SPEC_B_OFF = 4
    SPEC_TRAINABLE = 5
    SPEC_SKIP = 6
    SPEC_WIDTH = 7

# SPEC_SKIP values: no skip connection; the network input; else a layer's index.
cdef enum:
    NO_SKIP = -2
    SKIP_INPUT = -1

# Entries of the workspace layout: the gathered batch, then for each layer l its
# output at LAY_ACT0 + l, its delta dL/dz at LAY_ACT0 + n_layers + l, its kept
# pre-activation at LAY_ACT0 + 2 n_layers + l and its residual sum at
# LAY_ACT0 + 3 n_layers + l (-1: none).
cdef enum:
    LAY_XB = 0
    LAY_YB = 1
    LAY_ACT0 = 2

# Most threads one training step is split over.
cdef enum:
    MAX_PARTS = 64

SPEC_COLUMNS = SPEC_WIDTH
SPEC = {"n_in": SPEC_N_IN, "n_out": SPEC_N_OUT, "activation": SPEC_ACT,
        "weight_offset": SPEC_W_OFF, "bias_offset": SPEC_B_OFF, "trainable": SPEC_TRAINABLE,
        "skip": SPEC_SKIP}
MAX_THREADS = MAX_PARTS
HAVE_OPENMP = bool(FBP_HAVE_OPENMP)

# Status codes returned by train_run.
cdef enum:
    ST_OK = 0
    ST_NONFINITE_LOSS = 1

STATUS_OK = ST_OK
STATUS_NONFINITE_LOSS = ST_NONFINITE_LOSS


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

cdef void _gemm(bint trans_a, bint trans_b, int m, int n, int k, floating alpha,
                const floating* a, int lda, const floating* b, int ldb,
                floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major ``C (m x n) = alpha * op(A) (m x k) @ op(B) (k x n) + beta * C``.

    ``lda``, ``ldb`` and ``ldc`` are the row strides (in elements) of A, B and C as
    stored. Computed as the column-major product ``C^T = op(B)^T @ op(A)^T``.
    """
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
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

    One loop per activation, branch-free in the element, so that each vectorizes.
    """
    cdef Py_ssize_t i, j, size = rows * cols
    cdef floating v
    cdef floating* row
    if bias != NULL:
        for i in range(rows):
            row = z + i * cols
            for j in range(cols):
                row[j] = row[j] + bias[j]
    if keep_z != NULL:
        memcpy(keep_z, z, size * sizeof(floating))
    if act == ACT_RELU:
        for i in range(size):
            z[i] = 0 if z[i] < 0 else z[i]  # NaN passes through
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
        for i in range(size):
            d[i] = d[i] if a[i] > 0 else 0
    elif act == ACT_LEAKY_RELU:
        # slope >= 0 (checked in Python), so a > 0 exactly where z > 0.
        for i in range(size):
            d[i] = d[i] if a[i] > 0 else d[i] * param
    elif act == ACT_SIGMOID:
        for i in range(size):
            v = a[i]
            d[i] = d[i] * (v * (1 - v))
    elif act == ACT_TANH:
        for i in range(size):
            v = a[i]
            d[i] = d[i] * (1 - v * v)
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
    (the bias gradient)."""
    cdef Py_ssize_t i, j
    cdef const floating* row
    for j in range(cols):
        out[j] = 0
    for i in range(rows):
        row = d + i * ld
        for j in range(cols):
            out[j] = out[j] + row[j]


# ---------------------------------------------------------------------------
# Losses: value (summed over the rows) and delta in one pass.
# ``scale`` turns the sum into the mean over the whole batch: the delta written is
# ``scale * d(sum)/dz``. ``delta`` may be NULL to compute the value only.
# ---------------------------------------------------------------------------

cdef double _loss_ce_labels(const floating* z, const intp* labels, const floating* weights,
                            Py_ssize_t rows, Py_ssize_t cols, floating* delta, floating scale,
                            intp* n_correct) noexcept nogil:
    """Softmax cross-entropy on logits with integer class labels (rows weighted)."""
    cdef Py_ssize_t i, j, best
    cdef const floating* row
    cdef floating* drow
    cdef floating top, total, e, w
    cdef double loss = 0
    cdef intp correct = 0
    for i in range(rows):
        row = z + i * cols
        w = weights[i] if weights != NULL else 1
        top = row[0]
        best = 0
        for j in range(1, cols):
            if row[j] > top:
                top = row[j]
                best = j
        if best == labels[i]:
            correct += 1
        total = 0
        if delta != NULL:
            drow = delta + i * cols
            for j in range(cols):
                e = _exp(row[j] - top)
                drow[j] = e
                total = total + e
            loss += w * (_log(total) + top - row[labels[i]])
            total = scale * w / total
            for j in range(cols):
                drow[j] = drow[j] * total
            drow[labels[i]] = drow[labels[i]] - scale * w
        else:
            for j in range(cols):
                total = total + _exp(row[j] - top)
            loss += w * (_log(total) + top - row[labels[i]])
    n_correct[0] += correct
    return loss


cdef double _loss_ce_soft(const floating* z, const floating* target, const floating* weights,
                          Py_ssize_t rows, Py_ssize_t cols, floating* delta, floating scale,
                          intp* n_correct) noexcept nogil:
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
    n_correct[0] += correct
    return loss


cdef double _loss_elementwise(int kind, double param, const floating* out,
                              const floating* target, const floating* weights, Py_ssize_t rows,
                              Py_ssize_t cols, floating* delta, floating scale,
                              intp* n_correct, double* residuals) noexcept nogil:
    """The losses that average over every element (rows weighted), value and delta:

    - mse: (o - t)^2, 2 (o - t);
    - mae: |o - t|, sign(o - t);
    - huber (param = delta): (o - t)^2 / 2 within delta, else delta (|o - t| - delta / 2);
      its derivative o - t, clipped to [-delta, delta];
    - binary cross-entropy on logits z (sigmoid fused, stable for any |z|):
      max(z, 0) - z t + log(1 + exp(-|z|)), sigmoid(z) - t; counts correct 0/1 guesses;
    - poisson on log-rates z (exp fused): exp(z) - t z, exp(z) - t.

    For the regression losses, ``residuals`` (when not NULL) accumulates the sums of
    |prediction - t| and (prediction - t)^2, the prediction being exp(z) for poisson.
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
        if residuals != NULL and kind != LOSS_BCE:
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
                g = exp(v) - t[j]
            if d != NULL:
                d[j] = scale * w * g
        loss += w * row_loss
    n_correct[0] += correct
    if residuals != NULL:
        residuals[0] += absolute
        residuals[1] += square
    return loss


cdef double _loss(int kind, double param, const floating* out, const floating* target,
                  const intp* labels, const floating* weights, Py_ssize_t rows,
                  Py_ssize_t cols, floating* delta, floating scale,
                  intp* n_correct, double* residuals=NULL) noexcept nogil:
    """Weighted sum of the loss over ``rows`` rows; writes ``scale * w_i * dloss/dout``
    into ``delta`` (NULL: value only). ``weights`` NULL: every row weighs 1."""
    if kind == LOSS_CE_LABELS:
        return _loss_ce_labels(out, labels, weights, rows, cols, delta, scale, n_correct)
    if kind == LOSS_CE_SOFT:
        return _loss_ce_soft(out, target, weights, rows, cols, delta, scale, n_correct)
    return _loss_elementwise(kind, param, out, target, weights, rows, cols, delta, scale,
                             n_correct, residuals)


cdef inline double _loss_scale(int kind, double total_weight, Py_ssize_t cols) noexcept nogil:
    # Cross-entropy averages over (weighted) rows, the others over every element.
    if kind == LOSS_CE_LABELS or kind == LOSS_CE_SOFT:
        return 1.0 / total_weight
    return 1.0 / (total_weight * cols)


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


cdef void _adam_update(floating* p, const floating* g, floating* m, floating* v,
                       Py_ssize_t n, double lr, double beta1, double beta2, double eps,
                       double weight_decay, bint decoupled, long long step) noexcept nogil:
    """PyTorch's Adam (L2 weight decay added to the gradient) or AdamW (decoupled:
    the weights shrink by lr * weight_decay first); ``step`` counts from 1."""
    cdef double step_size = lr / (1 - pow(beta1, <double>step))
    cdef double bias2_sqrt = sqrt(1 - pow(beta2, <double>step))
    cdef double wd = 0 if decoupled else weight_decay
    cdef double decay = 1 - lr * weight_decay if decoupled else 1
    if floating is float:
        fbp_adam_f32(p, g, m, v, n, step_size, bias2_sqrt, 1 - beta1, beta2, 1 - beta2,
                     wd, eps, decay)
    else:
        fbp_adam_f64(p, g, m, v, n, step_size, bias2_sqrt, 1 - beta1, beta2, 1 - beta2,
                     wd, eps, decay)


cdef void _optimizer_step(int kind, floating* p, const floating* g, floating* state,
                          Py_ssize_t stride, Py_ssize_t n, const double* h,
                          long long step) noexcept nogil:
    """One update of ``n`` parameters from ``p``; the optimizer's state buffers are the
    rows of ``state`` (row stride ``stride``), offset like ``p``. ``h`` holds:
    SGD (lr, momentum, weight_decay, nesterov); Adam (lr, beta1, beta2, eps,
    weight_decay, decoupled); RMSprop (lr, alpha, eps, weight_decay, momentum,
    centered); Adagrad (lr, lr_decay, weight_decay, eps)."""
    cdef floating* row1 = state + stride
    cdef floating* row2 = state + 2 * stride
    if kind == OPT_SGD:
        _sgd_update(p, g, state, n, <floating>h[0], <floating>h[1], <floating>h[2], h[3] != 0)
    elif kind == OPT_ADAM:
        _adam_update(p, g, state, row1, n, h[0], h[1], h[2], h[3], h[4], h[5] != 0, step)
    elif kind == OPT_RMSPROP:
        if floating is float:
            fbp_rmsprop_f32(p, g, state, row1 if h[4] != 0 else NULL,
                            (row2 if h[4] != 0 else row1) if h[5] != 0 else NULL,
                            n, h[0], h[1], h[2], h[3], h[4])
        else:
            fbp_rmsprop_f64(p, g, state, row1 if h[4] != 0 else NULL,
                            (row2 if h[4] != 0 else row1) if h[5] != 0 else NULL,
                            n, h[0], h[1], h[2], h[3], h[4])
    else:
        if floating is float:
            fbp_adagrad_f32(p, g, state, n, h[0] / (1 + (step - 1) * h[1]), h[2], h[3])
        else:
            fbp_adagrad_f64(p, g, state, n, h[0] / (1 + (step - 1) * h[1]), h[2], h[3])


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


cdef inline bint _overlap(const intp* segments, Py_ssize_t s, Py_ssize_t lo, Py_ssize_t hi,
                          Py_ssize_t* a, Py_ssize_t* b) noexcept nogil:
    """Intersect trainable segment ``s`` with [lo, hi) into [a, b); whether non-empty."""
    a[0] = segments[2 * s] if segments[2 * s] > lo else lo
    b[0] = segments[2 * s + 1] if segments[2 * s + 1] < hi else hi
    return b[0] > a[0]


# ---------------------------------------------------------------------------
# Dropout: masks from a counter-based hash of (seed, step, layer, row, column), so
# that forward and backward agree without storing a mask, and the mask does not
# depend on how rows are split over threads.
# ---------------------------------------------------------------------------

cdef struct Dropout:
    const double* rate          # n_layers + 1: the input's, then each layer output's
    unsigned long long seed
    long long step              # the optimizer step being taken (a new mask each step)


cdef inline unsigned long long _mix(unsigned long long z) noexcept nogil:
    # splitmix64's finalizer: every input bit affects every output bit.
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL
    return z ^ (z >> 31)


cdef inline unsigned long long _drop_key(const Dropout* drop, Py_ssize_t site) noexcept nogil:
    return _mix(drop.seed ^ _mix((<unsigned long long>drop.step << 8) ^ <unsigned long long>site))


cdef inline unsigned long long _threshold(double rate) noexcept nogil:
    # Drop where the hash is below rate * 2^64.
    return <unsigned long long>(rate * 18446744073709551616.0)


cdef void _dropout_forward(floating* a, Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row0,
                           const Dropout* drop, Py_ssize_t site) noexcept nogil:
    """Inverted dropout in place on rows ``row0 <= i < row0 + rows`` of the batch:
    each entry is zeroed with probability rate, else scaled by 1 / (1 - rate)."""
    cdef double rate = drop.rate[site]
    cdef unsigned long long key = _drop_key(drop, site), threshold = _threshold(rate), row_key
    cdef floating scale = 1 / (1 - rate)
    cdef Py_ssize_t i, j
    cdef floating* row
    for i in range(rows):
        row_key = _mix(key ^ <unsigned long long>(row0 + i))
        row = a + i * cols
        for j in range(cols):
            row[j] = 0 if _mix(row_key + <unsigned long long>j * 0x9e3779b97f4a7c15ULL) < threshold \
                else row[j] * scale


cdef void _dropout_act_backward(const floating* a, const floating* z, floating* d,
                                Py_ssize_t rows, Py_ssize_t cols, Py_ssize_t row0,
                                const Dropout* drop, Py_ssize_t site, int act,
                                floating param) noexcept nogil:
    """``d = d * mask / (1 - rate) * f'(z)`` for a layer whose output ``a`` went through
    dropout: the derivative is taken at the output before dropout, a * (1 - rate)
    where kept (softmax is not allowed before dropout)."""
    cdef double rate = drop.rate[site]
    cdef unsigned long long key = _drop_key(drop, site), threshold = _threshold(rate), row_key
    cdef floating scale = 1 / (1 - rate), keep = 1 - rate
    cdef Py_ssize_t i, j, k
    for i in range(rows):
        row_key = _mix(key ^ <unsigned long long>(row0 + i))
        for j in range(cols):
            k = i * cols + j
            if _mix(row_key + <unsigned long long>j * 0x9e3779b97f4a7c15ULL) < threshold:
                d[k] = 0
            else:
                d[k] = d[k] * scale * _derivative(act, a[k] * keep,
                                                  z[k] if z != NULL else 0, param)


# ---------------------------------------------------------------------------
# Forward and backward through the whole network.
# ---------------------------------------------------------------------------

cdef inline floating* _layer_output(floating* work, const intp* layout, Py_ssize_t n_layers,
                                    Py_ssize_t l) noexcept nogil:
    """What layer l passes on: its residual sum where it has one, else its output."""
    cdef intp offset = layout[LAY_ACT0 + 3 * n_layers + l]
    return work + (offset if offset >= 0 else layout[LAY_ACT0 + l])


cdef void _forward(const floating* params, floating* work, const intp* spec,
                   const double* act_param, const intp* layout, Py_ssize_t n_layers,
                   const floating* x, Py_ssize_t row0, Py_ssize_t rows,
                   const Dropout* drop) noexcept nogil:
    """Forward pass of rows ``row0 <= i < row0 + rows`` of the batch, whose first row
    is at ``x``; each layer's output lands in those rows of its buffer (a residual
    layer's sum with its skip source in its sum buffer). ``drop`` (NULL in inference)
    applies dropout to the layers' outputs; the input's dropout is the caller's, on
    its copy of the batch."""
    cdef Py_ssize_t l, i, n_in, n_out, src
    cdef const intp* s
    cdef floating* out
    cdef floating* total
    cdef const floating* skip
    cdef const floating* x0 = x
    for l in range(n_layers):
        s = spec + l * SPEC_WIDTH
        n_in = s[SPEC_N_IN]
        n_out = s[SPEC_N_OUT]
        out = work + layout[LAY_ACT0 + l] + row0 * n_out
        _gemm(False, False, <int>rows, <int>n_out, <int>n_in, <floating>1,
              x, <int>n_in, params + s[SPEC_W_OFF], <int>n_out, <floating>0, out, <int>n_out)
        _bias_act(out, params + s[SPEC_B_OFF], rows, n_out, <int>s[SPEC_ACT],
                  <floating>act_param[l], _kept_z(work, layout, n_layers, l, row0 * n_out))
        src = s[SPEC_SKIP]
        if src != NO_SKIP:
            skip = x0 if src == SKIP_INPUT else _layer_output(work, layout, n_layers, src) + row0 * n_out
            total = _layer_output(work, layout, n_layers, l) + row0 * n_out
            for i in range(rows * n_out):
                total[i] = out[i] + skip[i]
            out = total
        if drop != NULL and drop.rate[l + 1] > 0:
            _dropout_forward(out, rows, n_out, row0, drop, l + 1)
        x = out


cdef inline floating* _output(floating* work, const intp* layout, Py_ssize_t n_layers) noexcept nogil:
    return _layer_output(work, layout, n_layers, n_layers - 1)


cdef inline floating* _delta(floating* work, const intp* layout, Py_ssize_t n_layers,
                             Py_ssize_t l) noexcept nogil:
    return work + layout[LAY_ACT0 + n_layers + l]


cdef inline floating* _kept_z(floating* work, const intp* layout, Py_ssize_t n_layers,
                              Py_ssize_t l, Py_ssize_t at) noexcept nogil:
    """Layer l's pre-activation buffer (at entry ``at``), kept for activations whose
    derivative needs it (GELU) in training; NULL where there is none (-1)."""
    cdef intp offset = layout[LAY_ACT0 + 2 * n_layers + l]
    return work + offset + at if offset >= 0 else NULL


cdef void _deltas(const floating* params, floating* work, const intp* spec,
                  const double* act_param, const intp* layout, Py_ssize_t n_layers,
                  Py_ssize_t row0, Py_ssize_t rows, const Dropout* drop,
                  floating* input_skip) noexcept nogil:
    """Backward pass of the deltas for rows ``row0 <= i < row0 + rows``.

    On entry the last layer's delta buffer holds dL/d(output) (from the loss). Going
    down, each layer's buffer holds dL/d(what the layer passes on); a residual layer
    copies it to its skip source's buffer (``input_skip`` for the network input, when
    not NULL), then every layer turns it into dL/dz through its activation (and the
    dropout after it), and passes ``delta_l @ W_l^T`` down, added to a skip copy
    already there. The first layer's input gradient is skipped, and so are the deltas
    below the lowest trainable layer (frozen layers need none).
    """
    cdef Py_ssize_t l, j, n_in, n_out, src, lowest = 0
    cdef const intp* s
    cdef floating* dl
    cdef floating beta
    while lowest < n_layers and not spec[lowest * SPEC_WIDTH + SPEC_TRAINABLE]:
        lowest += 1
    for l in range(n_layers - 1, lowest - 1, -1):
        s = spec + l * SPEC_WIDTH
        n_in = s[SPEC_N_IN]
        n_out = s[SPEC_N_OUT]
        dl = _delta(work, layout, n_layers, l) + row0 * n_out
        src = s[SPEC_SKIP]
        if src >= lowest:
            memcpy(_delta(work, layout, n_layers, src) + row0 * n_out, dl,
                   rows * n_out * sizeof(floating))
        elif src == SKIP_INPUT and input_skip != NULL:
            memcpy(input_skip + row0 * n_out, dl, rows * n_out * sizeof(floating))
        if drop != NULL and drop.rate[l + 1] > 0:
            _dropout_act_backward(work + layout[LAY_ACT0 + l] + row0 * n_out,
                                  _kept_z(work, layout, n_layers, l, row0 * n_out), dl, rows,
                                  n_out, row0, drop, l + 1, <int>s[SPEC_ACT],
                                  <floating>act_param[l])
        else:
            _act_backward(work + layout[LAY_ACT0 + l] + row0 * n_out,
                          _kept_z(work, layout, n_layers, l, row0 * n_out), dl, rows, n_out,
                          <int>s[SPEC_ACT], <floating>act_param[l])
        if l == lowest:
            break
        beta = 0
        for j in range(l, n_layers):  # does a skip copy already wait in delta_{l-1}?
            if spec[j * SPEC_WIDTH + SPEC_SKIP] == l - 1:
                beta = 1
        _gemm(False, True, <int>rows, <int>n_in, <int>n_out, <floating>1, dl, <int>n_out,
              params + s[SPEC_W_OFF], <int>n_out, beta,
              _delta(work, layout, n_layers, l - 1) + row0 * n_in, <int>n_in)


cdef double _gradients(const floating* params, floating* grads, floating* work,
                       const intp* spec, const intp* layout, const double* reg,
                       Py_ssize_t n_layers, const floating* x, Py_ssize_t rows,
                       int part, int n_parts) noexcept nogil:
    """Weight and bias gradients over all ``rows`` rows of the batch, for part
    ``part`` of ``n_parts`` of each trainable layer's output columns:
    ``grad_weight[:, cols] = a_prev^T @ delta[:, cols]``, ``grad_bias[cols] =
    column sums of delta[:, cols]``, plus the gradients of the layer's L1 and L2
    penalties (``reg``: l1 and l2 of the weight, l1 and l2 of the bias, per layer).
    Parts write disjoint entries. Returns this part's share of the penalty."""
    cdef Py_ssize_t l, n_in, n_out, c0, c1
    cdef const intp* s
    cdef const floating* a_prev
    cdef const floating* delta
    cdef double penalty = 0
    for l in range(n_layers):
        s = spec + l * SPEC_WIDTH
        n_in = s[SPEC_N_IN]
        n_out = s[SPEC_N_OUT]
        c0 = n_out * part // n_parts
        c1 = n_out * (part + 1) // n_parts
        if c1 == c0 or not s[SPEC_TRAINABLE]:
            continue
        a_prev = x if l == 0 else _layer_output(work, layout, n_layers, l - 1)
        delta = _delta(work, layout, n_layers, l) + c0
        _gemm(True, False, <int>n_in, <int>(c1 - c0), <int>rows, <floating>1,
              a_prev, <int>n_in, delta, <int>n_out, <floating>0,
              grads + s[SPEC_W_OFF] + c0, <int>n_out)
        _col_sums(delta, rows, c1 - c0, n_out, grads + s[SPEC_B_OFF] + c0)
        if reg[4 * l] != 0 or reg[4 * l + 1] != 0:
            penalty += _penalize(params + s[SPEC_W_OFF] + c0, grads + s[SPEC_W_OFF] + c0,
                                 n_in, c1 - c0, n_out, reg[4 * l], reg[4 * l + 1])
        if reg[4 * l + 2] != 0 or reg[4 * l + 3] != 0:
            penalty += _penalize(params + s[SPEC_B_OFF] + c0, grads + s[SPEC_B_OFF] + c0,
                                 1, c1 - c0, n_out, reg[4 * l + 2], reg[4 * l + 3])
    return penalty


cdef double _penalize(const floating* w, floating* g, Py_ssize_t rows, Py_ssize_t cols,
                      Py_ssize_t ld, double l1, double l2) noexcept nogil:
    """Add the gradient of ``l1 * sum|w| + l2 * sum(w^2)`` over a (rows x cols) block
    (row stride ``ld``) to ``g``; return the penalty."""
    cdef Py_ssize_t i, j
    cdef floating v
    cdef floating a1 = l1, a2 = 2 * l2
    cdef double absolute = 0, square = 0
    for i in range(rows):
        for j in range(cols):
            v = w[i * ld + j]
            absolute += fabs(v)
            square += v * v
            g[i * ld + j] += a1 * ((v > 0) - (v < 0)) + a2 * v
    return l1 * absolute + l2 * square


cdef void _train_part(int part, int n_parts,
                      floating* params, floating* grads, floating* work, intp* label_work,
                      const floating* X, Py_ssize_t n, Py_ssize_t d,
                      const floating* targets, const intp* labels, const intp* order,
                      Py_ssize_t batch_size, Py_ssize_t first_batch, Py_ssize_t stop_batch,
                      const intp* spec, const double* act_param, const intp* layout,
                      Py_ssize_t n_layers, int loss_kind, double loss_param,
                      const floating* sample_weight, floating* weight_work,
                      int opt_kind, const double* hyper,
                      floating* state, Py_ssize_t n_params, const intp* segments,
                      Py_ssize_t n_segments, const double* reg, const double* dropout,
                      unsigned long long seed, double* batch_stats,
                      intp* batch_correct, double* part_loss, intp* part_correct,
                      double* part_norm, double* part_penalty,
                      long long* step, int* status, Py_ssize_t* done) noexcept nogil:
    """The training loop as run by one of ``n_parts`` threads (all of it when 1).

    Each thread takes a share of each batch's rows through gather, forward, loss and
    the deltas, then a share of each layer's columns for the gradients, then a share
    of the flat buffer for gradient clipping and the optimizer update (within the
    trainable ``segments`` of it), with a barrier after each phase. Every thread sums
    the per-thread losses (and squared gradient norms) itself, so all agree.
    """
    cdef Py_ssize_t k = spec[(n_layers - 1) * SPEC_WIDTH + SPEC_N_OUT]
    cdef Py_ssize_t b, i, t, start, rows, r0, r1, src, p0, p1
    cdef bint use_labels = loss_kind == LOSS_CE_LABELS
    cdef floating* xb = work + layout[LAY_XB]
    cdef floating* yb = work + layout[LAY_YB]
    cdef const floating* xin
    cdef const floating* tin
    cdef const intp* lin
    cdef const floating* win
    cdef double value, scale, norm, total_weight
    cdef Py_ssize_t seg, a, z
    cdef double clipnorm = hyper[HYPER_CLIPNORM], clipvalue = hyper[HYPER_CLIPVALUE]
    cdef intp correct
    cdef long long local_step = step[0]
    cdef Dropout drop
    cdef const Dropout* dropping = NULL
    cdef bint input_dropout = dropout != NULL and dropout[0] > 0
    cdef Py_ssize_t local_done = 0
    cdef int local_status = ST_OK
    if dropout != NULL:
        drop.rate = dropout
        drop.seed = seed
        dropping = &drop
    p0 = n_params * part // n_parts
    p1 = n_params * (part + 1) // n_parts
    for b in range(first_batch, stop_batch):
        start = b * batch_size
        rows = batch_size if start + batch_size <= n else n - start
        r0 = rows * part // n_parts
        r1 = rows * (part + 1) // n_parts
        drop.step = local_step + 1
        total_weight = rows
        if order != NULL:
            for i in range(r0, r1):
                src = order[start + i]
                memcpy(xb + i * d, X + src * d, d * sizeof(floating))
                if use_labels:
                    label_work[i] = labels[src]
                else:
                    memcpy(yb + i * k, targets + src * k, k * sizeof(floating))
                if sample_weight != NULL:
                    weight_work[i] = sample_weight[src]
            xin, tin, lin = xb, yb, label_work
            win = weight_work if sample_weight != NULL else NULL
            if sample_weight != NULL:  # every thread needs the whole batch's weight
                total_weight = 0
                for i in range(rows):
                    total_weight += sample_weight[order[start + i]]
        else:
            xin = X + start * d
            tin = NULL if use_labels else targets + start * k
            lin = labels + start if use_labels else NULL
            win = sample_weight + start if sample_weight != NULL else NULL
            if sample_weight != NULL:
                total_weight = 0
                for i in range(rows):
                    total_weight += sample_weight[start + i]
            if input_dropout:  # dropout needs a copy of the input to change
                memcpy(xb + r0 * d, xin + r0 * d, (r1 - r0) * d * sizeof(floating))
                xin = xb
        if input_dropout:
            _dropout_forward(xb + r0 * d, r1 - r0, d, r0, dropping, 0)
        scale = _loss_scale(loss_kind, total_weight, k)
        # Per part: the loss sum, then the sums of |residual| and residual^2.
        part_loss[3 * part] = part_loss[3 * part + 1] = part_loss[3 * part + 2] = 0
        part_correct[part] = 0
        if r1 > r0:
            _forward(params, work, spec, act_param, layout, n_layers, xin + r0 * d, r0, r1 - r0,
                     dropping)
            correct = 0
            part_loss[3 * part] = _loss(loss_kind, loss_param,
                                        _output(work, layout, n_layers) + r0 * k,
                                        NULL if use_labels else tin + r0 * k,
                                        lin + r0 if use_labels else NULL,
                                        win + r0 if win != NULL else NULL, r1 - r0, k,
                                        _delta(work, layout, n_layers, n_layers - 1) + r0 * k,
                                        <floating>scale, &correct, &part_loss[3 * part + 1])
            part_correct[part] = correct
            _deltas(params, work, spec, act_param, layout, n_layers, r0, r1 - r0, dropping, NULL)
        if n_parts > 1:
            fbp_barrier()
        value = 0
        correct = 0
        for t in range(n_parts):
            value += part_loss[3 * t]
            correct += part_correct[t]
        if not isfinite(value):
            if part == 0:
                batch_stats[3 * b] = value
            local_status = ST_NONFINITE_LOSS
            break
        if part == 0:
            batch_stats[3 * b] = value * scale
            batch_stats[3 * b + 1] = batch_stats[3 * b + 2] = 0
            for t in range(n_parts):
                batch_stats[3 * b + 1] += part_loss[3 * t + 1]
                batch_stats[3 * b + 2] += part_loss[3 * t + 2]
            batch_correct[b] = correct
        part_penalty[part] = _gradients(params, grads, work, spec, layout, reg, n_layers, xin,
                                        rows, part, n_parts)
        if n_parts > 1:
            fbp_barrier()
        if part == 0:
            for t in range(n_parts):
                batch_stats[3 * b] += part_penalty[t]
        if clipnorm > 0:  # the global norm over all trainable gradients
            part_norm[part] = 0
            for seg in range(n_segments):
                if _overlap(segments, seg, p0, p1, &a, &z):
                    part_norm[part] += _sum_squares(grads + a, z - a)
            if n_parts > 1:
                fbp_barrier()
            norm = 0
            for t in range(n_parts):
                norm += part_norm[t]
            norm = clipnorm / (sqrt(norm) + 1e-6)
            if norm < 1:
                for seg in range(n_segments):
                    if _overlap(segments, seg, p0, p1, &a, &z):
                        _scale(grads + a, z - a, <floating>norm)
        local_step += 1
        for seg in range(n_segments):
            if _overlap(segments, seg, p0, p1, &a, &z):
                if clipvalue > 0:
                    _clamp(grads + a, z - a, <floating>clipvalue)
                _optimizer_step(opt_kind, params + a, grads + a, state + a, n_params, z - a,
                                hyper, local_step)
        if n_parts > 1:
            fbp_barrier()
        local_done += 1
    if part == 0:
        step[0] = local_step
        status[0] = local_status
        done[0] = local_done


# ---------------------------------------------------------------------------
# Python boundary: whole-network entry points.
# ---------------------------------------------------------------------------

def train_run(floating[::1] params, floating[::1] grads, floating[::1] work,
              intp[::1] label_work,
              const floating[:, ::1] X, const floating[:, ::1] targets, const intp[::1] labels,
              const intp[::1] order, Py_ssize_t batch_size,
              Py_ssize_t first_batch, Py_ssize_t stop_batch,
              const intp[:, ::1] spec, const double[::1] act_param, const intp[::1] layout,
              const double[:, ::1] reg, const double[::1] dropout, unsigned long long seed,
              int loss_kind, double loss_param, const floating[::1] sample_weight,
              floating[::1] weight_work, int opt_kind, const double[::1] hyper,
              floating[:, ::1] state, const intp[:, ::1] segments, long long step,
              double[:, ::1] batch_stats, intp[::1] batch_correct, int n_threads=1):
    """Train on minibatches ``first_batch <= b < stop_batch`` of one epoch.

    Rows ``order[b * batch_size : (b + 1) * batch_size]`` of ``X`` form batch ``b``
    (``order`` empty: rows in storage order, read in place without a copy). Each
    step gathers the batch, runs forward, loss, backward and the optimizer update.
    ``batch_stats[b]`` receives the batch's mean loss (weighted by ``sample_weight``
    when not empty: sum(w_i loss_i) / sum(w_i)) and, for regression losses, its sums
    of |prediction - target| and (prediction - target)^2; ``batch_correct[b]`` its
    count of correct predictions (classification). Stops early, before updating, at a batch
    whose loss is not finite.

    The optimizer (``opt_kind``, hyperparameters ``hyper``, state buffers the rows of
    ``state``) updates the flat ranges ``[start, stop)`` listed in ``segments`` (the
    trainable layers) and nothing else.

    ``n_threads > 1`` splits every step over that many OpenMP threads (BLAS should
    then run single-threaded); the result depends on the thread count only through
    the order of floating-point sums inside BLAS.

    Returns ``(status, batches_done, step)`` where ``step`` is the optimizer's step
    count afterwards.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], k = spec[spec.shape[0] - 1, SPEC_N_OUT]
    cdef Py_ssize_t n_layers = spec.shape[0], n_params = params.shape[0]
    cdef bint shuffled = order.shape[0] > 0
    cdef bint use_labels = loss_kind == LOSS_CE_LABELS
    cdef double part_loss[3 * MAX_PARTS]
    cdef double part_norm[MAX_PARTS]
    cdef double part_penalty[MAX_PARTS]
    cdef intp part_correct[MAX_PARTS]
    cdef floating* state_ptr = &state[0, 0] if state.shape[0] and state.shape[1] else NULL
    cdef const intp* segment_ptr = &segments[0, 0] if segments.shape[0] else NULL
    cdef int status = ST_OK
    cdef Py_ssize_t done = 0
    cdef int team

    if grads.shape[0] != params.shape[0]:
        raise ValueError("grads and params differ in size")
    # The batch buffers are used when rows are shuffled or the input has dropout.
    _check_network(params, work, spec, act_param, layout, d, batch_size, True,
                   shuffled or (dropout.shape[0] > 0 and dropout[0] > 0))
    if first_batch < 0 or stop_batch < first_batch:
        raise ValueError("bad batch range %d..%d" % (first_batch, stop_batch))
    if stop_batch > first_batch and (stop_batch - 1) * batch_size >= n:
        raise ValueError("batch %d starts past the end of X" % (stop_batch - 1))
    if shuffled and use_labels and label_work.shape[0] < batch_size:
        raise ValueError("label workspace too small")
    if (use_labels and labels.shape[0] != n) or \
            (not use_labels and (targets.shape[0] != n or targets.shape[1] != k)):
        raise ValueError("targets do not match X")
    if use_labels:
        _check_labels(labels, k)
    if shuffled and order.shape[0] != n:
        raise ValueError("order must have one entry per row")
    if shuffled:
        _check_order(order, n)
    if batch_stats.shape[0] < stop_batch or batch_stats.shape[1] != 3 or \
            batch_correct.shape[0] < stop_batch:
        raise ValueError("batch_stats (n_batches, 3) and batch_correct are too short")
    _check_optimizer(opt_kind, hyper, state, n_params)
    _check_segments(segments, n_params)
    _check_reg(reg, n_layers)
    _check_dropout(dropout, n_layers)
    if sample_weight.shape[0] and (sample_weight.shape[0] != n or
                                   (shuffled and weight_work.shape[0] < batch_size)):
        raise ValueError("sample_weight must have one entry per row of X")
    if n_threads < 1 or n_threads > MAX_PARTS:
        raise ValueError("n_threads must lie in [1, %d]" % MAX_PARTS)
    if stop_batch == first_batch:
        return status, done, step

    # One thread (or a build without OpenMP) runs as a team of one.
    with nogil, parallel(num_threads=n_threads):
        # The team may be smaller than asked (nested or limited OpenMP): split over
        # the threads that actually run.
        _train_part(
            fbp_thread_id(), fbp_team_size(), &params[0], &grads[0], &work[0],
            &label_work[0] if label_work.shape[0] else NULL, &X[0, 0], n, d,
            &targets[0, 0] if not use_labels else NULL,
            &labels[0] if use_labels else NULL, &order[0] if shuffled else NULL,
            batch_size, first_batch, stop_batch, &spec[0, 0], &act_param[0], &layout[0],
            n_layers, loss_kind, loss_param,
            &sample_weight[0] if sample_weight.shape[0] else NULL,
            &weight_work[0] if weight_work.shape[0] else NULL,
            opt_kind, &hyper[0], state_ptr, n_params,
            segment_ptr, segments.shape[0], &reg[0, 0],
            &dropout[0] if dropout.shape[0] else NULL, seed, &batch_stats[0, 0], &batch_correct[0],
            part_loss, part_correct, part_norm, part_penalty, &step, &status, &done)
    return status, done, step


def loss_grad(floating[::1] params, floating[::1] grads, floating[::1] work,
              const floating[:, ::1] X, const floating[:, ::1] targets, const intp[::1] labels,
              const intp[:, ::1] spec, const double[::1] act_param, const intp[::1] layout,
              const double[:, ::1] reg, int loss_kind, double loss_param=0,
              const double[::1] dropout=None, unsigned long long seed=0, long long step=0):
    """Mean loss over all rows of ``X`` plus the layers' penalties, and its gradient
    into ``grads``; no update. With ``dropout`` rates (as train_run takes them), the
    dropout masks of training step ``step`` apply (the input's included), so that
    repeated calls see the same masks.

    The workspace must hold ``X.shape[0]`` rows.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], k = spec[spec.shape[0] - 1, SPEC_N_OUT]
    cdef Py_ssize_t n_layers = spec.shape[0]
    cdef floating* wp = &work[0]
    cdef double value, penalty
    cdef intp correct = 0
    cdef const floating* tin = &targets[0, 0] if loss_kind != LOSS_CE_LABELS else NULL
    cdef const intp* lin = &labels[0] if loss_kind == LOSS_CE_LABELS else NULL
    cdef bint use_labels = loss_kind == LOSS_CE_LABELS
    if grads.shape[0] != params.shape[0]:
        raise ValueError("grads and params differ in size")
    _check_network(params, work, spec, act_param, layout, d, n, True,
                   dropout is not None and dropout.shape[0] > 0 and dropout[0] > 0)
    if (loss_kind == LOSS_CE_LABELS and labels.shape[0] != n) or \
            (loss_kind != LOSS_CE_LABELS and (targets.shape[0] != n or targets.shape[1] != k)):
        raise ValueError("targets do not match X")
    if use_labels:
        _check_labels(labels, k)
    _check_reg(reg, n_layers)
    cdef Dropout drop
    cdef const Dropout* dropping = NULL
    cdef const floating* xin = &X[0, 0]
    if dropout is not None and dropout.shape[0]:
        _check_dropout(dropout, n_layers)
        drop.rate = &dropout[0]
        drop.seed = seed
        drop.step = step
        dropping = &drop
    with nogil:
        if dropping != NULL and dropout[0] > 0:
            memcpy(wp + layout[LAY_XB], xin, n * d * sizeof(floating))
            _dropout_forward(wp + layout[LAY_XB], n, d, 0, dropping, 0)
            xin = wp + layout[LAY_XB]
        _forward(&params[0], wp, &spec[0, 0], &act_param[0], &layout[0], n_layers,
                 xin, 0, n, dropping)
        value = _loss(loss_kind, loss_param, _output(wp, &layout[0], n_layers), tin, lin,
                      <floating*>NULL, n, k, _delta(wp, &layout[0], n_layers, n_layers - 1),
                      _loss_scale(loss_kind, n, k), &correct)
        _deltas(&params[0], wp, &spec[0, 0], &act_param[0], &layout[0], n_layers, 0, n,
                dropping, NULL)
        penalty = _gradients(&params[0], &grads[0], wp, &spec[0, 0], &layout[0], &reg[0, 0],
                             n_layers, xin, n, 0, 1)
    return value * _loss_scale(loss_kind, n, k) + penalty


def input_gradient_run(const floating[::1] params, floating[::1] work,
                       const floating[:, ::1] X, const floating[:, ::1] targets,
                       const intp[::1] labels, floating[:, ::1] out,
                       const intp[:, ::1] spec, const double[::1] act_param,
                       const intp[::1] layout, int loss_kind, double loss_param,
                       Py_ssize_t output, int output_act):
    """Gradient with respect to the inputs, by the same backward pass, into ``out``
    (shape of ``X``): row i is d loss_i / d x_i, sample i's own loss (``output`` < 0),
    or d f_i / d x_i for output column ``output`` as predict gives it (after the
    output activation ``output_act``). The workspace must hold ``X.shape[0]`` rows
    with deltas; every layer counts as trainable here."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], n_layers = spec.shape[0]
    cdef Py_ssize_t k = spec[n_layers - 1, SPEC_N_OUT], i, j
    cdef floating* wp = &work[0]
    cdef floating* res
    cdef floating* seed
    cdef floating p
    cdef intp correct = 0
    cdef bint use_labels = loss_kind == LOSS_CE_LABELS
    _check_network(params, work, spec, act_param, layout, d, n, True, False)
    if out.shape[0] != n or out.shape[1] != d:
        raise ValueError("out must have the shape of X")
    if output >= k:
        raise ValueError("output %d is not below the %d outputs" % (output, k))
    if output < 0:
        if (use_labels and labels.shape[0] != n) or \
                (not use_labels and (targets.shape[0] != n or targets.shape[1] != k)):
            raise ValueError("targets do not match X")
        if use_labels:
            _check_labels(labels, k)
    cdef bint input_skip = False
    for i in range(n_layers):
        if not spec[i, SPEC_TRAINABLE]:
            raise ValueError("input_gradient_run needs every layer marked trainable")
        input_skip |= spec[i, SPEC_SKIP] == SKIP_INPUT
    with nogil:
        _forward(&params[0], wp, &spec[0, 0], &act_param[0], &layout[0], n_layers, &X[0, 0],
                 0, n, NULL)
        res = _output(wp, &layout[0], n_layers)
        seed = _delta(wp, &layout[0], n_layers, n_layers - 1)
        if output < 0:
            # scale 1 per row (times k for the elementwise losses): each row's own loss.
            _loss(loss_kind, loss_param, res, NULL if use_labels else &targets[0, 0],
                  &labels[0] if use_labels else NULL, <floating*>NULL, n, k, seed,
                  <floating>(1 if use_labels or loss_kind == LOSS_CE_SOFT else 1.0 / k),
                  &correct)
        else:
            memset(seed, 0, n * k * sizeof(floating))
            if output_act == ACT_SOFTMAX:
                # d p_j / d z = p_j (e_j - p)
                _softmax_rows(res, n, k)
                for i in range(n):
                    p = res[i * k + output]
                    for j in range(k):
                        seed[i * k + j] = -p * res[i * k + j]
                    seed[i * k + output] += p
            else:
                for i in range(n):
                    seed[i * k + output] = 1
                if output_act != ACT_IDENTITY:  # sigmoid, exponential: elementwise
                    _bias_act(res, <floating*>NULL, n, k, output_act, <floating>0, <floating*>NULL)
                    _act_backward(res, NULL, seed, n, k, output_act, <floating>0)
        # A residual connection from the input leaves its share in out first.
        _deltas(&params[0], wp, &spec[0, 0], &act_param[0], &layout[0], n_layers, 0, n, NULL,
                &out[0, 0])
        _gemm(False, True, <int>n, <int>d, <int>spec[0, SPEC_N_OUT], <floating>1,
              _delta(wp, &layout[0], n_layers, 0), <int>spec[0, SPEC_N_OUT],
              &params[0] + spec[0, SPEC_W_OFF], <int>spec[0, SPEC_N_OUT],
              <floating>(1 if input_skip else 0), &out[0, 0], <int>d)


def predict_run(const floating[::1] params, floating[::1] work, const floating[:, ::1] X,
                floating[:, ::1] out, Py_ssize_t capacity,
                const intp[:, ::1] spec, const double[::1] act_param, const intp[::1] layout,
                int output_act):
    """Forward pass over all rows of ``X`` in chunks of ``capacity`` rows into ``out``;
    ``output_act`` is applied to the last layer's output (softmax or sigmoid for
    fused losses, identity otherwise)."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], k = spec[spec.shape[0] - 1, SPEC_N_OUT]
    cdef Py_ssize_t start, rows
    cdef floating* res
    _check_network(params, work, spec, act_param, layout, d, min(capacity, n), False, False)
    if capacity < 1:
        raise ValueError("capacity must be positive")
    if out.shape[0] != n or out.shape[1] != k:
        raise ValueError("out has the wrong shape")
    with nogil:
        start = 0
        while start < n:
            rows = capacity if start + capacity <= n else n - start
            _forward(&params[0], &work[0], &spec[0, 0], &act_param[0], &layout[0],
                     spec.shape[0], &X[start, 0], 0, rows, NULL)
            res = _output(&work[0], &layout[0], spec.shape[0])
            _bias_act(res, <floating*>NULL, rows, k, output_act, <floating>0, <floating*>NULL)
            memcpy(&out[start, 0], res, rows * k * sizeof(floating))
            start += rows


def evaluate_run(const floating[::1] params, floating[::1] work, const floating[:, ::1] X,
                 const floating[:, ::1] targets, const intp[::1] labels, Py_ssize_t capacity,
                 const intp[:, ::1] spec, const double[::1] act_param, const intp[::1] layout,
                 int loss_kind, double loss_param=0):
    """Mean loss and count of correct predictions over all rows of ``X``."""
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], k = spec[spec.shape[0] - 1, SPEC_N_OUT]
    cdef Py_ssize_t start, rows
    cdef floating* res
    cdef double total = 0
    cdef intp correct = 0
    cdef bint use_labels = loss_kind == LOSS_CE_LABELS
    _check_network(params, work, spec, act_param, layout, d, min(capacity, n), False, False)
    if capacity < 1:
        raise ValueError("capacity must be positive")
    if (use_labels and labels.shape[0] != n) or \
            (not use_labels and (targets.shape[0] != n or targets.shape[1] != k)):
        raise ValueError("targets do not match X")
    if use_labels:
        _check_labels(labels, k)
    with nogil:
        start = 0
        while start < n:
            rows = capacity if start + capacity <= n else n - start
            _forward(&params[0], &work[0], &spec[0, 0], &act_param[0], &layout[0],
                     spec.shape[0], &X[start, 0], 0, rows, NULL)
            res = _output(&work[0], &layout[0], spec.shape[0])
            total += _loss(loss_kind, loss_param, res,
                           NULL if use_labels else &targets[start, 0],
                           &labels[start] if use_labels else NULL, <floating*>NULL,
                           rows, k, <floating*>NULL, <floating>1, &correct)
            start += rows
    return total * _loss_scale(loss_kind, n, k), correct


cdef _check_optimizer(int kind, const double[::1] hyper, const floating[:, ::1] state,
                      Py_ssize_t n_params):
    # The state rows each optimizer reads (see _optimizer_step).
    cdef Py_ssize_t rows
    if hyper.shape[0] != HYPER_SIZE:
        raise ValueError("hyper must have %d entries" % HYPER_SIZE)
    if kind == OPT_SGD:
        rows = 1 if hyper[1] != 0 else 0
    elif kind == OPT_ADAM:
        rows = 2
    elif kind == OPT_RMSPROP:
        rows = 1 + (hyper[4] != 0) + (hyper[5] != 0)
    elif kind == OPT_ADAGRAD:
        rows = 1
    else:
        raise ValueError("unknown optimizer code %d" % kind)
    if state.shape[0] < rows or (rows and state.shape[1] != n_params):
        raise ValueError("the optimizer needs %d state rows of %d entries" % (rows, n_params))


cdef _check_dropout(const double[::1] dropout, Py_ssize_t n_layers):
    # Empty: no dropout. Else one rate for the input, then one per layer output, the
    # last layer's 0 (its output goes to the loss).
    cdef Py_ssize_t i
    if dropout.shape[0] == 0:
        return
    if dropout.shape[0] != n_layers + 1:
        raise ValueError("dropout must have n_layers + 1 entries")
    for i in range(n_layers + 1):
        if not 0 <= dropout[i] < 1:
            raise ValueError("dropout rates must lie in [0, 1)")
    if dropout[n_layers] != 0:
        raise ValueError("the output layer cannot have dropout")


cdef _check_reg(const double[:, ::1] reg, Py_ssize_t n_layers):
    if reg.shape[0] != n_layers or reg.shape[1] != 4:
        raise ValueError("reg must have shape (n_layers, 4)")


cdef _check_segments(const intp[:, ::1] segments, Py_ssize_t n_params):
    cdef Py_ssize_t s
    if segments.shape[0] and segments.shape[1] != 2:
        raise ValueError("segments must have shape (n, 2)")
    for s in range(segments.shape[0]):
        if not 0 <= segments[s, 0] <= segments[s, 1] <= n_params:
            raise ValueError("segment %d is outside the parameter buffer" % s)


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


cdef _check_network(const floating[::1] params, const floating[::1] work, const intp[:, ::1] spec,
                    const double[::1] act_param, const intp[::1] layout, Py_ssize_t d,
                    Py_ssize_t rows, bint backward, bint gathered):
    # Cheap structural checks once per call, so that a bad table or a workspace too
    # small for ``rows`` rows raises instead of touching memory out of bounds. The
    # model builds these tables; users never do.
    cdef Py_ssize_t l, src, n_layers = spec.shape[0], widest = 0, size = work.shape[0]
    if n_layers < 1 or spec.shape[1] != SPEC_WIDTH:
        raise ValueError("spec must have shape (n_layers, %d)" % SPEC_WIDTH)
    if act_param.shape[0] != n_layers or layout.shape[0] != LAY_ACT0 + 4 * n_layers:
        raise ValueError("act_param or layout does not match spec")
    if spec[0, SPEC_N_IN] != d:
        raise ValueError("X has %d features, the network expects %d" % (d, spec[0, SPEC_N_IN]))
    if rows < 1:
        raise ValueError("at least one row is needed")
    for l in range(n_layers):
        if spec[l, SPEC_N_IN] < 1 or spec[l, SPEC_N_OUT] < 1:
            raise ValueError("layer %d has an empty dimension" % l)
        if l > 0 and spec[l, SPEC_N_IN] != spec[l - 1, SPEC_N_OUT]:
            raise ValueError("layer %d input size does not match layer %d" % (l, l - 1))
        if spec[l, SPEC_W_OFF] < 0 or spec[l, SPEC_B_OFF] < 0 \
                or spec[l, SPEC_W_OFF] + spec[l, SPEC_N_IN] * spec[l, SPEC_N_OUT] > params.shape[0] \
                or spec[l, SPEC_B_OFF] + spec[l, SPEC_N_OUT] > params.shape[0]:
            raise ValueError("layer %d lies outside the parameter buffer" % l)
        if layout[LAY_ACT0 + l] < 0 or layout[LAY_ACT0 + l] + rows * spec[l, SPEC_N_OUT] > size:
            raise ValueError("workspace too small for layer %d" % l)
        widest = max(widest, spec[l, SPEC_N_OUT])
    for l in range(n_layers):
        src = spec[l, SPEC_SKIP]
        if src != NO_SKIP:
            if not SKIP_INPUT <= src < l or \
                    spec[l, SPEC_N_OUT] != (d if src == SKIP_INPUT else spec[src, SPEC_N_OUT]):
                raise ValueError("layer %d has a bad skip connection" % l)
            if layout[LAY_ACT0 + 3 * n_layers + l] < 0 or \
                    layout[LAY_ACT0 + 3 * n_layers + l] + rows * spec[l, SPEC_N_OUT] > size:
                raise ValueError("residual workspace too small for layer %d" % l)
        if layout[LAY_ACT0 + 2 * n_layers + l] >= 0 and \
                layout[LAY_ACT0 + 2 * n_layers + l] + rows * spec[l, SPEC_N_OUT] > size:
            raise ValueError("pre-activation workspace too small for layer %d" % l)
        if backward and spec[l, SPEC_ACT] == ACT_GELU and layout[LAY_ACT0 + 2 * n_layers + l] < 0:
            raise ValueError("layer %d (GELU) needs a pre-activation buffer" % l)
    if backward:
        for l in range(n_layers):
            if layout[LAY_ACT0 + n_layers + l] < 0 or \
                    layout[LAY_ACT0 + n_layers + l] + rows * spec[l, SPEC_N_OUT] > size:
                raise ValueError("delta workspace too small for layer %d" % l)
    if gathered:
        if layout[LAY_XB] < 0 or layout[LAY_XB] + rows * d > size \
                or layout[LAY_YB] < 0 or layout[LAY_YB] + rows * spec[n_layers - 1, SPEC_N_OUT] > size:
            raise ValueError("batch workspace too small")


# ---------------------------------------------------------------------------
# Python boundary: single kernels (hand-written layer API and tests).
# ---------------------------------------------------------------------------

def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out,
           bint trans_a=False, bint trans_b=False, double alpha=1.0, double beta=0.0):
    """``out = alpha * op(a) @ op(b) + beta * out`` for C-contiguous arrays."""
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t kb = b.shape[1] if trans_b else b.shape[0]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    if k != kb or out.shape[0] != m or out.shape[1] != n:
        raise ValueError("matmul shapes do not match: (%d, %d) @ (%d, %d) -> (%d, %d)"
                         % (m, k, kb, n, out.shape[0], out.shape[1]))
    if m == 0 or n == 0:
        return
    cdef Py_ssize_t i, j
    if k == 0:
        # An empty inner dimension: op(a) @ op(b) is zero.
        for i in range(m):
            for j in range(n):
                out[i, j] = 0 if beta == 0 else <floating>beta * out[i, j]
        return
    with nogil:
        _gemm(trans_a, trans_b, <int>m, <int>n, <int>k, <floating>alpha,
              &a[0, 0], <int>a.shape[1], &b[0, 0], <int>b.shape[1],
              <floating>beta, &out[0, 0], <int>n)


def bias_act_forward(floating[:, ::1] z, const floating[::1] bias, int act, double slope=0.0):
    """In place ``z = f(z + bias)``; ``bias`` of length 0 means no bias."""
    if bias.shape[0] != 0 and bias.shape[0] != z.shape[1]:
        raise ValueError("bias has %d entries, z has %d columns" % (bias.shape[0], z.shape[1]))
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
    if act < ACT_IDENTITY or act > ACT_EXP:
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
               const intp[::1] labels, floating[:, ::1] delta, double param=1.0):
    """Mean loss of ``out`` against ``targets`` (or integer ``labels`` for
    cross-entropy with labels) and its gradient with respect to ``out`` in ``delta``.

    Returns ``(mean_loss, n_correct)``.
    """
    cdef Py_ssize_t rows = out.shape[0], cols = out.shape[1]
    cdef intp correct = 0
    cdef double value
    if delta.shape[0] != rows or delta.shape[1] != cols:
        raise ValueError("delta and out differ in shape")
    if kind == LOSS_CE_LABELS:
        if labels.shape[0] != rows:
            raise ValueError("labels and out differ in length")
        _check_labels(labels, cols)
    elif targets.shape[0] != rows or targets.shape[1] != cols:
        raise ValueError("targets and out differ in shape")
    if kind < LOSS_MSE or kind > LOSS_POISSON:
        raise ValueError("unknown loss code %d" % kind)
    if rows == 0 or cols == 0:
        raise ValueError("empty batch")
    with nogil:
        value = _loss(kind, param, &out[0, 0],
                      &targets[0, 0] if kind != LOSS_CE_LABELS else NULL,
                      &labels[0] if kind == LOSS_CE_LABELS else NULL, <floating*>NULL,
                      rows, cols, &delta[0, 0], _loss_scale(kind, rows, cols), &correct)
    return value * _loss_scale(kind, rows, cols), correct


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
    with nogil:
        _adam_update(&params[0], &grads[0], &exp_avg[0], &exp_avg_sq[0], n, lr, beta1,
                     beta2, eps, weight_decay, decoupled, step)


def optimizer_update(int kind, floating[::1] params, const floating[::1] grads,
                     floating[:, ::1] state, const double[::1] hyper, long long step):
    """One step of any optimizer in place (codes in OPTIMIZER_CODES, ``hyper`` as
    ``Optimizer.hyperparameters()`` gives it, state buffers the rows of ``state``).
    Gradient clipping is not applied here."""
    cdef Py_ssize_t n = params.shape[0]
    if grads.shape[0] != n:
        raise ValueError("params and grads differ in size")
    if step < 1:
        raise ValueError("step counts from 1")
    _check_optimizer(kind, hyper, state, n)
    if n == 0:
        return
    with nogil:
        _optimizer_step(kind, &params[0], &grads[0],
                        &state[0, 0] if state.shape[0] else NULL, n, n, &hyper[0], step)


# Codes as seen from Python (the Python modules mirror these; a test checks they agree).
ACTIVATION_CODES = {"identity": ACT_IDENTITY, "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH,
                    "relu": ACT_RELU, "leaky_relu": ACT_LEAKY_RELU, "softmax": ACT_SOFTMAX,
                    "elu": ACT_ELU, "gelu": ACT_GELU, "softplus": ACT_SOFTPLUS,
                    "exponential": ACT_EXP}
LOSS_CODES = {"mse": LOSS_MSE, "cross_entropy_labels": LOSS_CE_LABELS,
              "cross_entropy": LOSS_CE_SOFT, "binary_cross_entropy": LOSS_BCE, "mae": LOSS_MAE,
              "huber": LOSS_HUBER, "poisson": LOSS_POISSON}
OPTIMIZER_CODES = {"sgd": OPT_SGD, "adam": OPT_ADAM, "rmsprop": OPT_RMSPROP,
                   "adagrad": OPT_ADAGRAD}
HYPERPARAMETERS = HYPER_SIZE
