"""Training flushes subnormal numbers to zero (``fastbp/_fpenv.h``): the fused step,
its two halves and ``Optimizer.step``. Inference, the kernel functions and the
caller's own thread, before and after, compute them as IEEE 754 says.

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
