"""Callbacks, schedules, validation split, stopping rules, online learning, Ctrl-C,
progress output and History.plot."""
import math
import os
import signal
import sys

import numpy as np
import pytest

import fastbp
from fastbp import callbacks as cb
from fastbp import schedules


def blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = np.eye(3)[y] * 3 + rng.normal(size=(n, 3))
    return X, y


def classifier(optimizer=None, seed=0):
    return fastbp.Sequential([fastbp.Dense(8, "tanh"), fastbp.Dense(3, "softmax")],
                             optimizer=optimizer or fastbp.SGD(lr=0.1), seed=seed)


class Recorder(cb.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(f"epoch_begin {epoch}")

    def on_batch_chunk_end(self, batch, logs=None):
        self.calls.append(f"chunk {batch}")

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(f"epoch_end {epoch} {sorted(logs)}")

    def on_train_end(self, logs=None):
        self.calls.append("train_end")


def test_callback_order_and_logs(monkeypatch):
    monkeypatch.setattr(fastbp.model, "CHUNK_FLOPS", 1)  # one minibatch per compiled call
    X, y = blobs(20)
    recorder = Recorder()
    classifier().fit(X, y, epochs=2, batch_size=8, validation_data=(X, y), callbacks=[recorder])
    logs = "['accuracy', 'loss', 'val_accuracy', 'val_loss']"
    assert recorder.calls == [
        "train_begin", "epoch_begin 0", "chunk 1", "chunk 2", "chunk 3", f"epoch_end 0 {logs}",
        "epoch_begin 1", "chunk 1", "chunk 2", "chunk 3", f"epoch_end 1 {logs}", "train_end"]
    assert recorder.model is not None


def test_chunked_calls_give_the_same_training(monkeypatch):
    X, y = blobs(50)
    whole = classifier()
    whole.fit(X, y, epochs=3, batch_size=4)
    monkeypatch.setattr(fastbp.model, "CHUNK_FLOPS", 1)
    chunked = classifier()
    chunked.fit(X, y, epochs=3, batch_size=4)
    np.testing.assert_array_equal(whole.flat_params, chunked.flat_params)
    assert whole.history.history == chunked.history.history


def test_early_stopping_patience_and_restore():
    X, y = blobs(60)
    # Learning rate 0 from epoch 3: epoch 3's loss (the weights after epoch 2, held
    # still) is the last improvement; epochs 4, 5 and 6 repeat it, and the third of
    # them exceeds patience 2.
    schedule = cb.LearningRateScheduler(lambda epoch: 0.5 if epoch < 3 else 0.0)
    stopper = cb.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    model = classifier()
    history = model.fit(X, y, epochs=50, callbacks=[schedule, stopper])
    assert len(history) == 7
    assert stopper.stopped_epoch == 6 and stopper.best_epoch == 3
    assert history["lr"] == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert history["loss"][3] == history["loss"][4] == history["loss"][6] < history["loss"][2]


def test_early_stopping_restores_best_weights():
    X, y = blobs(60)
    model = classifier(fastbp.SGD(lr=3.0))  # large steps: the loss goes up and down
    snapshots = []

    class Keep(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append((logs["val_loss"], self.model.flat_params.copy()))

    stopper = cb.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
    model.fit(X, y, epochs=30, validation_split=0.3, callbacks=[Keep(), stopper])
    best_loss, best_weights = min(snapshots, key=lambda pair: pair[0])
    np.testing.assert_array_equal(model.flat_params, best_weights)
    assert stopper.best == best_loss


def test_monitor_missing_is_a_clear_error():
    X, y = blobs(20)
    with pytest.raises(ValueError, match="val_loss.*validation_data or validation_split"):
        classifier().fit(X, y, epochs=2, callbacks=[cb.EarlyStopping()])


def test_model_checkpoint(tmp_path):
    X, y = blobs(40)
    path = str(tmp_path / "ckpt-{epoch:02d}-{loss:.3f}.npz")
    keep_all = cb.ModelCheckpoint(path, monitor="loss")
    best_only = cb.ModelCheckpoint(str(tmp_path / "best.npz"), monitor="val_accuracy",
                                   save_best_only=True)
    model = classifier()
    model.fit(X, y, epochs=3, validation_data=(X, y), callbacks=[keep_all, best_only])
    assert len(keep_all.saved) == 3
    assert os.path.basename(keep_all.saved[0]).startswith("ckpt-01-")
    last = fastbp.load(keep_all.saved[-1])
    np.testing.assert_array_equal(last.predict(X), model.predict(X))
    assert 1 <= len(best_only.saved) <= 3 and best_only._monitor.mode == "max"


def test_reduce_lr_on_plateau():
    X, y = blobs(40)
    reducer = cb.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0,
                                   min_lr=0.02)
    model = classifier(fastbp.SGD(lr=0.1))
    history = model.fit(X, y, epochs=5, callbacks=[reducer])
    # min_delta 10: no epoch counts as an improvement after the first.
    assert history["lr"] == [0.1, 0.05, 0.025, 0.02, 0.02]


@pytest.mark.parametrize("schedule,expected", [
    (schedules.Constant(0.1), [0.1, 0.1, 0.1]),
    (schedules.StepDecay(0.1, step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05, 0.025]),
    (schedules.ExponentialDecay(1.0, gamma=0.5), [1.0, 0.5, 0.25]),
    (schedules.InverseScaling(1.0, power=0.5), [1.0, 1 / math.sqrt(2), 1 / math.sqrt(3)]),
    (schedules.CosineDecay(1.0, total_epochs=6, warmup_epochs=2),
     [0.5, 1.0, 1.0, 0.5 * (1 + math.cos(math.pi / 4)), 0.5, 0.5 * (1 + math.cos(3 * math.pi / 4)),
      0.0, 0.0]),
])
def test_schedules(schedule, expected):
    assert [schedule(e) for e in range(len(expected))] == pytest.approx(expected, abs=1e-15)


def test_schedules_validate():
    with pytest.raises(ValueError, match="gamma"):
        schedules.StepDecay(0.1, step_size=2, gamma=-1)
    with pytest.raises(ValueError, match="warmup"):
        schedules.CosineDecay(0.1, total_epochs=3, warmup_epochs=3)
    with pytest.raises(ValueError, match="epoch"):
        schedules.Constant(0.1)(-1)
    with pytest.raises(ValueError, match="learning rate"):
        classifier().fit(*blobs(10), epochs=1,
                         callbacks=[cb.LearningRateScheduler(lambda e: float("nan"))])


def test_scheduler_changes_the_update():
    """A scheduled rate is the rate the compiled step uses."""
    X, y = blobs(30)
    scheduled, fixed = classifier(), classifier(fastbp.SGD(lr=0.05))
    scheduled.fit(X, y, epochs=2, callbacks=[cb.LearningRateScheduler(lambda e: 0.05)])
    fixed.fit(X, y, epochs=2)
    np.testing.assert_array_equal(scheduled.flat_params, fixed.flat_params)


def test_validation_split_is_stratified_and_disjoint():
    X, y = blobs(100)
    y = np.repeat([0, 1, 2], [70, 20, 10])
    X = X[:100]
    model = classifier()
    model.fit(X, y, epochs=1, validation_split=0.2)
    X_checked, kind, targets, labels = model._check_Xy(X, y)
    (X_train, _, _, _), (X_val, _, _, l_val) = model._split(
        X_checked, kind, targets, labels, np.empty(0), 0.2)
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


@pytest.mark.parametrize("kwargs,message", [
    ({"validation_split": 1.0}, "validation_split"),
    ({"validation_split": -0.1}, "validation_split"),
    ({"validation_split": 0.2, "validation_data": ([[0, 0, 0]], [0])}, "not both"),
    ({"validation_split": 0.001}, "empty"),
    ({"tol": -1}, "tol"),
    ({"callbacks": [object()]}, "Callback"),
    ({"verbose": 3}, "verbose"),
])
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


def test_partial_fit_online_learning():
    X, y = blobs(90)
    model = classifier(fastbp.SGD(lr=0.2))
    with pytest.raises(ValueError, match="classes"):
        model.partial_fit(X[:30], y[:30])
    with pytest.raises(ValueError, match="labels 0 to 2"):
        model.partial_fit(X[:30], y[:30], classes=[0, 1])
    first = model.partial_fit(X[:30], np.zeros(30, dtype=int), classes=[0, 1, 2])
    assert len(first) == 1
    for start in range(30, 90, 30):  # later calls continue without classes
        model.partial_fit(X[start:start + 30], y[start:start + 30])
    assert len(model.history) == 3 and model.history.epoch == [0, 1, 2]
    batch = fastbp.Sequential([fastbp.Dense(8, "tanh"), fastbp.Dense(3, "softmax")],
                              optimizer=fastbp.SGD(lr=0.2), seed=0)
    batch.fit(X[:30], np.zeros(30, dtype=int), epochs=1)
    batch.fit(X[30:60], y[30:60], epochs=1)
    batch.fit(X[60:], y[60:], epochs=1)
    np.testing.assert_array_equal(model.flat_params, batch.flat_params)
    with pytest.raises(ValueError, match="cross_entropy"):
        fastbp.Sequential([fastbp.Dense(1)], loss="mse").partial_fit(X, y, classes=[0, 1])


def test_ctrl_c_stops_after_the_running_minibatches(monkeypatch):
    monkeypatch.setattr(fastbp.model, "CHUNK_FLOPS", 1)  # one minibatch per call
    X, y = blobs(64)

    class PressCtrlC(cb.Callback):
        def on_batch_chunk_end(self, batch, logs=None):
            if self.model._epochs_done == 1 and batch == 3:
                os.kill(os.getpid(), signal.SIGINT)

    model = classifier()
    with pytest.warns(UserWarning, match="interrupted.*epoch 1 after 3 of 8"):
        history = model.fit(X, y, epochs=5, batch_size=8, callbacks=[PressCtrlC()])
    assert len(history) == 1  # the completed epoch only
    assert model.optimizer.iterations == 8 + 3
    assert np.isfinite(model.flat_params).all()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    model.fit(X, y, epochs=1, batch_size=8)  # and training goes on normally
    assert len(model.history) == 2


def test_progress_plain_lines_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    X, y = blobs(20)
    classifier().fit(X, y, epochs=2, verbose=1)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]


def test_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    X, y = blobs(20)
    classifier().fit(X, y, epochs=2, batch_size=5, verbose=1)
    err = capsys.readouterr().err
    assert "8/8" in err and "epoch 2/2" in err


def test_history_plot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    X, y = blobs(30)
    model = classifier()
    model.fit(X, y, epochs=3, validation_split=0.2)
    axes = model.history.plot()
    assert len(axes) == 2  # loss and accuracy, each with its validation curve
    assert [line.get_label() for line in axes[0].get_lines()] == ["training", "validation"]
    np.testing.assert_array_equal(axes[0].get_lines()[1].get_ydata(),
                                  model.history["val_loss"])
    axes[0].figure.savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000


def test_history_plot_without_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    X, y = blobs(10)
    model = classifier()
    model.fit(X, y, epochs=1)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        model.history.plot()


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "poisson"])
def test_training_mae_and_r2_per_epoch(loss):
    """With one full batch per epoch, the epoch's running metrics are those of the
    weights before its step: they equal evaluate() just before."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(40, 3))
    y = np.abs(X @ [1.0, -2.0, 0.5]) if loss == "poisson" else X @ [1.0, -2.0, 0.5]
    model = fastbp.Sequential([fastbp.Dense(4, "tanh"), fastbp.Dense(1)], loss=loss,
                              optimizer=fastbp.SGD(lr=0.05), dtype="float64", seed=0,
                              input_dim=3)
    before = model.evaluate(X, y)
    history = model.fit(X, y, epochs=1, batch_size=40)
    assert history["mae"][0] == pytest.approx(before["mae"], rel=1e-12)
    assert history["r2"][0] == pytest.approx(before["r2"], rel=1e-12)
    assert history["loss"][0] == pytest.approx(before["loss"], rel=1e-12)
