"""XOR: the classic problem no single layer can solve, learned by a hidden layer.

Run: python examples/xor.py
"""

import argparse

import numpy as np

import fastbp

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
y = np.array([0, 1, 1, 0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=500)
    args = parser.parse_args(argv)

    # A single layer (logistic regression) cannot separate XOR...
    linear = fastbp.Sequential([fastbp.Dense(1, "sigmoid")], optimizer=fastbp.Adam(lr=0.1), seed=0)
    linear.fit(X, y, epochs=args.epochs, batch_size=4)
    # ...a hidden layer of 4 tanh neurons can.
    model = fastbp.Sequential(
        [fastbp.Dense(4, "tanh"), fastbp.Dense(1, "sigmoid")], optimizer=fastbp.Adam(lr=0.1), seed=0
    )
    history = model.fit(X, y, epochs=args.epochs, batch_size=4)

    print(f"one layer:       accuracy {linear.evaluate(X, y)['accuracy']:.0%}")
    print(
        f"one hidden layer: accuracy {model.evaluate(X, y)['accuracy']:.0%},"
        f" loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.4f}"
    )
    for inputs, p in zip(X, model.predict(X)[:, 0]):
        print(f"  {inputs.astype(int)} -> P(1) = {p:.3f}")
    return model


if __name__ == "__main__":
    main()
