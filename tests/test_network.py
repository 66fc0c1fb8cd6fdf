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


# -- the compiled predictor (one thread's bound forward pass) -----------------------


def _classifier(dtype, input_dim=7):
    return fastbp.Sequential(
        [Dense(13, "tanh"), Dense(5, "relu"), Dense(3, "softmax")],
        input_dim=input_dim,
        seed=0,
        dtype=dtype,
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows", [1, 7, 33])
def test_the_predictor_runs_the_same_forward_pass_as_predict_run(dtype, rows):
    core = fastbp._backend.core()
    net = _classifier(dtype)._network
    X = np.random.default_rng(1).standard_normal((rows, 7)).astype(dtype)
    ws = Workspace(net, 5, training=False)  # chunks of 5 rows in both
    expected = np.empty((rows, 3), dtype=dtype)
    assert core.predict_run(net.params, ws.buffer, 5, net.compiled, X, expected)
    got = core.Predictor(net.params, ws.buffer, 5, net.compiled).run(X)
    assert got.dtype == np.dtype(dtype) and got.shape == (rows, 3)
    np.testing.assert_array_equal(got, expected)  # the same kernels on the same chunks
    np.testing.assert_allclose(got.sum(axis=1), 1, rtol=1e-6)


def test_the_predictor_reads_the_weights_as_they_are_at_each_call():
    model = _classifier("float64")
    X = np.random.default_rng(2).standard_normal((4, 7))
    predictor = model._network.predictor(4)
    before = predictor.run(X)
    weights = model.get_weights()
    weights[-1] = (weights[-1][0], weights[-1][1] + np.array([0.0, 0.0, 5.0]))
    model.set_weights(weights)
    after = predictor.run(X)
    assert (after[:, 2] > before[:, 2]).all()
    np.testing.assert_array_equal(after, model.predict(X.tolist()))


def test_the_predictor_leaves_inputs_it_cannot_read_as_they_are_to_its_caller():
    net = _classifier("float32")._network
    predictor = net.predictor(3)
    X = np.ones((3, 7), dtype=np.float32)
    assert predictor.run(X).shape == (3, 3)
    for other in (
        X.astype(np.float64),  # another dtype
        np.asfortranarray(np.ones((3, 7), dtype=np.float32)),  # not C-contiguous
        np.ones((3, 8), dtype=np.float32),  # another width
        np.ones((0, 7), dtype=np.float32),  # no rows
        np.ones(7, dtype=np.float32),  # 1-D
        np.ones((3, 7), dtype=np.float32).view(np.matrix),  # a subclass
    ):
        assert predictor.run(other) is NotImplemented
    misaligned = np.frombuffer(bytearray(3 * 7 * 4 + 1), dtype=np.uint8)[1:].view(np.float32)
    assert predictor.run(misaligned.reshape(3, 7)) is NotImplemented
    with pytest.raises(TypeError, match="ndarray or a fastbp._core.Csr"):
        predictor.run([[1.0] * 7])
    bad = X.copy()
    bad[2, 4] = np.nan
    assert predictor.run(bad) is None  # the caller names the entry


def test_a_predictor_checks_its_buffers_once():
    core = fastbp._backend.core()
    net = _classifier("float32")._network
    ws = Workspace(net, 4, training=False)
    with pytest.raises(TypeError, match="float32 or float64"):
        core.Predictor(net.params.astype(np.int64), ws.buffer, 4, net.compiled)
    with pytest.raises(TypeError, match="work must be"):
        core.Predictor(net.params, ws.buffer.astype(np.float64), 4, net.compiled)
    with pytest.raises(ValueError, match="too small for 5 rows"):
        core.Predictor(net.params, ws.buffer, 5, net.compiled)
    with pytest.raises(ValueError, match="parameter buffer has"):
        core.Predictor(net.params[:-1].copy(), ws.buffer, 4, net.compiled)


def test_each_thread_predicts_with_its_own_predictor():
    import threading

    net = _classifier("float64")._network
    mine = net.predictor(1)
    assert net.predictor(1) is mine
    assert net.predictor(40).capacity == 40  # grown for a larger call
    other = []
    thread = threading.Thread(target=lambda: other.append(net.predictor(40)))
    thread.start()
    thread.join()
    assert other[0] is not net.predictor(40)
    assert net.predictor(10_000).capacity == 512  # chunked


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_misaligned_x_is_copied_not_refused(dtype):
    # A C-contiguous view at an odd address (from a bytes buffer) is not what the
    # kernels read: predict, evaluate and fit convert it like any other input.
    model = _classifier(dtype)
    X = np.random.default_rng(4).standard_normal((5, 7)).astype(dtype)
    raw = np.frombuffer(bytearray(X.nbytes + 1), dtype=np.uint8)[1:]
    misaligned = raw.view(dtype).reshape(5, 7)
    misaligned[...] = X
    assert not misaligned.flags.aligned and misaligned.flags.c_contiguous
    np.testing.assert_array_equal(model.predict(misaligned), model.predict(X))
    y = np.arange(5) % 3
    assert model.evaluate(misaligned, y) == model.evaluate(X, y)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_gives_the_same_rows_whether_or_not_x_needs_converting(dtype):
    model = _classifier(dtype)
    X = np.random.default_rng(3).standard_normal((9, 7)).astype(dtype)
    ready = model.predict(X)  # read in place
    for converted in (X.tolist(), np.asfortranarray(X), X.astype(np.float16).astype(dtype)):
        got = model.predict(converted)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_allclose(got, model.predict(np.ascontiguousarray(converted)), rtol=0)
    np.testing.assert_array_equal(model.predict(X.tolist()), ready)
    np.testing.assert_array_equal(model.predict(X[:1]), model.predict(X[:1].tolist()))
    with pytest.raises(ValueError, match="X has 8 features, but the model expects 7"):
        model.predict(np.ones((2, 8), dtype=dtype))
    with pytest.raises(ValueError, match="X has 8 features"):
        model.predict(np.ones((0, 8), dtype=dtype))
    assert model.predict(np.ones((0, 7), dtype=dtype)).shape == (0, 3)


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


# -- the compiled entry points check the plan before reading it --------------------


def _entry_point_calls(plan):
    """Every whole-network entry point of the compiled core, called on a small
    classifier with ``plan`` in place of its checked one."""
    core = fastbp._backend.core()
    model = fastbp.Sequential(
        [Dense(4, "relu"), Dense(3, "softmax")], input_dim=2, seed=0, dtype="float64"
    )
    net = model._network
    X = np.ones((3, 2))
    labels = np.zeros(3, dtype=np.intp)
    targets = np.empty((0, 3))
    train = Workspace(net, 3, training=True)
    infer = net.inference_workspace(3)
    stats = np.zeros(1, dtype=_codes.BATCH_STATS)
    state = model.optimizer_state
    common = dict(params=net.params, grads=net.grads, work=train.buffer, capacity=3)
    common.update(label_work=train.labels, weight_work=train.weights, plan=plan, X=X)
    common.update(targets=targets, labels=labels, sample_weight=np.empty(0))
    kind = _codes.LOSSES["cross_entropy_labels"]
    common.update(order=np.empty(0, dtype=np.intp), batch_size=3, loss_kind=kind, loss_param=0.0)
    common.update(step=0, stats=stats)
    return {
        "train_run": lambda: core.train_run(
            **common,
            first_batch=0,
            stop_batch=1,
            opt=model.optimizer.config(),
            state=state.rows,
            segments=net.sync_trainable(),
        ),
        "batch_gradients": lambda: core.batch_gradients(**common, batch=0),
        "predict_run": lambda: core.predict_run(
            net.params, infer.buffer, infer.capacity, plan, X, np.empty((3, 3))
        ),
        "evaluate_run": lambda: core.evaluate_run(
            net.params, infer.buffer, infer.capacity, plan, X, targets, labels, kind, 0.0, stats
        ),
        "input_gradient_run": lambda: core.input_gradient_run(
            net.params, train.buffer, 3, plan, X, targets, labels, kind, 0.0, 0, np.empty((3, 2))
        ),
    }


@pytest.mark.parametrize(
    "entry", ["train_run", "batch_gradients", "predict_run", "evaluate_run", "input_gradient_run"]
)
def test_every_entry_point_refuses_a_missing_plan_before_reading_it(entry):
    # predict_run read the plan's input width before checking it: None crashed.
    with pytest.raises(TypeError, match="plan"):
        _entry_point_calls(None)[entry]()


def test_an_unchecked_plan_or_csr_cannot_be_made():
    # Plan.__new__ skipped __init__'s check and gave a Plan of no layers whose use
    # read through a null pointer; the check now runs in __cinit__.
    core = fastbp._backend.core()
    with pytest.raises(TypeError):
        core.Plan.__new__(core.Plan)
    with pytest.raises(TypeError):
        core.Csr.__new__(core.Csr)
    net = network([Dense(4), Dense(3)])
    with pytest.raises(ValueError, match="at least one LayerPlan"):
        core.Plan(net.net, net.plan[:0], net.params.size)  # an empty layer table
    with pytest.raises(ValueError, match="at least one LayerPlan"):
        core.Plan(net.net[:0], net.plan, net.params.size)


def test_entry_points_refuse_out_of_range_batches_and_empty_inputs():
    core = fastbp._backend.core()
    model = fastbp.Sequential(
        [Dense(4, "relu"), Dense(3, "softmax")], input_dim=2, seed=0, dtype="float64"
    )
    calls = _entry_point_calls(model._network.compiled)
    for entry in ("train_run", "batch_gradients", "predict_run", "evaluate_run"):
        calls[entry]()  # the arguments are right: the calls below change one each
    net = model._network
    train = Workspace(net, 3, training=True)
    kind = _codes.LOSSES["cross_entropy_labels"]
    with pytest.raises(ValueError, match="at least one row"):
        core.input_gradient_run(
            net.params,
            train.buffer,
            3,
            net.variant(all_trainable=True),
            np.empty((0, 2)),
            np.empty((0, 3)),
            np.empty(0, dtype=np.intp),
            kind,
            0.0,
            0,
            np.empty((0, 2)),
        )
    stats = np.zeros(1, dtype=_codes.BATCH_STATS)
    with pytest.raises(ValueError, match="first_batch"):
        core.train_run(
            params=net.params,
            grads=net.grads,
            work=train.buffer,
            capacity=3,
            label_work=train.labels,
            weight_work=train.weights,
            plan=net.compiled,
            X=np.ones((3, 2)),
            targets=np.empty((0, 3)),
            labels=np.zeros(3, dtype=np.intp),
            sample_weight=np.empty(0),
            order=np.empty(0, dtype=np.intp),
            batch_size=3,
            first_batch=-1,
            stop_batch=1,
            loss_kind=kind,
            loss_param=0.0,
            opt=model.optimizer.config(),
            state=model.optimizer_state.rows,
            segments=net.sync_trainable(),
            step=0,
            stats=stats,
        )
