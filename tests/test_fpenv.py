"""Training flushes subnormal numbers to zero (``fastbp/_fpenv.h``): ``fit``, the
gradients of ``compute_gradients`` and ``loss_and_gradients``, ``apply_gradients``
and ``Optimizer.step``. Prediction, evaluation, input gradients, the kernel
functions and the caller's own thread, before and after, compute them as IEEE 754
says.

Each case is built so that exactly one operation of the update makes a subnormal:
a momentum buffer of a normal value ``s`` (just above the smallest normal number)
meets a zero gradient and is halved, so IEEE arithmetic gives ``s / 2`` exactly and a
flushing CPU gives 0. Where the build cannot flush (``FLUSHES_SUBNORMALS`` false: not
x86-64 or arm64), the IEEE value is the expected one.
"""

import numpy as np
import pytest

import fastbp
from fastbp import _threads
from fastbp._backend import core

# Normal numbers whose halves are subnormal: the smallest normal is about 1.18e-38
# (float32) and 2.23e-308 (float64).
SMALL = {"float32": np.float32(1.5e-38), "float64": np.float64(3e-308)}
DTYPES = sorted(SMALL)


def flushed(value):
    """What training leaves of a subnormal result: 0 where the build flushes."""
    return type(value)(0) if core().FLUSHES_SUBNORMALS else value


def assert_ieee_on_this_thread(dtype):
    s = SMALL[dtype]
    half = s * s.dtype.type(0.5)
    assert 0 < half < np.finfo(dtype).smallest_normal, "this thread flushes subnormals"


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_halves_are_subnormal_here(dtype):
    s = SMALL[dtype]
    assert s >= np.finfo(dtype).smallest_normal
    assert_ieee_on_this_thread(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_optimizer_step_flushes_a_subnormal_momentum(dtype):
    s = SMALL[dtype]
    opt = fastbp.SGD(lr=1.0, momentum=0.5)
    p = np.zeros(5, dtype=dtype)
    opt.step(p, np.full(5, s, dtype=dtype))  # buffer s, p = -s: both normal
    np.testing.assert_array_equal(p, -s)
    opt.step(p, np.zeros(5, dtype=dtype))  # buffer 0.5 * s: subnormal
    half = s * s.dtype.type(0.5)
    np.testing.assert_array_equal(opt._hand_state.buffers["momentum_buffer"], flushed(half))
    np.testing.assert_array_equal(p, -s - flushed(half))
    assert_ieee_on_this_thread(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_kernel_function_keeps_the_subnormal(dtype):
    s = SMALL[dtype]
    p = np.zeros(5, dtype=dtype)
    buf = np.full(5, s, dtype=dtype)
    core().sgd_update(p, np.zeros(5, dtype=dtype), buf, 1.0, momentum=0.5)
    half = s * s.dtype.type(0.5)
    assert half != 0
    np.testing.assert_array_equal(buf, half)
    np.testing.assert_array_equal(p, -half)


def zero_loss_model(dtype, threads):
    """A linear model with zero weights, so that zero data gives a zero loss and
    exactly zero gradients, with every momentum entry at SMALL."""
    model = fastbp.Sequential(
        [fastbp.Dense(4)],
        loss="mse",
        optimizer=fastbp.SGD(lr=1.0, momentum=0.5),
        input_dim=3,
        dtype=dtype,
        threads=threads,
    )
    model.set_weights([(np.zeros((3, 4), dtype), np.zeros(4, dtype))])
    model.optimizer_state.buffers["momentum_buffer"][:] = SMALL[dtype]
    return model


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_flushes_subnormals_on_every_thread(dtype, threads, monkeypatch):
    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)  # split even this
    model = zero_loss_model(dtype, threads)
    X, y = np.zeros((8, 3), dtype), np.zeros((8, 4), dtype)
    model.fit(X, y, epochs=1, batch_size=8, shuffle=False)
    half = SMALL[dtype] * SMALL[dtype].dtype.type(0.5)
    np.testing.assert_array_equal(model.optimizer_state.buffers["momentum_buffer"], flushed(half))
    for w, b in model.get_weights():
        np.testing.assert_array_equal(w, -flushed(half))
        np.testing.assert_array_equal(b, -flushed(half))
    assert_ieee_on_this_thread(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("call", ["compute_gradients", "loss_and_gradients"])
def test_weight_gradients_flush_a_subnormal(dtype, call):
    # One row, one input of 0.25 and one output: the weight's gradient is the
    # bias's (the delta, normal here) times 0.25, which is subnormal.
    s = SMALL[dtype]
    model = fastbp.Sequential(
        [fastbp.Dense(1)], loss="mse", optimizer=fastbp.SGD(lr=1.0), input_dim=1, dtype=dtype
    )
    model.set_weights([(np.zeros((1, 1), dtype), np.zeros(1, dtype))])
    X, y = np.full((1, 1), 0.25, dtype), np.full((1, 1), s, dtype)
    if call == "compute_gradients":
        model.compute_gradients(X, y)
        grad_w, grad_b = model.flat_grads[:1], model.flat_grads[1:]
    else:
        [(grad_w, grad_b)] = model.loss_and_gradients(X, y)[1]
    grad_b = grad_b.ravel()[0]
    assert abs(grad_b) >= np.finfo(dtype).smallest_normal  # the case's premise
    ieee = grad_b * grad_b.dtype.type(0.25)
    assert 0 < abs(ieee) < np.finfo(dtype).smallest_normal
    assert grad_w.ravel()[0] == flushed(ieee)
    assert_ieee_on_this_thread(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_input_gradients_keep_a_subnormal(dtype):
    # A zero input, a weight of 0.25: the input's gradient is the delta (the bias's
    # gradient, normal) times 0.25, subnormal, and kept.
    s = SMALL[dtype]
    model = fastbp.Sequential([fastbp.Dense(1)], loss="mse", input_dim=1, dtype=dtype)
    model.set_weights([(np.full((1, 1), 0.25, dtype), np.zeros(1, dtype))])
    X, y = np.zeros((1, 1), dtype), np.full((1, 1), s, dtype)
    [(_, grad_b)] = model.loss_and_gradients(X, y)[1]
    ieee = grad_b.ravel()[0] * grad_b.dtype.type(0.25)
    assert 0 < abs(ieee) < np.finfo(dtype).smallest_normal
    assert model.input_gradient(X, y).ravel()[0] == ieee


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_callers_setting_is_back_after_a_fit_stops_at_a_nonfinite_loss(dtype):
    model = zero_loss_model(dtype, 1)
    X, y = np.zeros((8, 3), dtype), np.full((8, 4), np.finfo(dtype).max, dtype)
    with pytest.raises(FloatingPointError):
        model.fit(X, y, epochs=1, batch_size=4)
    assert_ieee_on_this_thread(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_inference_keeps_subnormals(dtype):
    s = SMALL[dtype]
    model = fastbp.Sequential([fastbp.Dense(1)], input_dim=1, dtype=dtype)
    model.set_weights([(np.full((1, 1), s, dtype), np.zeros(1, dtype))])
    X = np.full((3, 1), 0.5, dtype)
    out = model.predict(X)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, s * s.dtype.type(0.5))
