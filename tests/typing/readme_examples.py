"""The README's examples as a typed program: ``mypy --strict`` checks it against
fastbp's annotations (.ci/typing), and tests/test_api.py runs it."""

import os
import tempfile
from typing import Any

import numpy as np
from numpy.typing import NDArray

import fastbp
from fastbp import Dense, Dropout
from fastbp.callbacks import EarlyStopping


def classification() -> tuple[float, dict[str, float], NDArray[np.floating]]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    model = fastbp.Sequential(
        [Dense(32, "relu"), Dropout(0.2), Dense(2, "softmax")],
        loss="cross_entropy",
        optimizer=fastbp.Adam(lr=0.01),
        seed=0,
    )
    history = model.fit(
        X,
        y,
        epochs=5,
        batch_size=32,
        validation_split=0.2,
        callbacks=[EarlyStopping(patience=5, restore_best_weights=True)],
    )
    last: float = history.history["val_accuracy"][-1]
    metrics = model.evaluate(X, y)
    probabilities = model.predict(X[:5])
    with tempfile.TemporaryDirectory() as folder:
        path = model.save(os.path.join(folder, "model.npz"))
        loaded = fastbp.load(path)
        assert np.array_equal(loaded.predict(X[:5]), probabilities)
    return last, metrics, probabilities


def hand_written_loop() -> float:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = X.sum(axis=1)
    hidden, out = fastbp.Dense(16, "tanh"), fastbp.Dense(1)
    mse, sgd = fastbp.MSE(), fastbp.SGD(lr=0.1)
    loss = 0.0
    for _ in range(100):
        loss = mse.forward(out.forward(hidden.forward(X)), y.reshape(-1, 1))
        hidden.backward(out.backward(mse.backward()))
        sgd.step(hidden.params + out.params, hidden.grads + out.grads)
    return loss


def the_rest_of_the_model() -> tuple[int, float, int]:
    """The README's feature list: residual blocks, the other optimizers and callbacks,
    classes, gradients, weights, the two halves of a step, online learning."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 6))
    y = (X[:, 0] > 0).astype(int)
    optimizers: list[fastbp.Optimizer] = [
        fastbp.RMSProp(lr=0.01, momentum=0.5, centered=True),
        fastbp.AdamW(lr=0.01),
        fastbp.Adagrad(lr=0.05, clipnorm=1.0),
    ]
    for optimizer in optimizers:
        model = fastbp.Sequential(
            [Dense(6, "tanh"), fastbp.Residual([Dense(6, "relu")]), Dense(2, "softmax")],
            optimizer=optimizer,
            seed=1,
            input_dim=6,
        )
        with tempfile.TemporaryDirectory() as folder:
            model.fit(
                X,
                y,
                epochs=3,
                validation_split=0.25,
                callbacks=[
                    fastbp.callbacks.ModelCheckpoint(os.path.join(folder, "best.npz")),
                    fastbp.callbacks.ReduceLROnPlateau(patience=1),
                    fastbp.callbacks.LearningRateScheduler(lambda epoch: 0.01 / (1 + epoch)),
                ],
            )
    classes = model.predict_classes(X)
    loss, gradients = model.loss_and_gradients(X, y)
    saliency = model.input_gradient(X, y)
    model.set_weights([(w * 0.5, b) for w, b in model.get_weights()])
    model.compute_gradients(X[:32], y[:32])
    model.apply_gradients()
    model.partial_fit(X, y, classes=[0, 1])
    assert saliency.shape == X.shape and len(gradients) == 3 and model.summary()
    return int(classes.sum()), loss, model.optimizer_state.step


def penalties_schedules_and_helpers() -> float:
    """Regularizers, schedules, a Huber loss and the activation helpers."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 3))
    y = X.sum(axis=1)
    model = fastbp.Sequential(
        [
            Dense(8, "elu", kernel_regularizer=fastbp.regularizers.L2(1e-3)),
            Dense(1, bias_regularizer=fastbp.regularizers.L1L2(1e-4, 1e-4)),
        ],
        loss=fastbp.losses.Huber(delta=0.5),
        optimizer=fastbp.SGD(lr=0.05, momentum=0.9),
        seed=2,
    )
    schedule = fastbp.schedules.CosineDecay(0.05, total_epochs=5, warmup_epochs=1)
    model.fit(X, y, epochs=5, callbacks=[fastbp.callbacks.LearningRateScheduler(schedule)])
    z = fastbp.activations.apply(X, "tanh")
    slope = fastbp.activations.derivative(z, np.ones_like(z), "tanh")
    return float(slope.mean()) + model.evaluate(X, y)["loss"]


class EpochCounter(fastbp.callbacks.Callback):
    """A user's own callback, typed against the hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs += 1


def initializers_layers_and_lookups() -> int:
    """Initializers by name, value and function; a user callback; lookups by name."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(50, 4))
    y = rng.integers(0, 3, 50)
    counter = EpochCounter()
    layers: list[fastbp.Layer] = [
        Dense(5, "relu", init="he_normal", bias_init=0.1),
        Dense(5, "tanh", init=fastbp.initializers.glorot_uniform),
        Dense(3, "softmax", init=fastbp.initializers.Constant(0.01)),
    ]
    model = fastbp.Sequential(
        layers,
        loss=fastbp.losses.get_loss("cross_entropy"),
        optimizer=fastbp.optimizers.get_optimizer("adam"),
        dtype="float64",
    )
    model.fit(X, y, epochs=2, callbacks=[counter])
    weights = fastbp.initializers.initialize("lecun_normal", (4, 5), rng, np.float32)
    name = fastbp.activations.canonical_name("logistic")
    assert weights.shape == (4, 5) and name == "sigmoid"
    return counter.epochs + len(model.history)


if __name__ == "__main__":
    print(classification()[:2], hand_written_loop(), the_rest_of_the_model())
    print(penalties_schedules_and_helpers(), initializers_layers_and_lookups())
