"""The fit loop (fastbp/trainer.py, behind Sequential.fit): its own arguments
(epochs, batch_size, tol and n_iter_no_change, callbacks, verbose, validation_split),
minibatches, shuffling and chunked compiled calls, the epoch metrics, validation
split, partial_fit, divergence and NaN found mid-epoch, Ctrl-C and progress output.

Every bad argument gets a clear Python exception naming the problem (never a crash, a
hang or a silently wrong result).
"""

import os
import signal
import sys
import threading

import numpy as np
import pytest

import fastbp
import fastbp.data
from fastbp import _reference
from fastbp import callbacks as cb

from _models import XOR_X, XOR_Y, blobs, class_blobs, classifier, mse_model, reg_data, same_weights


def all_finite(model):
    return all(np.isfinite(w).all() and np.isfinite(b).all() for w, b in model.get_weights())


# ---------------------------------------------------------------------------
# fit arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, -32, np.int64(0)])
def test_batch_size_must_be_positive(bad):
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"batch_size must be >= 1"):
        mse_model().fit(X, y, epochs=1, batch_size=bad)


@pytest.mark.parametrize("bad", [8.0, 2.5, True, False, "32", None])
def test_batch_size_must_be_an_integer(bad):
    X, y = reg_data()
    model = mse_model()
    with pytest.raises(TypeError, match=r"batch_size must be an integer"):
        model.fit(X, y, epochs=1, batch_size=bad)
    assert not model.built


def test_batch_size_numpy_integer_and_larger_than_data_work():
    X, y = reg_data()
    model = mse_model()
    model.fit(X, y, epochs=1, batch_size=np.int32(5))
    model.fit(X, y, epochs=1, batch_size=10**6)
    assert len(model.history) == 2


@pytest.mark.parametrize("bad", [-1, -100])
def test_epochs_must_not_be_negative(bad):
    X, y = reg_data()
    with pytest.raises(ValueError, match=r"epochs must be >= 0"):
        mse_model().fit(X, y, epochs=bad)


@pytest.mark.parametrize("bad", [1.5, 2.0, True, None, "3"])
def test_epochs_must_be_an_integer(bad):
    X, y = reg_data()
    with pytest.raises(TypeError, match=r"epochs must be an integer"):
        mse_model().fit(X, y, epochs=bad)


def test_zero_epochs_builds_without_training():
    X, y = reg_data()
    model = mse_model()
    model.fit(X, y, epochs=0)
    assert model.built and len(model.history) == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"validation_split": 1.0}, "validation_split"),
        ({"validation_split": -0.1}, "validation_split"),
        ({"validation_split": 0.2, "validation_data": ([[0, 0, 0]], [0])}, "not both"),
        ({"validation_split": 0.001}, "empty"),
        ({"tol": -1}, "tol"),
        ({"callbacks": [object()]}, "Callback"),
        ({"verbose": 3}, "verbose"),
    ],
)
def test_fit_arguments_checked(kwargs, message):
    X, y = blobs(30)
    with pytest.raises((ValueError, TypeError), match=message):
        classifier().fit(X, y, epochs=1, **kwargs)


def test_tol_with_patience_stops_like_scikit_learn():
    X, y = blobs(40)
    model = classifier(fastbp.SGD(lr=0.1))
    history = model.fit(X, y, epochs=100, tol=10.0, n_iter_no_change=3)
    # tol 10: nothing after the first epoch counts as an improvement.
    assert len(history) == 4


# ---------------------------------------------------------------------------
# minibatches, shuffling and chunked compiled calls
# ---------------------------------------------------------------------------


def test_chunked_calls_give_the_same_training(monkeypatch):
    X, y = blobs(50)
    whole = classifier()
    whole.fit(X, y, epochs=3, batch_size=4)
    monkeypatch.setattr(fastbp.trainer, "CHUNK_FLOPS", 1)
    chunked = classifier()
    chunked.fit(X, y, epochs=3, batch_size=4)
    np.testing.assert_array_equal(whole.flat_params, chunked.flat_params)
    assert whole.history.history == chunked.history.history


def test_epoch_loss_is_mean_of_batch_losses_full_batch():
    """With one batch per epoch the reported loss is the loss before that epoch's step."""
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=20)
    model = fastbp.Sequential(
        [fastbp.Dense(1)], loss="mse", optimizer=fastbp.SGD(lr=0.1), dtype="float64", seed=0
    )
    model.build(3)
    expected = []
    for _ in range(3):
        expected.append(model.loss_and_gradients(X, y)[0])
        model.fit(X, y, epochs=1, batch_size=20)
    np.testing.assert_allclose(model.history["loss"], expected, rtol=1e-13)


def test_minibatches_with_smaller_last_batch_match_numpy_reference():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(11, 3)), rng.normal(size=(11, 2))
    model = fastbp.Sequential(
        [fastbp.Dense(5, "sigmoid"), fastbp.Dense(2)],
        loss="mse",
        optimizer=fastbp.SGD(lr=0.2, momentum=0.5),
        dtype="float64",
        seed=0,
    )
    model.build(3)
    weights = model.get_weights()
    optimizer = _reference.Optimizer("sgd", lr=0.2, momentum=0.5)
    for _ in range(2):  # minibatches of 4, 4 and 3 rows
        _reference.train_epoch(
            weights, X, y, 4, optimizer, activations=["sigmoid", "identity"], loss="mse"
        )
    model.fit(X, y, epochs=2, batch_size=4, shuffle=False)
    for (got_w, got_b), (want_w, want_b) in zip(model.get_weights(), weights):
        np.testing.assert_allclose(got_w, want_w, rtol=1e-12)
        np.testing.assert_allclose(got_b, want_b, rtol=1e-12)


def test_shuffle_does_not_change_full_batch_training():
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(30, 4)), rng.integers(0, 3, 30)
    results = []
    for shuffle in (True, False):
        model = fastbp.Sequential(
            [fastbp.Dense(6, "relu"), fastbp.Dense(3)],
            loss="cross_entropy",
            optimizer=fastbp.SGD(lr=0.1),
            dtype="float64",
            seed=7,
        )
        model.fit(X, y, epochs=5, batch_size=30, shuffle=shuffle)
        results.append(model.flat_params.copy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)


def test_shuffling_changes_the_minibatches():
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(40, 3)), rng.normal(size=40)

    def train(shuffle):
        model = fastbp.Sequential(
            [fastbp.Dense(1)], loss="mse", optimizer=fastbp.SGD(lr=0.05), dtype="float64", seed=0
        )
        model.fit(X, y, epochs=2, batch_size=8, shuffle=shuffle)
        return model.flat_params.copy()

    assert not np.allclose(train(True), train(False))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_epochs_split_over_fits_train_exactly_as_in_one_fit(dtype):
    # Each epoch's order is a new permutation drawn from the model's random stream,
    # so that a fit that goes on where another stopped (or a model loaded from a
    # file) shuffles as one long fit would.
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(70, 4)).astype(dtype), rng.integers(0, 3, 70)

    def model():
        return fastbp.Sequential(
            [fastbp.Dense(6, "tanh"), fastbp.Dense(3)],
            loss="cross_entropy",
            optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
            dtype=dtype,
            seed=4,
        )

    whole, pieces = model(), model()
    whole.fit(X, y, epochs=5, batch_size=8)
    for epochs in (2, 1, 2):
        pieces.fit(X, y, epochs=epochs, batch_size=8)
    np.testing.assert_array_equal(pieces.flat_params, whole.flat_params)
    assert pieces.history.history == whole.history.history


# ---------------------------------------------------------------------------
# epoch metrics and validation
# ---------------------------------------------------------------------------


def test_validation_loss_equals_evaluate():
    rng = np.random.default_rng(2)
    X, y = class_blobs(50, 3, 4, rng)
    model = fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(3)], loss="cross_entropy", seed=0, dtype="float64"
    )
    history = model.fit(X, y, epochs=3, validation_data=(X[:40], y[:40]))
    result = model.evaluate(X[:40], y[:40])
    assert history["val_loss"][-1] == pytest.approx(result["loss"], rel=1e-12)
    assert history["val_accuracy"][-1] == result["accuracy"]


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "poisson"])
def test_training_mae_and_r2_per_epoch(loss):
    """With one full batch per epoch, the epoch's running metrics are those of the
    weights before its step: they equal evaluate() just before."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(40, 3))
    y = np.abs(X @ [1.0, -2.0, 0.5]) if loss == "poisson" else X @ [1.0, -2.0, 0.5]
    model = fastbp.Sequential(
        [fastbp.Dense(4, "tanh"), fastbp.Dense(1)],
        loss=loss,
        optimizer=fastbp.SGD(lr=0.05),
        dtype="float64",
        seed=0,
        input_dim=3,
    )
    before = model.evaluate(X, y)
    history = model.fit(X, y, epochs=1, batch_size=40)
    assert history["mae"][0] == pytest.approx(before["mae"], rel=1e-12)
    assert history["r2"][0] == pytest.approx(before["r2"], rel=1e-12)
    assert history["loss"][0] == pytest.approx(before["loss"], rel=1e-12)


def test_validation_split_is_stratified_and_disjoint():
    X, y = blobs(100)
    y = np.repeat([0, 1, 2], [70, 20, 10])
    X = X[:100]
    model = classifier()
    model.fit(X, y, epochs=1, validation_split=0.2)
    data = fastbp.data.prepare(X, y, model.loss, model.n_outputs, model.dtype)
    train, held = fastbp.data.split(data, 0.2, np.random.default_rng(0), True)
    X_train, X_val, l_val = train.X, held.X, held.labels
    assert np.bincount(l_val).tolist() == [14, 4, 2]
    assert len(X_train) + len(X_val) == 100
    rows = {tuple(r) for r in X_train}
    assert not any(tuple(r) in rows for r in X_val)
    assert "val_accuracy" in model.history.history


def test_validation_split_regression_reports_mae_and_r2():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2))
    y = X @ [1.0, -2.0]
    model = fastbp.Sequential([fastbp.Dense(1)], loss="mse", optimizer=fastbp.SGD(lr=0.1), seed=0)
    history = model.fit(X, y, epochs=30, validation_split=0.25)
    assert {"loss", "mae", "r2", "val_loss", "val_mae", "val_r2"} == set(history.history)
    assert history["val_r2"][-1] > 0.99 > history["val_r2"][0]


# ---------------------------------------------------------------------------
# partial_fit
# ---------------------------------------------------------------------------


def test_partial_fit_online_learning(tmp_path):
    X, y = blobs(90)
    model = classifier(fastbp.SGD(lr=0.2))
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(X[:30], y[:30])
    with pytest.raises(ValueError, match="labels 0 to 2"):
        model.partial_fit(X[:30], y[:30], classes=[0, 1])
    first = model.partial_fit(X[:30], np.zeros(30, dtype=int), classes=[0, 1, 2])
    assert len(first) == 1
    for start in range(30, 90, 30):  # later calls continue without classes
        model.partial_fit(X[start : start + 30], y[start : start + 30])
    assert len(model.history) == 3 and model.history.epoch == [0, 1, 2]
    batch = fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(3, "softmax")], optimizer=fastbp.SGD(lr=0.2), seed=0
    )
    batch.fit(X[:30], np.zeros(30, dtype=int), epochs=1)
    batch.fit(X[30:60], y[30:60], epochs=1)
    batch.fit(X[60:], y[60:], epochs=1)
    np.testing.assert_array_equal(model.flat_params, batch.flat_params)
    with pytest.raises(ValueError, match="cross_entropy"):
        fastbp.Sequential([fastbp.Dense(1)], loss="mse").partial_fit(X, y, classes=[0, 1])
    # A model that has trained knows its classes: partial_fit continues a fit (or a
    # model loaded after one) as the next epoch of it.
    batch.partial_fit(X[:30], y[:30])
    fit = fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(3, "softmax")], optimizer=fastbp.SGD(lr=0.2), seed=0
    )
    fit.fit(X[:30], np.zeros(30, dtype=int), epochs=1)
    fit.fit(X[30:60], y[30:60], epochs=1)
    fit.fit(X[60:], y[60:], epochs=1)
    fit.fit(X[:30], y[:30], epochs=1)
    np.testing.assert_array_equal(batch.flat_params, fit.flat_params)
    loaded = fastbp.Sequential.load(batch.save(tmp_path / "trained"))
    assert len(loaded.partial_fit(X[30:60], y[30:60])) == 5


# ---------------------------------------------------------------------------
# divergence, and NaN found mid-epoch
# ---------------------------------------------------------------------------


def diverging_regression(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 5)) * 1e3
    y = X @ rng.normal(size=5) + 1e3
    return X, y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_divergence_raises_floating_point_error(dtype, momentum):
    X, y = diverging_regression()
    model = fastbp.Sequential(
        [fastbp.Dense(8, "relu"), fastbp.Dense(1)],
        optimizer=fastbp.SGD(lr=1e6, momentum=momentum),
        seed=0,
        dtype=dtype,
    )
    with pytest.raises(
        FloatingPointError, match=r"(?s)training loss became (nan|inf).*learning rate"
    ):
        model.fit(X, y, epochs=20, batch_size=32)
    assert all_finite(model)


DIVERGENCE_TARGETS = {
    "mse": lambda rng: rng.normal(size=(64, 2)),
    "mae": lambda rng: rng.normal(size=(64, 2)),
    "huber": lambda rng: rng.normal(size=(64, 2)),
    "poisson": lambda rng: rng.poisson(3.0, (64, 2)).astype(float),
    "cross_entropy": lambda rng: rng.integers(0, 2, 64),
    "binary_cross_entropy": lambda rng: rng.integers(0, 2, (64, 2)).astype(float),
}


@pytest.mark.parametrize("loss", list(DIVERGENCE_TARGETS))
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_divergence_is_always_reported_and_rolled_back(loss, activation, dtype, momentum):
    # SGD at lr=1e6 once returned normally in most of these configurations (the loss
    # grown 1e5 to 1e100 times, weights of 6e49), or restored weights that had
    # already diverged. Every one must raise and restore the last sane weights: here
    # the initial ones, since the first epoch diverges at once.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 5)), DIVERGENCE_TARGETS[loss](rng)
    for batch_size, threads in [(1, 1), (8, 2), (64, 1), (64, 2)]:
        model = fastbp.Sequential(
            [fastbp.Dense(8, activation), fastbp.Dense(2)],
            loss=loss,
            optimizer=fastbp.SGD(lr=1e6, momentum=momentum),
            seed=0,
            dtype=dtype,
            threads=threads,
            input_dim=5,
        )
        start, start_loss = model.flat_params.copy(), model.evaluate(X, y)["loss"]
        with pytest.raises(FloatingPointError, match="diverged.*restored to the start of epoch 0"):
            model.fit(X, y, epochs=20, batch_size=batch_size)
        np.testing.assert_array_equal(model.flat_params, start)
        assert model.optimizer_state.step == 0 and len(model.history) == 0
        assert model.evaluate(X, y)["loss"] == start_loss


def test_a_finite_explosion_is_divergence():
    # tanh under mse at lr=1e6, full batch: epoch 0's one loss is taken before its
    # update, and epoch 1's is 1e12 (then 1e271, finite). Epoch 0 ended diverged, so
    # its record goes with its update.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 5)), rng.normal(size=(64, 2))
    model = fastbp.Sequential(
        [fastbp.Dense(8, "tanh"), fastbp.Dense(2)],
        optimizer=fastbp.SGD(lr=1e6),
        seed=0,
        dtype="float64",
        input_dim=5,
    )
    start = model.flat_params.copy()
    with pytest.raises(
        FloatingPointError,
        match=r"epoch 1: the epoch's training loss .* exceeds 10000 times.*start of epoch 0",
    ):
        model.fit(X, y, epochs=20, batch_size=64)
    np.testing.assert_array_equal(model.flat_params, start)
    assert model.optimizer_state.step == 0 and len(model.history) == 0


def test_a_typical_first_row_is_no_false_alarm():
    # Found by tests/test_fuzz_api.py: a first minibatch of one row that loses little,
    # then a row of large inputs that loses 1e6 times more at the very same weights.
    # With the first minibatch's loss as the only scale, that epoch "diverged" (an
    # exploding loss) though training had hardly moved the weights; the loss at the
    # starting weights on the first rows is a scale too.
    X, y = np.array([[0.0], [15.0]]), np.array([[1.0, 0.0], [2.0, 3.0]])
    model = fastbp.Sequential(
        [fastbp.Dense(2, "exponential")],
        loss="poisson",
        optimizer=fastbp.SGD(lr=1e-12),
        dtype="float64",
        seed=0,
        input_dim=1,
    )
    model.set_weights([(np.full((1, 2), 1.0), np.zeros(2))])
    history = model.fit(X, y, epochs=2, batch_size=1, shuffle=False)
    assert history["loss"][0] == pytest.approx((2 + 2 * np.exp(15) - 75) / 4, rel=1e-9)
    np.testing.assert_allclose(model.get_weights()[0][0], 1.0, rtol=1e-3)
    # Real divergence is still caught: the same data at a step size that explodes.
    model.optimizer = fastbp.SGD(lr=1e6)
    with pytest.raises(FloatingPointError, match="training diverged"):
        model.fit(X, y, epochs=5, batch_size=1, shuffle=False)


def reference_case():
    # Row 0 is zeros (its loss at the starting weights: the bias's, log 3), the
    # others large; an L2 penalty large enough to matter. At the starting weights
    # the loss over the first rows (with the penalty) is the largest scale.
    rng = np.random.default_rng(7)
    X = 4 * rng.normal(size=(40, 5))
    X[0] = 0
    y = rng.integers(0, 3, 40)
    model = fastbp.Sequential(
        [fastbp.Dense(4, "tanh", kernel_regularizer=fastbp.regularizers.L2(0.3)), fastbp.Dense(3)],
        loss="cross_entropy",
        optimizer=fastbp.SGD(lr=0.05),
        dtype="float64",
        seed=1,
        input_dim=5,
    )
    return model, X, y


def test_a_sound_fit_computes_the_other_reference_scales_at_most_once(monkeypatch):
    # Losses within EXPLOSION times the first minibatch's need nothing more: the
    # loss of an all-zero output is never computed, nor is the loss at the starting
    # weights in a fit of one epoch; a longer fit takes that loss once, when it
    # reuses the checkpoint of its start (so that it never holds three).
    from fastbp import trainer

    def refuse(*args):
        raise AssertionError("computed a reference scale that no loss needed")

    calls = []

    def counted(model, data, params):
        calls.append(params.copy())
        return 1.0

    monkeypatch.setattr(trainer, "_start_loss", refuse)
    monkeypatch.setattr(trainer, "_zero_output_loss", refuse)
    model, X, y = reference_case()
    assert len(model.fit(X, y, epochs=1, batch_size=8)) == 1
    monkeypatch.setattr(trainer, "_start_loss", counted)
    start = model.flat_params.copy()
    history = model.fit(X, y, epochs=4, batch_size=8)
    assert len(history) == 5 and np.isfinite(history["loss"]).all()
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0], start)  # the weights the fit started from


def test_a_fit_holds_at_most_two_checkpoints():
    # The rollback points are copies of the weights and the optimizer state (Adam:
    # 3 x the weights): a fit of one epoch holds one, a longer fit two (its epoch's
    # start and the latest sane one), never a third for the fit's own start.
    import tracemalloc

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(64, 50)), rng.integers(0, 2, 64)
    model = fastbp.Sequential(
        [fastbp.Dense(2000, "relu"), fastbp.Dense(2, "softmax")], optimizer="adam", seed=0
    )
    model.fit(X, y, epochs=2, batch_size=64)  # the model's own buffers, made once
    weights = model.flat_params.nbytes  # 4.2e5 bytes (float32); the data, 2.6e4
    for epochs, checkpoints in ((1, 1), (2, 2), (5, 2)):
        tracemalloc.start()
        try:
            model.fit(X, y, epochs=epochs, batch_size=64)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert 3 * checkpoints * weights < peak < (3 * checkpoints + 0.5) * weights, epochs


def test_the_reference_taken_when_a_loss_needs_it_is_the_rule(monkeypatch):
    # With EXPLOSION 1e-6 the first epoch's loss exceeds its bound and the reference
    # is computed after the epoch's updates: its starting-weights term is still the
    # loss (with the penalty) at the weights the fit started from, as evaluate gives
    # it before the fit, not at the weights reached.
    model, X, y = reference_case()
    start = model.evaluate(X, y)["loss"]  # 40 rows: all of them are the first rows
    first = model.evaluate(X[:1], y[:1])["loss"]  # (shuffle=False, batch_size=1)
    assert start > max(first, np.log(3))
    reached, _, _ = reference_case()
    reached.fit(X, y, epochs=1, batch_size=1, shuffle=False)
    assert f"{reached.evaluate(X, y)['loss']:.4g}" != f"{start:.4g}"
    monkeypatch.setattr(fastbp.trainer, "EXPLOSION", 1e-6)
    with pytest.raises(
        FloatingPointError, match=f"1e-06 times the fit's reference loss {start:.4g} "
    ):
        model.fit(X, y, epochs=1, batch_size=1, shuffle=False)


def test_rollback_skips_an_epoch_that_ended_diverged(monkeypatch):
    # The last update of epoch 1 blows the weights up (here by hand), after that
    # epoch's loss was taken: its end, the start of epoch 2, is not a sane rollback
    # point, so the weights go back to the start of epoch 1, and the History and
    # step count with them.
    monkeypatch.setattr(fastbp.trainer, "CHUNK_FLOPS", 1)  # one minibatch per call
    X, y = reg_data(n=32, d=3)
    starts = {}

    class BlowUpAtTheEndOfEpoch1(cb.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            starts[epoch] = self.model.flat_params.copy()

        def on_batch_chunk_end(self, batch, logs=None):
            if len(self.model.history) == 1 and batch == 4:
                self.model.flat_params[:] *= 1e30

    model = mse_model(dtype="float64", optimizer=fastbp.SGD(lr=0.01))
    with pytest.raises(FloatingPointError, match="epoch 2.*restored to the start of epoch 1"):
        model.fit(X, y, epochs=5, batch_size=8, callbacks=[BlowUpAtTheEndOfEpoch1()])
    np.testing.assert_array_equal(model.flat_params, starts[1])
    assert model.history.epoch == [0] and model.optimizer_state.step == 4
    model.fit(X, y, epochs=1, batch_size=8)  # training goes on from there
    assert model.history.epoch == [0, 1]


@pytest.mark.parametrize(
    "case",
    ["unscaled-inputs", "heavy-tailed-targets", "poisson-negative-loss", "converged"],
)
def test_no_false_alarm_on_sound_training(case):
    rng = np.random.default_rng(11)
    X, loss, optimizer, batch_size = rng.normal(size=(200, 4)), "mse", fastbp.Adam(0.01), 16
    if case == "unscaled-inputs":  # a first loss far above the targets' scale
        X = X * 1e3
        y = X @ rng.normal(size=4)
    elif case == "heavy-tailed-targets":  # single samples with losses 1e6 times others
        y, batch_size = rng.standard_cauchy(200), 1
    elif case == "poisson-negative-loss":  # exp(z) - y z < 0 near the optimum
        y, loss = rng.poisson(200.0, 200).astype(float), "poisson"
    else:  # a fit to a tiny loss, then continued: noise far above that loss
        X, y = np.tile(XOR_X, (50, 1)), np.tile(XOR_Y, 50).astype(float)
    model = fastbp.Sequential(
        [fastbp.Dense(16, "tanh"), fastbp.Dense(1)], loss=loss, optimizer=optimizer, seed=0
    )
    model.fit(X, y, epochs=30, batch_size=batch_size)
    if case == "converged":
        assert model.history["loss"][-1] < 1e-4
        model.optimizer = fastbp.Adam(0.05)
        model.fit(X, y, epochs=10, batch_size=4)
    assert all_finite(model)


@pytest.mark.parametrize("dtype,scale", [("float32", 1e20), ("float64", 1e160)])
def test_huge_inputs_stop_before_the_first_update(dtype, scale):
    X, y = reg_data(n=64, d=4)
    model = fastbp.Sequential([fastbp.Dense(1)], optimizer="sgd", seed=0, dtype=dtype)
    model.fit(X, y, epochs=0)  # build only
    before = model.get_weights()
    with pytest.raises(FloatingPointError, match=r"minibatch 0.*learning rate"):
        model.fit(X * scale, y, epochs=3, batch_size=16)
    assert same_weights(model.get_weights(), before)
    assert all_finite(model)
    assert len(model.history) == 0


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: fastbp.SGD(lr=1e38),
        lambda: fastbp.SGD(lr=1e38, momentum=0.5),
        lambda: fastbp.Adam(lr=1e38),
    ],
    ids=["sgd", "sgd-momentum", "adam"],
)
def test_update_overflowing_float32_raises_and_keeps_weights_finite(make_optimizer):
    # The loss of a minibatch is still finite, but lr * gradient overflows float32:
    # training must stop with FloatingPointError and leave finite weights.
    X, y = diverging_regression()
    model = fastbp.Sequential(
        [fastbp.Dense(8, "relu"), fastbp.Dense(1)],
        optimizer=make_optimizer(),
        seed=0,
        dtype="float32",
    )
    with pytest.raises(FloatingPointError, match=r"learning rate"):
        model.fit(X, y, epochs=3, batch_size=32)
    assert all_finite(model)


def test_single_overflowing_update_is_not_silent():
    # One full-batch step whose update overflows float32: fit must not return
    # normally with infinite/NaN weights.
    X, y = diverging_regression()
    model = fastbp.Sequential(
        [fastbp.Dense(8, "relu"), fastbp.Dense(1)],
        optimizer=fastbp.SGD(lr=1e38),
        seed=0,
        dtype="float32",
    )
    try:
        model.fit(X, y, epochs=1, batch_size=len(X))
    except FloatingPointError as exc:
        assert "learning rate" in str(exc)
    assert all_finite(model), "fit returned normally but left non-finite weights"
    assert np.isfinite(model.predict(X[:5])).all()


@pytest.mark.parametrize("where", ["X", "y"])
def test_nan_found_mid_epoch_restores_weights(where):
    """NaN in the data is found when its minibatch's loss turns NaN: the error names
    it and the weights are those from before the epoch, not half-trained ones."""
    rng = np.random.default_rng(10)
    X, y = rng.normal(size=(64, 3)), rng.normal(size=64)
    (X if where == "X" else y)[60] = np.nan
    model = fastbp.Sequential(
        [fastbp.Dense(4, "tanh"), fastbp.Dense(1)],
        loss="mse",
        optimizer=fastbp.SGD(lr=0.1),
        seed=0,
        input_dim=3,
    )
    before = model.flat_params.copy()
    with pytest.raises(ValueError, match=f"{where} contains NaN"):
        model.fit(X, y, epochs=2, batch_size=8, shuffle=False)
    np.testing.assert_array_equal(model.flat_params, before)
    assert model.optimizer_state.step == 0 and len(model.history) == 0


# ---------------------------------------------------------------------------
# Ctrl-C and progress output
# ---------------------------------------------------------------------------


def test_ctrl_c_stops_after_the_running_minibatches(monkeypatch):
    monkeypatch.setattr(fastbp.trainer, "CHUNK_FLOPS", 1)  # one minibatch per call
    X, y = blobs(64)

    class PressCtrlC(cb.Callback):
        def on_batch_chunk_end(self, batch, logs=None):
            if self.model._epochs_done == 1 and batch == 3:
                os.kill(os.getpid(), signal.SIGINT)

    model = classifier()
    with pytest.warns(UserWarning, match="interrupted.*epoch 1 after 3 of 8"):
        history = model.fit(X, y, epochs=5, batch_size=8, callbacks=[PressCtrlC()])
    assert len(history) == 1  # the completed epoch only
    assert model.optimizer_state.step == 8 + 3
    assert np.isfinite(model.flat_params).all()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    model.fit(X, y, epochs=1, batch_size=8)  # and training goes on normally
    assert len(model.history) == 2


def test_ctrl_c_in_the_last_run_of_an_epoch_keeps_that_epoch(monkeypatch):
    # The epoch's updates are all in: it is recorded, with its callbacks, and
    # training stops before the next epoch.
    monkeypatch.setattr(fastbp.trainer, "CHUNK_FLOPS", 1)  # one minibatch per call
    X, y = blobs(64)
    ended = []

    class PressCtrlC(cb.Callback):
        def on_batch_chunk_end(self, batch, logs=None):
            if len(self.model.history) == 1 and batch == 8:
                os.kill(os.getpid(), signal.SIGINT)

        def on_epoch_end(self, epoch, logs=None):
            ended.append(epoch)

    model = classifier()
    with pytest.warns(UserWarning, match="interrupted.*at the end of epoch 1"):
        history = model.fit(X, y, epochs=5, batch_size=8, callbacks=[PressCtrlC()])
    assert history.epoch == ended == [0, 1]
    assert model.optimizer_state.step == 2 * 8


@pytest.mark.parametrize(
    "hook,epochs_recorded,steps",
    [
        ("on_epoch_end", [0, 1, 2], 3 * 8),  # epoch 2 is complete when its callback raises
        ("last_chunk", [0, 1, 2], 3 * 8),  # so it is after its last minibatch
        ("mid_epoch", [0, 1], 2 * 8 + 3),  # a partial epoch: its updates, not a record
        ("on_epoch_begin", [0, 1], 2 * 8),
    ],
)
def test_a_callback_that_raises_leaves_history_and_steps_consistent(
    monkeypatch, hook, epochs_recorded, steps
):
    monkeypatch.setattr(fastbp.trainer, "CHUNK_FLOPS", 1)
    X, y = blobs(64)

    class Fails(cb.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if hook == "on_epoch_begin" and epoch == 2:
                raise RuntimeError("callback failed")

        def on_batch_chunk_end(self, batch, logs=None):
            if len(self.model.history) == 2 and batch == {"last_chunk": 8, "mid_epoch": 3}.get(
                hook
            ):
                raise RuntimeError("callback failed")

        def on_epoch_end(self, epoch, logs=None):
            logs["extra"] = epoch
            if hook == "on_epoch_end" and epoch == 2:
                raise RuntimeError("callback failed")

    model = classifier()
    with pytest.raises(RuntimeError, match="callback failed"):
        model.fit(X, y, epochs=5, batch_size=8, callbacks=[Fails()])
    assert model.history.epoch == epochs_recorded
    assert model.optimizer_state.step == steps
    if hook == "on_epoch_end":  # what the callbacks added before the failure is kept
        assert model.history["extra"] == [0, 1, 2]
    model.fit(X, y, epochs=1, batch_size=8)  # the next epoch is numbered on
    assert model.history.epoch == epochs_recorded + [len(epochs_recorded)]


def test_progress_plain_lines_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    X, y = blobs(20)
    classifier().fit(X, y, epochs=2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]


def test_progress_bar_with_tqdm(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    from fastbp import _progress

    monkeypatch.setattr(_progress, "_terminal", lambda stream: True)  # a bar, as on a terminal
    X, y = blobs(20)
    classifier().fit(X, y, epochs=2, batch_size=5, verbose=1)
    err = capsys.readouterr().err
    assert "8/8" in err and "epoch 2/2" in err


def test_verbose_prints_one_line_per_epoch(capsys):
    model = fastbp.Sequential([fastbp.Dense(2)], loss="cross_entropy", seed=0)
    model.fit(XOR_X, XOR_Y, epochs=3, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/3:") and "accuracy" in lines[0]
    model.fit(XOR_X, XOR_Y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""


def _halves_model(optimizer, frozen=False):
    layers = [fastbp.Dense(7, "tanh"), fastbp.Dense(3)]
    layers[0].trainable = not frozen
    return fastbp.Sequential(
        layers, loss="cross_entropy", optimizer=optimizer, seed=4, dtype="float64", input_dim=5
    )


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: fastbp.SGD(lr=0.3, momentum=0.9, clipnorm=0.05),
        lambda: fastbp.Adam(lr=0.05, clipvalue=0.01),
    ],
    ids=["sgd-clipnorm", "adam-clipvalue"],
)
def test_gradients_of_shards_combined_then_applied_equal_the_fused_step(optimizer, frozen):
    """What data-parallel training does between the two halves: each shard's mean
    gradient, weighted by its rows, summed, then one update. Equal to fit's fused step
    on the whole minibatch (float64; the sums differ only in order: rtol 1e-10)."""
    rng = np.random.default_rng(9)
    X, y = rng.normal(size=(20, 5)), rng.integers(0, 3, 20)
    fused, halves = _halves_model(optimizer(), frozen), _halves_model(optimizer(), frozen)
    for _ in range(3):
        fused.fit(X, y, epochs=1, batch_size=20, shuffle=False)
        combined = np.zeros_like(halves.flat_grads)
        losses = []
        for rows in (slice(0, 13), slice(13, 20)):  # uneven shards
            losses.append(halves.compute_gradients(X[rows], y[rows]))
            combined += halves.flat_grads * (rows.stop - rows.start) / 20
        halves.flat_grads[...] = combined
        halves.apply_gradients()
        np.testing.assert_allclose(halves.flat_params, fused.flat_params, rtol=1e-10, atol=1e-13)
    if frozen:
        frozen_size = 5 * 7 + 7
        assert not halves.flat_grads[:frozen_size].any()
    assert halves.optimizer_state.step == fused.optimizer_state.step == 3
    assert (13 * losses[0] + 7 * losses[1]) / 20 == pytest.approx(
        fused.history["loss"][-1], rel=1e-10
    )


def test_compute_gradients_checks_its_data_and_refuses_during_fit():
    model = _halves_model(fastbp.SGD(lr=0.1))
    with pytest.raises(ValueError, match="features"):
        model.compute_gradients(np.ones((2, 4)), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        model.compute_gradients(np.full((2, 5), np.nan), [0, 1])
    started, release = threading.Event(), threading.Event()

    class Hold(fastbp.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            started.set()
            release.wait(10)

    worker = threading.Thread(
        target=model.fit,
        args=(np.ones((4, 5)), [0, 1, 2, 0]),
        kwargs=dict(epochs=1, callbacks=[Hold()]),
    )
    worker.start()
    assert started.wait(10)
    for call in (lambda: model.compute_gradients(np.ones((2, 5)), [0, 1]), model.apply_gradients):
        with pytest.raises(RuntimeError, match="already training"):
            call()
    release.set()
    worker.join()
