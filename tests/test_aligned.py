"""Buffers that start on a cache line (fastbp._aligned) and the model buffers that
use them."""

import copy
import gc
import pickle

import numpy as np
import pytest

import fastbp
from fastbp import _aligned


def starts_a_line(a):
    return a.ctypes.data % _aligned.LINE == 0


@pytest.mark.parametrize("shape", [0, 1, 7, (3, 5), (2, 0), (4, 101770)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "intp"])
def test_empty_starts_a_line_with_the_shape_and_dtype(shape, dtype):
    for _ in range(8):  # NumPy's own allocations fall 16 bytes into a line as often as not
        a = _aligned.empty(shape, dtype)
        assert a.size == 0 or starts_a_line(a)  # (an empty array has no first element)
        assert a.shape == ((shape,) if isinstance(shape, int) else shape)
        assert a.dtype == np.dtype(dtype) and a.flags.c_contiguous and a.flags.writeable


def test_full_and_copy_hold_their_values_after_the_buffer_is_left_to_the_view():
    a = _aligned.full((3, 37), 2.5, "float32")
    b = _aligned.copy(np.arange(111.0).reshape(3, 37))
    gc.collect()
    np.testing.assert_array_equal(a, np.full((3, 37), 2.5, dtype=np.float32))
    np.testing.assert_array_equal(b, np.arange(111.0).reshape(3, 37))
    assert starts_a_line(a) and starts_a_line(b) and b.dtype == np.float64


def model_buffers(model):
    network = model._network
    return {
        "params": network.params,
        "grads": network.grads,
        "optimizer state": model.optimizer_state.rows,
        "training workspace": network.training_workspace(16).buffer,
    }


@pytest.mark.parametrize("how", ["new", "pickled", "deepcopied", "loaded"])
def test_a_models_flat_buffers_start_a_line(how, tmp_path):
    model = fastbp.Sequential(
        [fastbp.Dense(13, "relu"), fastbp.Dense(3)],
        loss="cross_entropy",
        optimizer="adam",
        seed=0,
        input_dim=5,
    )
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(40, 5)), rng.integers(0, 3, 40), epochs=1, batch_size=16)
    if how == "pickled":
        model = pickle.loads(pickle.dumps(model))
    elif how == "deepcopied":
        model = copy.deepcopy(model)
    elif how == "loaded":
        model = fastbp.load(model.save(tmp_path / "m"))
    for name, buffer in model_buffers(model).items():
        assert starts_a_line(buffer), name
    assert model.optimizer_state.step == 3
