"""A model owns its state: threads, copies, pickles, shared optimizers and layers.

Each test here failed before the model owned its state (shared inference
workspace, copies whose layers were not views of their own buffers, optimizer
state kept in the optimizer instance, half-linked moved layers, assignable layer
arrays).
"""

import copy
import pickle
import threading

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Dropout


def data(n=300, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)


def model(seed=0, optimizer=None):
    return fastbp.Sequential(
        [Dense(16, "tanh"), Dropout(0.1), Dense(3, "softmax")],
        optimizer=optimizer or fastbp.Adam(lr=0.01),
        seed=seed,
        dtype="float64",
    )


def run_threads(n, target):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def work(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def test_concurrent_inference_gives_the_serial_results():
    X, y = data(2000)
    m = fastbp.Sequential(
        [Dense(256, "tanh"), Dense(256, "relu"), Dense(3, "softmax")], seed=0, dtype="float64"
    )
    m.fit(X[:300], y[:300], epochs=1)
    # Each thread its own rows and batch size, long enough calls to overlap, so that
    # a shared buffer would be overwritten with other rows mid-call.
    chunks = [X[97 * i : 97 * i + 300 + 29 * i] for i in range(8)]
    targets = [y[97 * i : 97 * i + len(c)] for i, c in enumerate(chunks)]
    expected = [
        (m.predict(c), m.predict_classes(c), m.evaluate(c, t), m.input_gradient(c, t))
        for c, t in zip(chunks, targets)
    ]

    def call(i):
        out = []
        for _ in range(10):
            c = chunks[i]
            out.append(
                (
                    m.predict(c),
                    m.predict_classes(c),
                    m.evaluate(c, targets[i]),
                    m.input_gradient(c, targets[i]),
                )
            )
        return out

    for i, repeats in enumerate(run_threads(8, call)):
        for probabilities, classes, metrics, saliency in repeats:
            np.testing.assert_array_equal(probabilities, expected[i][0])
            np.testing.assert_array_equal(classes, expected[i][1])
            assert metrics == expected[i][2]
            np.testing.assert_array_equal(saliency, expected[i][3])


def test_a_second_fit_from_another_thread_raises():
    X, y = data(4000)
    m = model()
    m.fit(X[:10], y[:10], epochs=1)
    started, finished = threading.Event(), threading.Event()

    class Signal(fastbp.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.set()
            finished.wait(10)

    worker = threading.Thread(
        target=m.fit, args=(X, y), kwargs=dict(epochs=1, callbacks=[Signal()])
    )
    worker.start()
    assert started.wait(10)
    with pytest.raises(RuntimeError, match="already training in another thread"):
        m.fit(X, y, epochs=1)
    finished.set()
    worker.join()
    m.fit(X[:10], y[:10], epochs=1)  # free again afterwards


def test_predict_during_fit_sees_whole_weights(monkeypatch):
    """Every prediction made while another thread trains is the prediction of one of
    the complete weight sets that training passes through (those between its
    compiled runs, recorded by a callback), never of half-updated weights."""
    monkeypatch.setattr(fastbp.trainer, "CHUNK_FLOPS", 1)  # one minibatch per run
    X, y = data(1000)
    m = model(optimizer=fastbp.SGD(lr=0.05, momentum=0.9))
    m.build(X.shape[1])
    probe = X[:64]
    states = [m.flat_params.copy()]

    class Record(fastbp.callbacks.Callback):
        def on_batch_chunk_end(self, batch, logs=None):
            states.append(self.model.flat_params.copy())

    stop, seen = threading.Event(), []

    def predictor():
        while not stop.is_set():
            seen.append(m.predict(probe))

    reader = threading.Thread(target=predictor)
    reader.start()
    m.fit(X, y, epochs=20, batch_size=8, callbacks=[Record()])
    stop.set()
    reader.join()
    assert len(seen) >= 3 and len(states) == 1 + 20 * 125
    reference = model()
    reference.build(X.shape[1])
    possible = set()
    for flat in states:
        reference.flat_params[...] = flat
        possible.add(reference.predict(probe).tobytes())
    assert all(p.tobytes() in possible for p in seen)


@pytest.mark.parametrize("how", ["deepcopy", "copy", "pickle"])
def test_copies_are_independent_models_with_their_own_views(how):
    X, y = data()
    original = model()
    original.fit(X, y, epochs=2)
    clone = {
        "deepcopy": copy.deepcopy,
        "copy": copy.copy,
        "pickle": lambda m: pickle.loads(pickle.dumps(m)),
    }[how](original)
    before = original.flat_params.copy()
    np.testing.assert_array_equal(clone.flat_params, before)
    np.testing.assert_array_equal(clone.predict(X), original.predict(X))
    assert clone.optimizer_state.step == original.optimizer_state.step
    for layer in clone._network.dense:
        assert np.shares_memory(layer.weight, clone.flat_params)
        assert not np.shares_memory(layer.weight, original.flat_params)
    clone.fit(X, y, epochs=2)
    np.testing.assert_array_equal(original.flat_params, before)  # untouched
    (w0, b0), rest = clone.get_weights()[0], clone.get_weights()[1:]
    np.testing.assert_array_equal(w0, clone._network.dense[0].weight)  # not stale
    clone.set_weights([(np.zeros_like(w0), np.zeros_like(b0))] + rest)
    assert not np.allclose(clone.predict(X), original.predict(X))
    np.testing.assert_array_equal(original.flat_params, before)


def test_identical_copies_train_identically():
    X, y = data()
    a = model()
    a.fit(X, y, epochs=1)
    b = pickle.loads(pickle.dumps(a))
    a.fit(X, y, epochs=2)
    b.fit(X, y, epochs=2)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)


def test_one_optimizer_instance_trains_two_models_independently():
    X, y = data()
    shared = fastbp.Adam(lr=0.01)
    a, b = model(0, shared), model(1, shared)
    alone_a, alone_b = model(0, fastbp.Adam(lr=0.01)), model(1, fastbp.Adam(lr=0.01))
    for _ in range(2):  # interleaved, so that shared moments would mix
        a.fit(X, y, epochs=1)
        b.fit(X, y, epochs=1)
        alone_a.fit(X, y, epochs=1)
        alone_b.fit(X, y, epochs=1)
    np.testing.assert_array_equal(a.flat_params, alone_a.flat_params)
    np.testing.assert_array_equal(b.flat_params, alone_b.flat_params)
    assert a.optimizer_state.step == alone_a.optimizer_state.step == 2 * 10
    assert a.optimizer_state.buffers.keys() == {"exp_avg", "exp_avg_sq"}


def test_a_moved_layer_leaves_the_old_model_unusable():
    X, y = data()
    first = model()
    first.fit(X, y, epochs=1)
    hidden = first.layers[0]
    second = fastbp.Sequential([hidden, Dense(2, "softmax")], seed=1, input_dim=X.shape[1])
    np.testing.assert_array_equal(second.get_weights()[0][0], hidden.weight)
    assert np.shares_memory(hidden.weight, second.flat_params)
    before = second.flat_params.copy()
    for call in (
        lambda: first.predict(X),
        lambda: first.set_weights(second.get_weights()[:1] * 2),
        lambda: first.fit(X, y, epochs=1),
        lambda: first.get_weights(),
    ):
        with pytest.raises(RuntimeError, match="moved to another model"):
            call()
    np.testing.assert_array_equal(second.flat_params, before)  # never written by `first`


def test_layer_arrays_cannot_be_replaced_only_written():
    X, y = data()
    m = model()
    m.fit(X, y, epochs=1)
    layer = m.layers[0]
    for name in ("weight", "bias", "grad_weight", "grad_bias"):
        with pytest.raises(AttributeError, match="cannot be replaced"):
            setattr(layer, name, np.zeros_like(getattr(layer, name)))
    layer.weight[...] = 0  # in place: the model sees it
    assert not m.flat_params[: layer.weight.size].any()


def test_a_model_optimizers_hand_step_count_is_not_mistaken_for_the_models():
    X, y = data()
    optimizer = fastbp.SGD(lr=0.1)
    m = model(optimizer=optimizer)
    m.fit(X, y, epochs=1)
    assert m.optimizer_state.step == 10
    with pytest.raises(AttributeError, match="model.optimizer_state.step"):
        optimizer.iterations  # noqa: B018 (the read is what raises)
