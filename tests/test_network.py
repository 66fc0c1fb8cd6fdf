"""The network plan (fastbp/network.py): flattening, the flat buffers, the plan rows,
fusion of the output activation, the workspace layout and the trainable segments."""

import numpy as np
import pytest

import fastbp
from fastbp import _codes
from fastbp.layers import Dense, Dropout, Residual
from fastbp.losses import get_loss
from fastbp.network import Network, Workspace, flatten


def network(layers, loss="cross_entropy", input_dim=5):
    return Network(layers, get_loss(loss), input_dim, np.float64, np.random.default_rng(0))


def test_flatten_gives_dense_layers_dropout_rates_and_skips():
    a, b, c, d = Dense(4), Dense(4), Dense(4), Dense(2)
    dense, rates, skips = flatten(
        [Dropout(0.5), a, Dropout(0.5), Dropout(0.2), Residual([b, Dropout(0.1), c]), d]
    )
    assert dense == [a, b, c, d]
    assert rates == pytest.approx([0.5, 1 - 0.5 * 0.8, 0.1, 0, 0])
    assert skips == [_codes.NO_SKIP, _codes.NO_SKIP, 0, _codes.NO_SKIP]
    assert flatten([Residual([Dense(5)])])[2] == [_codes.SKIP_INPUT]


def test_plan_rows_describe_the_layers_and_their_views():
    layers = [Dense(4, "relu"), Dropout(0.25), Dense(3, "softmax")]
    net = network(layers)
    plan = net.plan
    assert plan["n_in"].tolist() == [5, 4] and plan["n_out"].tolist() == [4, 3]
    assert plan["weight_at"].tolist() == [0, 24] and plan["bias_at"].tolist() == [20, 36]
    assert plan["activation"].tolist() == [
        _codes.ACTIVATIONS["relu"],
        _codes.ACTIVATIONS["identity"],
    ]  # softmax fused
    assert net.net[0]["output_activation"] == _codes.ACTIVATIONS["softmax"]
    assert plan["dropout_after"].tolist() == [0.25, 0.0]
    assert net.params.size == 39
    for layer, row in zip(net.dense, plan):
        assert np.shares_memory(layer.weight, net.params)
        assert layer.weight.ctypes.data == net.params.ctypes.data + 8 * row["weight_at"]
        assert layer.bias.ctypes.data == net.params.ctypes.data + 8 * row["bias_at"]


def test_softmax_is_not_fused_before_mse():
    net = network([Dense(3, "softmax")], loss="mse")
    assert net.plan["activation"][0] == _codes.ACTIVATIONS["softmax"]
    assert net.net[0]["output_activation"] == _codes.ACTIVATIONS["identity"]


def test_workspace_layout_inference_first_and_no_overlap():
    layers = [Dense(6, "gelu"), Residual([Dense(6, "tanh")]), Dense(3)]
    net = network(layers)
    row, header = net.plan, net.net[0]
    spans = [(r["out_at"], r["n_out"]) for r in row]
    spans += [(r["sum_at"], r["n_out"]) for r in row if r["sum_at"] >= 0]
    inference_end = max(a + w for a, w in spans)
    assert inference_end == header["infer_width"]
    spans += [(r["z_at"], r["n_out"]) for r in row if r["z_at"] >= 0]
    spans += [(r["delta_at"], r["n_out"]) for r in row]
    spans += [(header["x_at"], 5), (header["y_at"], 3)]
    spans.sort()
    for (a, w), (b, _) in zip(spans, spans[1:]):
        assert a + w <= b  # disjoint
    assert spans[-1][0] + spans[-1][1] == header["train_width"]
    assert row["z_at"].tolist()[0] >= header["infer_width"]  # GELU keeps z in training only
    assert row["sum_at"].tolist() == [-1, header["infer_width"] - 6, -1]
    assert Workspace(net, 7, training=False).buffer.size == 7 * header["infer_width"]
    assert Workspace(net, 7, training=True).buffer.size == 7 * header["train_width"]


def test_trainable_segments_merge_adjacent_layers_and_zero_frozen_gradients():
    layers = [Dense(4), Dense(4), Dense(4), Dense(3)]
    net = network(layers)
    net.grads[:] = 1
    layers[1].trainable = False
    segments = net.sync_trainable()
    sizes = [5 * 4 + 4, 4 * 4 + 4, 4 * 4 + 4, 4 * 3 + 3]
    ends = np.cumsum(sizes)
    assert segments.tolist() == [[0, ends[0]], [ends[1], ends[3]]]
    assert net.plan["trainable"].tolist() == [1, 0, 1, 1]
    assert not net.grads[ends[0] : ends[1]].any() and net.grads[ends[1] :].all()


def test_each_thread_has_its_own_inference_workspace():
    import threading

    net = network([Dense(4), Dense(3)])
    mine = net.inference_workspace(10)
    assert net.inference_workspace(3) is mine  # reused when large enough
    other = []
    thread = threading.Thread(target=lambda: other.append(net.inference_workspace(10)))
    thread.start()
    thread.join()
    assert other[0] is not mine
    assert net.inference_workspace(10_000).capacity == 512  # chunked


def test_a_compiled_plan_rejects_a_broken_plan():
    net = network([Dense(4), Dense(3)])
    core = fastbp._backend.core()
    bad = net.plan.copy()
    bad["delta_at"][1] = net.net[0]["train_width"]  # past the end of the workspace
    with pytest.raises(ValueError, match="delta buffer of layer 1"):
        core.Plan(net.net, bad, net.params.size)
    bad = net.plan.copy()
    bad["weight_at"][1] = net.params.size
    with pytest.raises(ValueError, match="outside the parameter buffer"):
        core.Plan(net.net, bad, net.params.size)
    bad = net.plan.copy()
    bad["n_in"][1] = 5
    with pytest.raises(ValueError, match="input size"):
        core.Plan(net.net, bad, net.params.size)
    with pytest.raises(ValueError, match="Buffer dtype mismatch"):
        core.Plan(net.net, np.zeros(2, dtype=[("n_in", float)] * 1), net.params.size)
