"""fastbp: fast backpropagation for dense neural networks on the CPU.

Compiled Cython kernels (BLAS gemm without the GIL, fused activation, loss and
optimizer loops) under a small Python API::

    import fastbp
    model = fastbp.Sequential(
        [fastbp.Dense(64, "relu"), fastbp.Dense(3, "softmax")],
        loss="cross_entropy", optimizer=fastbp.Adam(lr=1e-3), seed=0)
    model.fit(X, y, epochs=20, batch_size=32)
    probabilities = model.predict(X)
"""

from . import activations, callbacks, initializers, losses, optimizers, regularizers, schedules
from .callbacks import History
from .layers import Dense, Dropout, Layer, Residual
from .losses import MSE, BinaryCrossEntropy, CrossEntropy, Loss
from .model import Sequential, load
from .optimizers import SGD, Adagrad, Adam, AdamW, Optimizer, RMSProp
from .persistence import ModelFileError

__version__ = "0.1.0"

__all__ = [
    "Adagrad",
    "Adam",
    "AdamW",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Dense",
    "Dropout",
    "History",
    "Layer",
    "Loss",
    "ModelFileError",
    "MSE",
    "Optimizer",
    "RMSProp",
    "Residual",
    "SGD",
    "Sequential",
    "activations",
    "callbacks",
    "initializers",
    "load",
    "losses",
    "optimizers",
    "regularizers",
    "schedules",
]
