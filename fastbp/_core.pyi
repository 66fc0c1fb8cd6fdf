"""Type stubs of the compiled module fastbp._core (see its module docstring).

Arrays are C-contiguous; ``F`` stands for float32 or float64, the same in one call.
"""
from typing import Any

import numpy as np
from numpy.typing import NDArray

F = NDArray[np.floating[Any]]
I = NDArray[np.intp]

SPEC_COLUMNS: int
SPEC: dict[str, int]
MAX_THREADS: int
HAVE_OPENMP: bool
STATUS_OK: int
STATUS_NONFINITE_LOSS: int
HYPERPARAMETERS: int
ACTIVATION_CODES: dict[str, int]
LOSS_CODES: dict[str, int]
OPTIMIZER_CODES: dict[str, int]

def train_run(params: F, grads: F, work: F, label_work: I, X: F, targets: F, labels: I,
              order: I, batch_size: int, first_batch: int, stop_batch: int, spec: I,
              act_param: NDArray[np.float64], layout: I, reg: NDArray[np.float64],
              dropout: NDArray[np.float64], seed: int, loss_kind: int, loss_param: float,
              sample_weight: F, weight_work: F, opt_kind: int, hyper: NDArray[np.float64],
              state: F, segments: I, step: int, batch_stats: NDArray[np.float64],
              batch_correct: I, n_threads: int = 1) -> tuple[int, int, int]: ...
def loss_grad(params: F, grads: F, work: F, X: F, targets: F, labels: I, spec: I,
              act_param: NDArray[np.float64], layout: I, reg: NDArray[np.float64],
              loss_kind: int, loss_param: float = 0, dropout: NDArray[np.float64] | None = None,
              seed: int = 0, step: int = 0) -> float: ...
def input_gradient_run(params: F, work: F, X: F, targets: F, labels: I, out: F, spec: I,
                       act_param: NDArray[np.float64], layout: I, loss_kind: int,
                       loss_param: float, output: int, output_act: int) -> None: ...
def predict_run(params: F, work: F, X: F, out: F, capacity: int, spec: I,
                act_param: NDArray[np.float64], layout: I, output_act: int) -> None: ...
def evaluate_run(params: F, work: F, X: F, targets: F, labels: I, capacity: int, spec: I,
                 act_param: NDArray[np.float64], layout: I, loss_kind: int,
                 loss_param: float = 0) -> tuple[float, int]: ...
def matmul(a: F, b: F, out: F, trans_a: bool = False, trans_b: bool = False,
           alpha: float = 1.0, beta: float = 0.0) -> None: ...
def bias_act_forward(z: F, bias: F, act: int, slope: float = 0.0) -> None: ...
def act_backward(a: F, delta: F, act: int, slope: float = 0.0, z: F | None = None) -> None: ...
def col_sums(d: F, out: F) -> None: ...
def loss_delta(kind: int, out: F, targets: F, labels: I, delta: F,
               param: float = 1.0) -> tuple[float, int]: ...
def sgd_update(params: F, grads: F, momentum_buffer: F, lr: float, momentum: float = 0.0,
               weight_decay: float = 0.0, nesterov: bool = False) -> None: ...
def adam_update(params: F, grads: F, exp_avg: F, exp_avg_sq: F, step: int, lr: float,
                beta1: float, beta2: float, eps: float, weight_decay: float = 0.0,
                decoupled: bool = False) -> None: ...
def optimizer_update(kind: int, params: F, grads: F, state: F, hyper: NDArray[np.float64],
                     step: int) -> None: ...
