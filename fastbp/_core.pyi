"""Type stubs of the compiled module fastbp._core (see its module docstring).

Arrays are C-contiguous; ``F`` stands for float32 or float64, the same in one call.
``Inputs`` (X) is such a matrix or a ``Csr`` (sparse rows, read in place).
"""

from types import NotImplementedType
from typing import Any

import numpy as np
from numpy.typing import NDArray

F = NDArray[np.floating[Any]]
I = NDArray[np.intp]

MAX_THREADS: int
HAVE_OPENMP: bool
FLUSHES_SUBNORMALS: bool
PHASE_TIMES: bool
PHASES: tuple[str, ...]
SMALL_GEMM_CPU: int
SMALL_GEMM_VERSIONS: tuple[str | None, ...]
SMALL_GEMM_ISAS: tuple[str, ...]
GEMM_PATHS: dict[str, int]
PEAK_ISAS: tuple[str, ...]
PEAK_ISA: str
STATUS_OK: int
STATUS_NONFINITE_LOSS: int
ACTIVATION_CODES: dict[str, int]
LOSS_CODES: dict[str, int]
OPTIMIZER_CODES: dict[str, int]

# Arrays of the structs of _core.pxd (dtypes in fastbp._codes).
OptimizerConfig = NDArray[np.void]
BatchStats = NDArray[np.void]

class Plan:
    n_layers: int
    n_params: int
    def __init__(self, net: NDArray[np.void], layers: NDArray[np.void], n_params: int) -> None: ...

class Csr:
    values: F
    indices: I
    indptr: I
    n_rows: int
    n_cols: int
    double_values: bool
    matrix: Any
    def __init__(self, values: F, indices: I, indptr: I, n_cols: int) -> None: ...
    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...

Inputs = F | Csr

def struct_dtypes() -> dict[str, np.dtype[np.void]]: ...
def train_run(
    params: F,
    grads: F,
    work: F,
    capacity: int,
    label_work: I,
    weight_work: F,
    plan: Plan,
    X: Inputs,
    targets: F,
    labels: I,
    sample_weight: F,
    order: I,
    batch_size: int,
    first_batch: int,
    stop_batch: int,
    loss_kind: int,
    loss_param: float,
    opt: OptimizerConfig,
    state: F,
    segments: I,
    step: int,
    stats: BatchStats,
    n_threads: int = 1,
) -> tuple[int, int, int]: ...
def batch_gradients(
    params: F,
    grads: F,
    work: F,
    capacity: int,
    label_work: I,
    weight_work: F,
    plan: Plan,
    X: Inputs,
    targets: F,
    labels: I,
    sample_weight: F,
    order: I,
    batch_size: int,
    batch: int,
    loss_kind: int,
    loss_param: float,
    step: int,
    stats: BatchStats,
    n_threads: int = 1,
    mask_row0: int = 0,
    penalty_weight: float = 0.0,
) -> int: ...
def apply_update(
    params: F, grads: F, state: F, opt: OptimizerConfig, segments: I, step: int, n_threads: int = 1
) -> None: ...
def input_gradient_run(
    params: F,
    work: F,
    capacity: int,
    plan: Plan,
    X: F,
    targets: F,
    labels: I,
    loss_kind: int,
    loss_param: float,
    output: int,
    out: F,
) -> None: ...
def predict_run(params: F, work: F, capacity: int, plan: Plan, X: Inputs, out: F) -> bool: ...
def phase_times(
    reset: bool = ...,
) -> tuple[NDArray[np.float64], NDArray[np.int64]] | None: ...
def permutation(order: I, seed: int) -> None: ...

class Predictor:
    plan: Plan
    params: F
    work: F
    capacity: int
    def __init__(self, params: F, work: F, capacity: int, plan: Plan) -> None: ...
    def run(self, X: Inputs) -> F | NotImplementedType | None: ...

def evaluate_run(
    params: F,
    work: F,
    capacity: int,
    plan: Plan,
    X: Inputs,
    targets: F,
    labels: I,
    loss_kind: int,
    loss_param: float,
    stats: BatchStats,
) -> None: ...
def matmul(
    a: F,
    b: F,
    out: F,
    trans_a: bool = False,
    trans_b: bool = False,
    alpha: float = 1.0,
    beta: float = 0.0,
    path: str = "auto",
    repeats: int = 1,
    isa: str | None = None,
) -> None: ...
def gemm_path(
    m: int,
    n: int,
    k: int,
    trans_a: bool = False,
    trans_b: bool = False,
    dtype: Any = "float32",
    isa: str | None = None,
) -> str: ...
def fma_loop(
    sums: NDArray[np.float64],
    rounds: int,
    dtype: Any = "float32",
    isa: str | None = None,
    start: float = 1.0,
    m: float = 0.9990234375,
    c: float = 0.0009765625,
) -> tuple[int, int]: ...
def bias_act_forward(z: F, bias: F, act: int, slope: float = 0.0) -> None: ...
def act_backward(a: F, delta: F, act: int, slope: float = 0.0, z: F | None = None) -> None: ...
def col_sums(d: F, out: F) -> None: ...
def loss_delta(
    kind: int,
    out: F,
    targets: F,
    labels: I,
    delta: F,
    param: float = 1.0,
    row_scale: float = 1.0,
) -> tuple[float, int]: ...
def sgd_update(
    params: F,
    grads: F,
    momentum_buffer: F,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> None: ...
def adam_update(
    params: F,
    grads: F,
    exp_avg: F,
    exp_avg_sq: F,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> None: ...
