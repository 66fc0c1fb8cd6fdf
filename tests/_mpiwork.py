"""What tests/test_distributed.py runs under mpirun: ``python _mpiwork.py SCENARIO
OUT_DIR``. Every rank writes what it saw to ``OUT_DIR/SCENARIO-RANK.json``; the
test reads and judges those files (this script asserts nothing)."""

import json
import os
import signal
import sys

import numpy as np
from mpi4py import MPI

import fastbp
from fastbp.callbacks import Callback, ModelCheckpoint

comm = MPI.COMM_WORLD
RANK, SIZE = comm.Get_rank(), comm.Get_size()
ROWS, FEATURES, BATCH = 203, 7, 32  # 203 = 6 * 32 + 11: an uneven last minibatch


def data(dtype="float64"):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(ROWS, FEATURES)).astype(dtype)
    labels = rng.integers(0, 3, ROWS)
    target = (X[:, :2] @ np.array([1.0, -2.0]) + 0.1 * rng.normal(size=ROWS)).astype(dtype)
    weights = rng.uniform(0, 2, ROWS)
    weights[90:130] = 0  # some shares weigh zero
    return X, labels, target, weights


def classifier(optimizer, dtype="float64", dropout=0.2, regularizer=None):
    layers = [fastbp.Dense(16, "tanh", kernel_regularizer=regularizer)]
    layers += [fastbp.Dropout(dropout)] if dropout else []
    layers += [fastbp.Dense(3, "softmax")]
    return fastbp.Sequential(layers, optimizer=optimizer, seed=1, dtype=dtype, threads=1)


def sgd():
    return fastbp.SGD(lr=0.05, momentum=0.9)


def adam():
    return fastbp.Adam(lr=0.01)


def relative_difference(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def equivalence():
    """N ranks at global batch BATCH against one process at BATCH (rank 0 runs the
    single-process fits): the largest relative difference of the weights and of the
    History, per case."""
    X, labels, target, weights = data()
    per_sample = fastbp.regularizers.L2(1e-3, per_sample=True)
    cases = {
        "sgd momentum, dropout, sample weights": (
            lambda: classifier(sgd()),
            dict(sample_weight=weights),
        ),
        "adam, dropout, validation": (
            lambda: classifier(adam()),
            dict(validation_data=(X[:61], labels[:61])),
        ),
        "sgd, per-sample penalty, weights, no shuffle": (
            lambda: classifier(sgd(), dropout=0.0, regularizer=per_sample),
            dict(sample_weight=weights, shuffle=False),
        ),
        "regression, adam, input dropout": (
            lambda: fastbp.Sequential(
                [fastbp.Dropout(0.1), fastbp.Dense(8, "relu"), fastbp.Dense(1)],
                optimizer=adam(),
                seed=3,
                dtype="float64",
                threads=1,
            ),
            dict(validation_split=0.2),
        ),
        "float32 adam": (lambda: classifier(adam(), dtype="float32"), {}),
    }
    out = {}
    for name, (make, options) in cases.items():
        y = target if name.startswith("regression") else labels
        Xc = X.astype("float32") if "float32" in name else X
        model = make()
        history = model.fit(Xc, y, epochs=4, batch_size=BATCH, comm=comm, **options)
        params = model.flat_params.copy()
        gathered = comm.allgather(params)
        result = {"identical": all(np.array_equal(p, gathered[0]) for p in gathered)}
        if RANK == 0:
            single = make()
            single_history = single.fit(Xc, y, epochs=4, batch_size=BATCH, **options)
            result["weights"] = relative_difference(params, single.flat_params)
            result["history"] = max(
                abs(a - b) / max(abs(b), 1e-300)
                for key in single_history.history
                for a, b in zip(history.history[key], single_history.history[key])
            )
            result["keys"] = sorted(history.history) == sorted(single_history.history)
            result["step"] = model.optimizer_state.step == single.optimizer_state.step
        out[name] = result
    out["local"] = local_shards()
    return out


def local_shards():
    """shard="local": rank r holds an uneven contiguous part of the data; without
    shuffle the documented rule fixes every global minibatch, which one process
    reproduces with compute_gradients and apply_gradients."""
    X, labels, _, weights = data()
    points = [ROWS * r * r // (SIZE * SIZE) for r in range(SIZE + 1)]
    mine = slice(points[RANK], points[RANK + 1])
    per_sample = fastbp.regularizers.L2(1e-3, per_sample=True)

    def make():
        return classifier(sgd(), regularizer=per_sample)

    model = make()
    model.fit(
        X[mine],
        labels[mine],
        epochs=3,
        batch_size=BATCH,
        shuffle=False,
        sample_weight=weights[mine],
        comm=comm,
        shard="local",
    )
    result = {}
    if RANK == 0:
        single = make()
        single.build(FEATURES)
        counts = np.diff(points)
        steps = -(-ROWS // BATCH)
        for _ in range(3):
            for k in range(steps):
                rows = np.concatenate(
                    [
                        np.arange(start + n * k // steps, start + n * (k + 1) // steps)
                        for start, n in zip(points[:-1], counts)
                    ]
                )
                single.compute_gradients(X[rows], labels[rows], sample_weight=weights[rows])
                single.apply_gradients()
        result["weights"] = relative_difference(model.flat_params, single.flat_params)
    # With shuffle: the ranks stay identical and the loss falls.
    model = make()
    history = model.fit(X[mine], labels[mine], epochs=5, batch_size=BATCH, comm=comm, shard="local")
    gathered = comm.allgather(model.flat_params.copy())
    result["identical"] = all(np.array_equal(p, gathered[0]) for p in gathered)
    result["loss falls"] = history.history["loss"][-1] < history.history["loss"][0]
    return result


def errors():
    """Every error that must reach every rank: each rank records what it raised."""
    X, labels, _, _ = data()
    out = {}

    def attempt(name, function):
        try:
            function()
            out[name] = None
        except Exception as error:
            out[name] = [type(error).__name__, str(error)]

    units = 16 if RANK == 0 else 17
    attempt(
        "architecture",
        lambda: fastbp.Sequential(
            [fastbp.Dense(units, "relu"), fastbp.Dense(3, "softmax")], seed=1
        ).fit(X, labels, epochs=1, comm=comm),
    )
    bad = labels.copy()
    if RANK == 1:
        bad[5] = 7  # not a class of the 3 outputs, on one rank only
    attempt("bad data", lambda: classifier(sgd()).fit(X, bad, epochs=1, comm=comm))
    narrow = X[:, :5] if RANK == 1 else X
    attempt("width", lambda: classifier(sgd()).fit(narrow, labels, epochs=1, comm=comm))
    shifted = X + (RANK == 1)
    attempt("different data", lambda: classifier(sgd()).fit(shifted, labels, epochs=1, comm=comm))

    class StopOnRankZero(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if RANK == 0 and epoch == 1:
                self.model.stop_training = True

    attempt(
        "stop on one rank",
        lambda: classifier(sgd()).fit(X, labels, epochs=4, callbacks=[StopOnRankZero()], comm=comm),
    )

    class LearningRateOnRankOne(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if RANK == 1:
                self.model.optimizer.lr = 0.01

    attempt(
        "optimizer drift",
        lambda: classifier(sgd()).fit(
            X, labels, epochs=3, callbacks=[LearningRateOnRankOne()], comm=comm
        ),
    )
    return out


def abort():
    """A callback raises on rank 1 only: the job must end (comm.Abort)."""
    X, labels, _, _ = data()

    class Fail(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if RANK == 1 and epoch == 1:
                raise RuntimeError("callback failed on purpose")

    classifier(sgd()).fit(X, labels, epochs=50, callbacks=[Fail()], comm=comm)
    return {"finished": True}


def checkpoint_path(folder, epoch):
    return os.path.join(folder, f"ckpt-{epoch}.npz")


def killed(folder):
    """Checkpoints on rank 0 every epoch; rank 1 kills itself (SIGKILL) at the end of
    epoch 3, after rank 0 has written at least the checkpoint of epoch 2."""
    X, labels, _, _ = data()

    class Die(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if RANK == 1 and epoch == 2:
                os.kill(os.getpid(), signal.SIGKILL)

    callbacks = [ModelCheckpoint(checkpoint_path(folder, "{epoch}"), monitor="loss"), Die()]
    classifier(adam()).fit(
        X, labels, epochs=6, batch_size=BATCH, shuffle=False, callbacks=callbacks, comm=comm
    )
    return {"finished": True}


def resume(folder):
    """Resume from the latest checkpoint to 6 epochs in all; compare with one
    process's uninterrupted fit. Without shuffle: the trainer shuffles an epoch's
    order from the previous epoch's, which a model file does not keep, so a new fit
    (resumed or not) restarts the orders; the rest of the state (weights, Adam's
    moments and step, the dropout seed whose masks follow the step) is in the
    checkpoint, which is what this checks."""
    X, labels, _, _ = data()
    epoch = max(e for e in range(1, 7) if os.path.exists(checkpoint_path(folder, e)))
    model = fastbp.load(checkpoint_path(folder, epoch))
    model.fit(X, labels, epochs=6 - epoch, batch_size=BATCH, shuffle=False, comm=comm)
    result = {"resumed from": epoch, "epochs": len(model.history.epoch)}
    if RANK == 0:
        single = classifier(adam())
        single.fit(X, labels, epochs=6, batch_size=BATCH, shuffle=False)
        result["weights"] = relative_difference(model.flat_params, single.flat_params)
    return result


def estimators():
    """fastbp.sklearn's estimators with comm: every rank's coefficients and loss
    curve against the one-process fit (rank 0 runs it) from the same random_state,
    also with random_state=None (rank 0's stream is the one used)."""
    import warnings

    from fastbp.sklearn import MLPClassifier, MLPRegressor

    X, labels, target, weights = data()
    out = {}
    cases = {
        "classifier adam early stopping": (
            lambda seed: MLPClassifier(
                (9,),
                random_state=seed,
                max_iter=6,
                batch_size=BATCH,
                early_stopping=True,
                alpha=0.01,
            ),
            labels,
            None,
        ),
        "regressor sgd invscaling weights": (
            lambda seed: MLPRegressor(
                hidden_layer_sizes=(9,),
                solver="sgd",
                random_state=seed,
                max_iter=5,
                batch_size=BATCH,
                learning_rate="invscaling",
                learning_rate_init=0.05,
            ),
            target,
            weights,
        ),
    }
    for name, (make, y, w) in cases.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            many = make(3).fit(X, y, sample_weight=w, comm=comm)
            unseeded = make(None).fit(X, y, sample_weight=w, comm=comm)
            one = make(3).fit(X, y, sample_weight=w) if RANK == 0 else None
        flat = np.concatenate([c.ravel() for c in many.coefs_ + many.intercepts_])
        loose = np.concatenate([c.ravel() for c in unseeded.coefs_ + unseeded.intercepts_])
        result = {
            "identical": all(np.array_equal(flat, f) for f in comm.allgather(flat)),
            "unseeded identical": all(np.array_equal(loose, f) for f in comm.allgather(loose)),
            "n_iter": many.n_iter_,
        }
        if one is not None:
            ref = np.concatenate([c.ravel() for c in one.coefs_ + one.intercepts_])
            result["weights"] = relative_difference(flat, ref)
            result["curve"] = relative_difference(
                np.array(many.loss_curve_), np.array(one.loss_curve_)
            )
            result["same n_iter"] = many.n_iter_ == one.n_iter_
        out[name] = result
    return out


if __name__ == "__main__":
    scenario, folder = sys.argv[1], sys.argv[2]
    scenarios = {
        "equivalence": equivalence,
        "estimators": estimators,
        "errors": errors,
        "abort": abort,
        "killed": lambda: killed(folder),
        "resume": lambda: resume(folder),
    }
    result = scenarios[scenario]()
    with open(os.path.join(folder, f"{scenario}-{SIZE}-{RANK}.json"), "w") as file:
        json.dump(result, file)
