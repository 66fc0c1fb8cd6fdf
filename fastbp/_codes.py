"""The one list of names and codes that the Python layer and the compiled core share,
and the NumPy mirrors of the core's structs (declared in ``fastbp/_core.pxd``).

Pure Python and NumPy, so that ``import fastbp`` stays free of the compiled module;
``fastbp._core`` checks at import that its enums equal these codes, and a test
checks that the structs' field names equal the compiled ones (Cython checks each
field's type and position at every call, not its name).
"""

import numpy as np

ACTIVATIONS = {
    "identity": 0,
    "sigmoid": 1,
    "tanh": 2,
    "relu": 3,
    "leaky_relu": 4,
    "softmax": 5,
    "elu": 6,
    "gelu": 7,
    "softplus": 8,
    "exponential": 9,
}

# Loss kinds as the kernels read them: cross-entropy takes two, by the targets given.
LOSSES = {
    "mse": 0,
    "cross_entropy_labels": 1,
    "cross_entropy": 2,
    "binary_cross_entropy": 3,
    "mae": 4,
    "huber": 5,
    "poisson": 6,
}

OPTIMIZERS = {"sgd": 0, "adam": 1, "rmsprop": 2, "adagrad": 3}

# The optimizer state rows, named as torch.optim names them.
STATE_ROWS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "square_avg", "grad_avg", "sum")

NO_SKIP = -2
SKIP_INPUT = -1
STATUS_OK = 0
STATUS_NONFINITE_LOSS = 1


def _struct(*fields):
    return np.dtype([(name, kind) for name, kind in fields], align=True)


_I, _D = np.intp, np.float64

LAYER_PLAN = _struct(
    ("n_in", _I),
    ("n_out", _I),
    ("activation", _I),
    ("act_param", _D),
    ("weight_at", _I),
    ("bias_at", _I),
    ("trainable", _I),
    ("skip", _I),
    ("dropout_after", _D),
    ("l1_weight", _D),
    ("l2_weight", _D),
    ("l1_bias", _D),
    ("l2_bias", _D),
    ("out_at", _I),
    ("sum_at", _I),
    ("z_at", _I),
    ("delta_at", _I),
)

NET_PLAN = _struct(
    ("n_inputs", _I),
    ("n_outputs", _I),
    ("output_activation", _I),
    ("input_dropout", _D),
    ("dropout_seed", np.uint64),
    ("x_at", _I),
    ("y_at", _I),
    ("infer_width", _I),
    ("train_width", _I),
    ("loss_scale", _D),
    ("penalty_per_weight", _I),
)

OPTIMIZER_CONFIG = _struct(
    ("kind", _I),
    ("lr", _D),
    ("momentum", _D),
    ("nesterov", _I),
    ("beta1", _D),
    ("beta2", _D),
    ("eps", _D),
    ("weight_decay", _D),
    ("decoupled", _I),
    ("eps_uncorrected", _I),
    ("alpha", _D),
    ("centered", _I),
    ("lr_decay", _D),
    ("clipnorm", _D),
    ("clipvalue", _D),
    *((row, _I) for row in STATE_ROWS),
)

BATCH_STATS = _struct(
    ("loss", _D),
    ("penalty", _D),
    ("abs_residual", _D),
    ("sq_residual", _D),
    ("correct", _I),
)

STRUCTS = {
    "LayerPlan": LAYER_PLAN,
    "NetPlan": NET_PLAN,
    "OptimizerConfig": OPTIMIZER_CONFIG,
    "BatchStats": BATCH_STATS,
}
