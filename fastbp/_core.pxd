# cython: language_level=3
"""The data model of fastbp's compiled core: every value that crosses from Python
into the kernels, declared once.

Python mirrors each struct as an aligned NumPy structured dtype (``fastbp/_codes.py``)
and passes arrays of them as typed memoryviews: Cython checks the field types and
their order at each call, and a test checks that the field names agree. The enums'
codes are listed once in Python too (``fastbp/_codes.py``); the compiled module checks
at import that they agree, and each ``*_COUNT`` closes its enum so that range checks
never go stale.
"""
cimport numpy as cnp

ctypedef cnp.intp_t intp


cdef enum Activation:
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
    ACT_COUNT = 10


cdef enum LossKind:
    LOSS_MSE = 0
    LOSS_CE_LABELS = 1          # softmax cross-entropy, integer class labels
    LOSS_CE_SOFT = 2            # softmax cross-entropy, probability targets
    LOSS_BCE = 3                # sigmoid binary cross-entropy
    LOSS_MAE = 4
    LOSS_HUBER = 5
    LOSS_POISSON = 6            # exponential output, log-rates
    LOSS_COUNT = 7


cdef enum OptimizerKind:
    OPT_SGD = 0
    OPT_ADAM = 1                # Adam and AdamW (decoupled)
    OPT_RMSPROP = 2
    OPT_ADAGRAD = 3
    OPT_COUNT = 4


cdef enum Skip:
    NO_SKIP = -2                # LayerPlan.skip: no residual connection
    SKIP_INPUT = -1             # the network input; else the index of a layer


cdef enum Status:
    ST_OK = 0
    ST_NONFINITE_LOSS = 1       # a minibatch's loss was NaN or infinite: no update


cdef enum:
    MAX_PARTS = 64              # most threads one training step is split over


cdef struct LayerPlan:
    # One Dense layer as the kernels run it (``fastbp.network`` fills it).
    intp n_in
    intp n_out
    intp activation             # Activation; identity where fused into the loss
    double act_param            # leaky_relu's negative slope, ELU's alpha
    intp weight_at              # offset of the weight (n_in x n_out, row-major) in the flat buffers
    intp bias_at                # offset of the bias (n_out)
    intp trainable              # 0: no gradient, no update; no delta below the lowest one
    intp skip                   # Skip: output = f(z) + output of that layer (or of the input)
    double dropout_after        # dropout rate applied to the layer's output in training
    double l1_weight            # penalties l1 * sum|w| + l2 * sum(w^2), in loss and gradient
    double l2_weight
    double l1_bias
    double l2_bias
    # Workspace offsets, in rows: for a workspace of capacity c rows, the buffer
    # starts at element c * offset and holds c rows of n_out; -1: none.
    intp out_at                 # f(z)
    intp sum_at                 # f(z) + skip source (residual layers)
    intp z_at                   # z kept for backward (GELU), training only
    intp delta_at               # dL/dz, training only


cdef struct NetPlan:
    # The whole network around its layers.
    intp n_inputs
    intp n_outputs
    intp output_activation      # applied by predict: the activation fused into the loss
    double input_dropout        # dropout rate of the network input in training
    cnp.uint64_t dropout_seed   # masks hash (seed, step, site, row, column)
    intp x_at                   # gathered (shuffled) input rows, training only
    intp y_at                   # gathered float targets, training only
    intp infer_width            # elements per row of capacity that inference needs
    intp train_width            # ... and training (a prefix: inference uses the same offsets)
    double loss_scale           # a row's loss is loss_scale * the sum over its outputs
    intp penalty_per_weight     # 1: penalties divided by the minibatch's total sample weight


cdef struct OptimizerConfig:
    # The update rule, by field name (``fastbp.optimizers`` fills it).
    intp kind                   # OptimizerKind
    double lr
    double momentum             # SGD, RMSprop
    intp nesterov
    double beta1                # Adam
    double beta2
    double eps                  # Adam, RMSprop, Adagrad
    double weight_decay
    intp decoupled              # AdamW
    intp eps_uncorrected        # Adam: eps added to sqrt(v) before the bias correction
    double alpha                # RMSprop's smoothing constant
    intp centered
    double lr_decay             # Adagrad
    double clipnorm             # 0: off; else the global L2 norm of the trainable gradients
    double clipvalue            # 0: off; else clamp every entry to [-clipvalue, clipvalue]
    # Rows of the optimizer state (torch.optim's names), -1 where unused.
    intp momentum_buffer
    intp exp_avg
    intp exp_avg_sq
    intp square_avg
    intp grad_avg
    intp sum


cdef struct BatchStats:
    # What one minibatch reports.
    double loss                 # mean loss (weighted) plus the trainable layers' penalties
    double penalty              # those penalties alone
    double abs_residual         # regression: sum |prediction - target|
    double sq_residual          # regression: sum (prediction - target)^2
    intp correct                # classification: correct predictions
