"""Central finite differences over a model's flat parameter buffer (float64)."""

import numpy as np


def numerical_gradient(model, X, y, h=1e-6, training=False):
    """Central differences of ``model.loss_and_gradients(X, y, training)``'s loss
    over every entry of the flat parameter buffer."""
    flat = model.flat_params
    grad = np.empty_like(flat)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + h
        up, _ = model.loss_and_gradients(X, y, training=training)
        flat[i] = saved - h
        down, _ = model.loss_and_gradients(X, y, training=training)
        flat[i] = saved
        grad[i] = (up - down) / (2 * h)
    return grad


def flatten(grads):
    return np.concatenate([np.concatenate([gw.ravel(), gb]) for gw, gb in grads])


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)
