"""Callbacks (fastbp/callbacks.py): the order of the hooks and their logs,
EarlyStopping, ModelCheckpoint, ReduceLROnPlateau and LearningRateScheduler; and
History.plot."""

import os
import sys

import numpy as np
import pytest

import fastbp
from fastbp import callbacks as cb

from _models import blobs, classifier


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
    monkeypatch.setattr(fastbp.trainer, "CHUNK_FLOPS", 1)  # one minibatch per compiled call
    X, y = blobs(20)
    recorder = Recorder()
    classifier().fit(X, y, epochs=2, batch_size=8, validation_data=(X, y), callbacks=[recorder])
    logs = "['accuracy', 'loss', 'val_accuracy', 'val_loss']"
    assert recorder.calls == [
        "train_begin",
        "epoch_begin 0",
        "chunk 1",
        "chunk 2",
        "chunk 3",
        f"epoch_end 0 {logs}",
        "epoch_begin 1",
        "chunk 1",
        "chunk 2",
        "chunk 3",
        f"epoch_end 1 {logs}",
        "train_end",
    ]
    assert recorder.model is not None


def test_early_stopping_patience_and_restore():
    X, y = blobs(60)
    # Learning rate 0 from epoch 3: epoch 3's loss (the weights after epoch 2, held
    # still) is the last improvement; epochs 4, 5 and 6 repeat it, and the third of
    # them exceeds patience 2.
    #
    # "Repeat it" means bit-equal losses, and shuffle=False makes that hold by
    # construction, on any machine and any BLAS: every epoch then cuts the same rows,
    # in the same order, into the same minibatches (32 and 28 rows), and SGD with lr 0
    # (no momentum, no weight decay) computes p - 0 * g, which equals p for any
    # finite gradient. So epochs 3 to 6 run the same operations on the same numbers,
    # in the same order, inside one fit call (the same converted X, the same workspace
    # buffers, the thread counts fixed for the call), and each epoch's loss, the
    # row-weighted sum of its minibatch losses, comes out the same to the last bit.
    # With shuffling, each epoch sums other samples into each minibatch, and the
    # epoch losses may differ in the last bit (they did, and EarlyStopping then saw a
    # late "improvement" and ran 10 epochs).
    schedule = cb.LearningRateScheduler(lambda epoch: 0.5 if epoch < 3 else 0.0)
    stopper = cb.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    weights = {}

    class Keep(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights[epoch] = self.model.flat_params.copy()

    model = classifier()
    history = model.fit(X, y, epochs=50, shuffle=False, callbacks=[schedule, stopper, Keep()])
    assert len(history) == 7
    assert stopper.stopped_epoch == 6 and stopper.best_epoch == 3
    assert history["lr"] == [0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0]
    assert history["loss"][3] == history["loss"][4] == history["loss"][6] < history["loss"][2]
    np.testing.assert_array_equal(model.flat_params, weights[3])  # the best epoch's weights


def test_early_stopping_on_given_values_restores_the_best_epoch():
    """The same rules on monitored values given epoch by epoch (written into the logs by
    a callback that runs before EarlyStopping), while training changes the weights every
    epoch: only a strict improvement resets the patience count, and
    restore_best_weights puts back the best epoch's weights, not the last ones."""
    values = [5.0, 4.0, 4.0, 3.0, 3.5, 3.0, 2.5, 7.0, 7.0, 7.0, 1.0]
    weights = {}

    class Given(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["loss"] = values[epoch]

    class Keep(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights[epoch] = self.model.flat_params.copy()

    X, y = blobs(60)
    stopper = cb.EarlyStopping(monitor="loss", patience=2, restore_best_weights=True)
    model = classifier()
    history = model.fit(X, y, epochs=50, shuffle=False, callbacks=[Given(), stopper, Keep()])
    # Epochs 2 (equal to the best), 4 and 5 (equal again) do not improve; epoch 6 does;
    # epochs 7, 8 and 9 do not, and the third of them exceeds patience 2.
    assert history["loss"] == values[:10]
    assert stopper.stopped_epoch == 9 and stopper.best_epoch == 6 and stopper.best == 2.5
    assert not np.array_equal(weights[6], weights[9])  # training went on after the best
    np.testing.assert_array_equal(model.flat_params, weights[6])


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
    best_only = cb.ModelCheckpoint(
        str(tmp_path / "best.npz"), monitor="val_accuracy", save_best_only=True
    )
    model = classifier()
    model.fit(X, y, epochs=3, validation_data=(X, y), callbacks=[keep_all, best_only])
    assert len(keep_all.saved) == 3
    assert os.path.basename(keep_all.saved[0]).startswith("ckpt-01-")
    last = fastbp.load(keep_all.saved[-1])
    np.testing.assert_array_equal(last.predict(X), model.predict(X))
    assert 1 <= len(best_only.saved) <= 3 and best_only._monitor.mode == "max"


def test_reduce_lr_on_plateau():
    X, y = blobs(40)
    reducer = cb.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=10.0, min_lr=0.02
    )
    model = classifier(fastbp.SGD(lr=0.1))
    history = model.fit(X, y, epochs=5, callbacks=[reducer])
    # min_delta 10: no epoch counts as an improvement after the first.
    assert history["lr"] == [0.1, 0.05, 0.025, 0.02, 0.02]


def test_scheduler_changes_the_update():
    """A scheduled rate is the rate the compiled step uses."""
    X, y = blobs(30)
    scheduled, fixed = classifier(), classifier(fastbp.SGD(lr=0.05))
    scheduled.fit(X, y, epochs=2, callbacks=[cb.LearningRateScheduler(lambda e: 0.05)])
    fixed.fit(X, y, epochs=2)
    np.testing.assert_array_equal(scheduled.flat_params, fixed.flat_params)


def test_history_plot(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    X, y = blobs(30)
    model = classifier()
    model.fit(X, y, epochs=3, validation_split=0.2)
    axes = model.history.plot()
    assert len(axes) == 2  # loss and accuracy, each with its validation curve
    assert [line.get_label() for line in axes[0].get_lines()] == ["training", "validation"]
    np.testing.assert_array_equal(axes[0].get_lines()[1].get_ydata(), model.history["val_loss"])
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


def test_learning_rate_scheduler_takes_keras_two_argument_schedules():
    # schedule(epoch, lr) raised "missing 1 required positional argument: 'lr'".
    X, y = blobs(40)
    seen = []

    def halve(epoch, lr):
        seen.append((epoch, lr))
        return lr * 0.5

    model = classifier(fastbp.SGD(lr=0.8))
    history = model.fit(X, y, epochs=3, callbacks=[cb.LearningRateScheduler(halve)])
    assert seen == [(0, 0.8), (1, 0.4), (2, 0.2)]
    assert history["lr"] == [0.4, 0.2, 0.1] and model.optimizer.lr == 0.1
    # The one-argument form is kept, lambdas and schedules alike.
    model = classifier(fastbp.SGD(lr=0.8))
    history = model.fit(
        X, y, epochs=2, callbacks=[cb.LearningRateScheduler(lambda e: 0.1 / (e + 1))]
    )
    assert history["lr"] == [0.1, 0.05]
    history = model.fit(X, y, epochs=1, callbacks=[cb.LearningRateScheduler(lambda e, lr=9: 0.3)])
    assert history["lr"][-1] == 0.3
    decay = fastbp.schedules.StepDecay(0.4, step_size=1, gamma=0.5)
    history = model.fit(X, y, epochs=1, callbacks=[cb.LearningRateScheduler(decay)])
    assert history["lr"][-1] == decay(3)
    for wrong in (lambda: 0.1, lambda a, b, c: 0.1):
        with pytest.raises(TypeError, match=r"schedule\(epoch\).*schedule\(epoch, lr\)"):
            cb.LearningRateScheduler(wrong)


@pytest.mark.parametrize(
    "template,message",
    [
        (
            "m-{val_acc:.3f}.npz",
            r"names 'val_acc', which fit does not report: it may name 'epoch' and \['accuracy'",
        ),
        ("m-{val_loss}.npz", None),  # with validation data only
        ("m-{accuracy:d}.npz", r"cannot be filled in.*Unknown format code 'd'"),
        ("m-{}.npz", r"cannot be filled in"),
        ("m-{epoch:03d}-{lr:.4f}.npz", None),  # with a schedule listed before it
    ],
)
@pytest.mark.parametrize("validation", [False, True])
def test_model_checkpoint_path_checked_when_training_begins(
    tmp_path, template, message, validation
):
    # A path naming a metric that does not exist failed after a whole epoch.
    X, y = blobs(40)
    model = classifier()
    before = model.flat_params.copy() if model.built else None
    checkpoint = cb.ModelCheckpoint(str(tmp_path / template))
    callbacks = [checkpoint]
    if "lr" in template:
        callbacks.insert(0, cb.LearningRateScheduler(lambda epoch, lr: lr))
    if message is None and "val_" in template and not validation:
        message = r"names 'val_loss'.*give validation_data or validation_split"
    kwargs = dict(validation_data=(X, y)) if validation else {}
    if message is None:
        model.fit(X, y, epochs=2, callbacks=callbacks, **kwargs)
        assert len(checkpoint.saved) == 2 and all(os.path.exists(p) for p in checkpoint.saved)
        return
    with pytest.raises(ValueError, match=message):
        model.fit(X, y, epochs=2, callbacks=callbacks, **kwargs)
    assert len(model.history) == 0 and checkpoint.saved == []
    if before is not None:
        np.testing.assert_array_equal(model.flat_params, before)


def test_model_checkpoint_lr_needs_a_schedule_before_it(tmp_path):
    X, y = blobs(40)
    path = str(tmp_path / "m-{lr}.npz")
    with pytest.raises(ValueError, match=r"names 'lr'"):
        classifier().fit(
            X,
            y,
            epochs=1,
            callbacks=[cb.ModelCheckpoint(path), cb.LearningRateScheduler(lambda e: 0.1)],
        )
    with pytest.raises(ValueError, match=r"ModelCheckpoint monitors 'val_loss'"):
        classifier().fit(X, y, epochs=1, callbacks=[cb.ModelCheckpoint(path, save_best_only=True)])


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("validation", [False, True])
def test_callback_params_name_the_metrics_of_the_epoch_logs(loss, validation):
    """params["metrics"] (what ModelCheckpoint checks its path against) is exactly
    what on_epoch_end receives."""
    X, y = blobs(40)
    if loss == "mse":
        y = np.eye(3)[y]

    class Seen(cb.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.logs = sorted(logs)

    first, after = Seen(), Seen()
    scheduler = cb.ReduceLROnPlateau(monitor="loss")
    model = classifier()
    model.loss = fastbp.losses.get_loss(loss)
    kwargs = dict(validation_split=0.25) if validation else {}
    model.fit(X, y, epochs=1, callbacks=[first, scheduler, after], **kwargs)
    assert sorted(first.params["metrics"]) == first.logs
    assert sorted(after.params["metrics"]) == after.logs == sorted(first.logs + ["lr"])
    assert first.params["epochs"] == 1 and first.params["verbose"] == 0


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_callback_switches_must_be_bools(tmp_path, value):
    with pytest.raises(TypeError, match=r"restore_best_weights must be True or False"):
        cb.EarlyStopping(restore_best_weights=value)
    with pytest.raises(TypeError, match=r"save_best_only must be True or False"):
        cb.ModelCheckpoint(str(tmp_path / "m.npz"), save_best_only=value)
