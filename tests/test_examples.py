"""Every example runs, at a small size, and reaches what it claims."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_example_is_tested():
    tested = {
        "xor",
        "house_prices",
        "classification",
        "online_learning",
        "backprop_vs_genetic",
        "vanishing_gradients",
        "dropout_early_stopping",
        "transfer_learning",
    }
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_xor(capsys):
    model = load("xor").main(["--epochs", "400"])
    assert "one hidden layer: accuracy 100%" in capsys.readouterr().out
    assert model.evaluate(load("xor").X, load("xor").y)["accuracy"] == 1.0


def test_house_prices():
    _, result = load("house_prices").main(["--samples", "1500", "--epochs", "40"])
    assert result["r2"] > 0.98


def test_classification(capsys):
    load("classification").main(["--samples", "200", "--epochs", "10"])
    accuracy = float(capsys.readouterr().out.split("test accuracy ")[1].split("%")[0])
    assert accuracy > 95


def test_online_learning():
    accuracies = load("online_learning").main(["--batches", "12"])
    assert len(accuracies) == 12 and accuracies[-1] > 0.9


def test_backprop_vs_genetic():
    backprop, genetic = load("backprop_vs_genetic").main(["--steps", "60"])
    assert len(backprop) == len(genetic) == 60
    # Losses never get worse for the elitist genetic algorithm; backprop ends lower
    # with far fewer loss evaluations.
    ga_losses = [loss for _, _, loss in genetic]
    assert all(b <= a + 1e-12 for a, b in zip(ga_losses, ga_losses[1:]))
    assert backprop[-1][2] < genetic[-1][2] and backprop[-1][1] < genetic[-1][1]


def test_vanishing_gradients():
    results = load("vanishing_gradients").main(["--depth", "20", "--epochs", "2"])
    ratio = {kind: norms[0] / norms[-1] for kind, (norms, _) in results.items()}
    assert ratio["sigmoid + glorot"] < 1e-8
    assert ratio["relu + he + residual"] > 1e-2


def test_dropout_early_stopping():
    results = load("dropout_early_stopping").main(["--epochs", "80"])
    test_loss = {name: test["loss"] for name, (_, test) in results.items()}
    assert test_loss["dropout"] < test_loss["plain"]
    assert test_loss["early stopping"] < test_loss["plain"]
    assert len(results["early stopping"][0]) < 80


def test_transfer_learning():
    transferred, from_scratch, frozen = load("transfer_learning").main(["--epochs", "40"])
    assert frozen and transferred > 0.95
