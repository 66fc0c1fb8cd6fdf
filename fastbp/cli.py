"""The ``fastbp`` command line: train, predict, evaluate, info, export, demo, bench.

``fastbp COMMAND --help`` shows each command's options and an example. Data files
are CSV with a header (Parquet when pyarrow is installed), read by
``fastbp._table``; the preprocessing (standardization, class names) is
``fastbp._pipeline``'s and travels in the model file. Bad input ends the command
with one line on stderr naming the file, row and column, and exit status 1 (2 for
bad arguments); never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import numpy as np

import fastbp

from . import _pipeline, _progress, activations
from ._labels import LabelEncoder
from ._table import DataError
from .callbacks import Callback, EarlyStopping
from .model import Sequential
from .optimizers import OPTIMIZERS
from .persistence import ModelFileError

EXIT_ERROR, EXIT_USAGE = 1, 2


class UsageError(Exception):
    """A bad argument: one line, exit status 2."""


class CommandError(Exception):
    """A command that cannot do what was asked: one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line (no usage block)."""

    def error(self, message):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _whole(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
    return value


def _positive_int(text):
    return _whole(text, 1)


def _count(text):
    return _whole(text, 0)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _fraction(text, low_inclusive=True):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _hidden(text):
    if text.strip() in ("", "0", "none"):
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected layer widths separated by commas (64,32), got {text!r}"
        ) from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"layer widths must be >= 1, got {text!r}")
    return sizes


def _activation(text):
    try:
        name = activations.canonical_name(text)
    except ValueError:
        name = None
    if name is None or name == "softmax":  # softmax is an output activation
        names = ", ".join(sorted(set(activations.ACTIVATIONS) - {"softmax"}))
        raise argparse.ArgumentTypeError(f"unknown activation {text!r}; one of {names}")
    return name


def _example(*lines):
    return "example:\n" + "\n".join(f"  {line}" for line in lines)


def build_parser():
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="fastbp",
        description="fastbp: train dense neural networks on CSV data, fast, on the CPU.",
        epilog=_example(
            "fastbp train iris.csv --target species --out iris.npz",
            "fastbp predict iris.npz new.csv --out predictions.csv",
        ),
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"fastbp {fastbp.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name, help, epilog, description=None):
        return commands.add_parser(
            name,
            help=help,
            description=description or help,
            epilog=epilog,
            formatter_class=formatter,
        )

    missing_help = (
        "cells that are empty, NA or NaN: error (the default) names the first; drop drops"
        " their rows; impute fills features with the training mean"
    )

    train = command(
        "train",
        "train a network on a CSV (or Parquet) file and save it",
        _example(
            "fastbp train houses.csv --target price --hidden 64,32 --epochs 50 --out houses.npz",
            "fastbp train iris.csv --target species --validation-split 0.2"
            " --early-stopping 5 --out iris.npz",
        )
        + "\n\nThe task is classification when the target holds text, or whole numbers"
        "\nwith at most 20 distinct values; regression otherwise (--task overrides)."
        "\nFeatures (every other column, all numeric) are standardized with the training"
        "\ndata's mean and standard deviation, kept in the model file.",
    )
    train.add_argument("data", metavar="DATA", help="CSV file with a header line, or .parquet")
    train.add_argument("--target", required=True, metavar="COLUMN", help="the column to predict")
    train.add_argument("--task", choices=("classification", "regression"))
    train.add_argument(
        "--hidden", type=_hidden, default=[64, 32], metavar="64,32", help="hidden layer widths"
    )
    train.add_argument("--activation", type=_activation, default="relu", metavar="NAME")
    train.add_argument("--dropout", type=_fraction, default=0.0, metavar="RATE")
    train.add_argument("--epochs", type=_positive_int, default=20, metavar="N")
    train.add_argument("--batch-size", type=_positive_int, default=32, metavar="N")
    train.add_argument("--lr", type=_positive_float, default=1e-3, metavar="X")
    train.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    train.add_argument(
        "--validation-split",
        type=_fraction,
        default=0.2,
        metavar="FRACTION",
        help="rows held out for the metrics (default 0.2; 0: none)",
    )
    train.add_argument(
        "--early-stopping",
        type=_count,
        default=None,
        metavar="PATIENCE",
        help="stop after PATIENCE epochs without a better validation loss, keep the best",
    )
    train.add_argument("--seed", type=_count, default=0, metavar="N")
    train.add_argument("--threads", type=_positive_int, default=None, metavar="N")
    train.add_argument("--missing", choices=_pipeline.MISSING, default="error", help=missing_help)
    train.add_argument("--quiet", action="store_true", help="print only the final lines")
    train.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")

    predict = command(
        "predict",
        "predict with a trained model",
        _example(
            "fastbp predict iris.npz new.csv --out predictions.csv --proba",
        )
        + "\n\nThe output has a column named after the target (the predicted class or value),"
        "\nand with --proba one column per class. Without --out it goes to stdout.",
    )
    predict.add_argument("model", metavar="MODEL")
    predict.add_argument("data", metavar="DATA")
    predict.add_argument("--out", metavar="FILE", help="CSV file to write (default: stdout)")
    predict.add_argument("--proba", action="store_true", help="add the class probabilities")
    predict.add_argument(
        "--missing",
        choices=_pipeline.MISSING,
        default="error",
        help=missing_help + " (with drop, a first column 'row' numbers the rows kept)",
    )

    evaluate = command(
        "evaluate",
        "the model's metrics on a labelled file",
        _example("fastbp evaluate iris.npz test.csv --target species"),
    )
    evaluate.add_argument("model", metavar="MODEL")
    evaluate.add_argument("data", metavar="DATA")
    evaluate.add_argument("--target", metavar="COLUMN", help="default: the training target")
    evaluate.add_argument(
        "--missing", choices=_pipeline.MISSING, default="error", help=missing_help
    )

    info = command(
        "info",
        "describe a model file",
        _example("fastbp info iris.npz"),
        description="architecture, parameter count, training settings, metrics, class names"
        " and fastbp version of a model file",
    )
    info.add_argument("model", metavar="MODEL")

    export = command(
        "export",
        "export a model (ONNX)",
        _example("fastbp export iris.npz --onnx iris.onnx")
        + "\n\nThe graph takes standardized features: `fastbp info` lists the means and"
        "\nscales. Needs the onnx extra (pip install 'fastbp[onnx]').",
    )
    export.add_argument("model", metavar="MODEL")
    export.add_argument("--onnx", required=True, metavar="OUT", help="ONNX file to write")

    demo = command(
        "demo",
        "train two small networks on generated data (what fastbp-demo does)",
        _example("fastbp demo", "fastbp demo --epochs 30 --samples 500 --quiet"),
    )
    _demo_arguments(demo)

    bench = command(
        "bench",
        "time fastbp against NumPy by hand, PyTorch and scikit-learn on this machine",
        _example("fastbp bench --quick", "fastbp bench --chart bench.png")
        + "\n\nEach network's training step (forward, loss, backward, SGD update) is timed"
        "\nby every implementation installed, warmed up and interleaved; the table gives"
        "\nmedians and how many times slower than fastbp each one is.",
    )
    bench.add_argument("--quick", action="store_true", help="small networks, a few seconds")
    bench.add_argument("--repeats", type=_positive_int, default=None, metavar="N")
    bench.add_argument("--threads", type=_positive_int, default=None, metavar="N")
    bench.add_argument(
        "--chart", metavar="PNG", help="write a chart there (needs matplotlib)", default=None
    )
    return parser


def _demo_arguments(parser):
    parser.add_argument("--epochs", type=_positive_int, default=30, metavar="N")
    parser.add_argument(
        "--samples",
        type=_demo_samples,
        default=1000,
        metavar="N",
        help="points per spiral arm (at least 20)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _demo_samples(text):
    value = _positive_int(text)
    if value < 20:
        raise argparse.ArgumentTypeError(f"expected at least 20 samples, got {text!r}")
    return value


# -- the commands -------------------------------------------------------------------
def _load(path):
    try:
        model = Sequential.load(path)
    except FileNotFoundError:
        raise CommandError(f"{path}: no such model file") from None
    except IsADirectoryError:
        raise CommandError(f"{path}: is a folder, not a model file") from None
    except ModelFileError as exc:
        raise CommandError(str(exc)) from None
    return model


def _section(model, path):
    if model.preprocessing is None:
        raise CommandError(
            f"{path}: this model was not trained by the command line (it has no feature"
            " names or scaling); predict with it from Python"
        )
    return model.preprocessing


def _read(path, **columns):
    from . import _table

    return _table.read(path, **columns)


def _split(n, fraction, y, classification, seed):
    """Row indexes (train, held out): ``fraction`` of each class (of all rows for
    regression), drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    if fraction == 0:
        return np.arange(n), np.arange(0)
    if classification:
        held = [
            rng.permutation(rows)[: int(round(rows.size * fraction))]
            for rows in (np.flatnonzero(y == c) for c in np.unique(y))
        ]
        held = np.sort(np.concatenate(held))
    else:
        held = np.sort(rng.permutation(n)[: int(round(n * fraction))])
    keep = np.ones(n, dtype=bool)
    keep[held] = False
    return np.flatnonzero(keep), held


def _held_out_last(X, train_rows, held_rows, block=1 << 14):
    """Views (training, held out) of ``X`` after reordering its rows in place: the
    training rows first, then the held-out rows, each in their order.

    The same matrices as ``X[train_rows]`` and ``X[held_rows]`` without a copy of X
    (memory: X plus the held-out rows once, not X twice). The held-out rows are set
    aside, then the training rows move up a block at a time: ``train_rows`` is
    increasing, so a row only ever moves to a lower index, onto a row already moved
    or held out, never onto one still to be read."""
    held = X[held_rows]
    n = train_rows.size
    for start in range(0, n, block):
        stop = min(start + block, n)
        X[start:stop] = X[train_rows[start:stop]]  # the gather is a copy: no overlap
    X[n:] = held
    return X[:n], X[n:]


def _shown_metrics(metrics):
    parts = []
    for key, value in metrics.items():
        if key == "accuracy":
            parts.append(f"accuracy {value:.1%}")
        else:
            parts.append(f"{key.replace('_', ' ')} {value:.4g}")
    return ", ".join(parts)


def train(args, out):
    table = _read(args.data, target=args.target)
    task = _pipeline.infer_task(table, args.task)
    rows_read = table.X.shape[0]
    dropped = _pipeline.handle_missing(table, args.missing)
    section, y = _pipeline.fit(table, task)
    n = table.X.shape[0]
    train_rows, held_rows = _split(n, args.validation_split, y, task == "classification", args.seed)
    if args.validation_split and (held_rows.size == 0 or train_rows.size == 0):
        raise CommandError(
            f"{args.data}: {n} rows are too few to hold out {args.validation_split:.0%} of them"
            " (--validation-split 0 trains on all)"
        )
    if held_rows.size:
        X_train, X_held = _held_out_last(table.X, train_rows, held_rows)
        y_train, y_held = y[train_rows], y[held_rows]
        truth_held = y_held if task == "classification" else table.target[held_rows]
    else:
        X_train, y_train = table.X, y
    table = None  # its X is now X_train and X_held (views), the rest is not needed
    classes = section["classes"]
    n_outputs = len(classes) if classes else 1
    layers = []
    for width in args.hidden:
        layers.append(fastbp.Dense(width, args.activation))
        if args.dropout:
            layers.append(fastbp.Dropout(args.dropout))
    layers.append(fastbp.Dense(n_outputs, "softmax" if classes else None))
    optimizer = OPTIMIZERS[args.optimizer](lr=args.lr)
    model = Sequential(
        layers,
        loss="cross_entropy" if classes else "mse",
        optimizer=optimizer,
        seed=args.seed,
        threads=args.threads,
        input_dim=X_train.shape[1],
    )
    what = (
        f"a classifier of {section['target']!r} ({len(classes)} classes: "
        + ", ".join(classes[:6])
        + (", ..." if len(classes) > 6 else "")
        + ")"
        if classes
        else f"a regression of {section['target']!r}"
    )
    widths = "-".join(str(w) for w in [X_train.shape[1], *args.hidden, n_outputs])
    say = (lambda *a: None) if args.quiet else (lambda text: print(text, file=out, flush=True))
    say(
        f"training {what} on {os.path.basename(args.data)}: {rows_read:,} rows"
        + (f" ({dropped:,} with missing values dropped)" if dropped else "")
        + f", {X_train.shape[1]} features"
    )
    say(
        f"network {widths}, {args.activation}"
        + (f", dropout {args.dropout}" if args.dropout else "")
        + f", {model.count_params():,} parameters; {args.optimizer} lr {args.lr:g},"
        f" {args.epochs} epochs of minibatches of {args.batch_size}"
        + (f"; {held_rows.size:,} rows held out" if held_rows.size else "")
    )
    n_batches = -(-X_train.shape[0] // args.batch_size)
    callbacks = [_Progress(0 if args.quiet else 1, args.epochs, n_batches)]
    if args.early_stopping is not None:
        callbacks.append(
            EarlyStopping(
                monitor="val_loss" if held_rows.size else "loss",
                patience=args.early_stopping,
                restore_best_weights=True,
            )
        )
    fit_started = time.perf_counter()
    model.fit(
        X_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        validation_data=(X_held, y_held) if held_rows.size else None,
        callbacks=callbacks,
    )
    fit_seconds = time.perf_counter() - fit_started
    epochs_run = len(model.history.epoch)
    speed = X_train.shape[0] * epochs_run / max(fit_seconds, 1e-9)
    if held_rows.size:
        metrics = _pipeline.metrics(section, model, X_held, truth_held)
        where = f"held out ({held_rows.size:,} rows)"
    else:
        truth = y_train if classes else _pipeline.outputs(section, y_train.astype(np.float64))
        metrics = _pipeline.metrics(section, model, X_train, truth)
        where = "on the training data (nothing held out)"
    section["metrics"] = metrics
    section["training"] = {
        "data": os.path.basename(args.data),
        "rows": int(n),
        "training_rows": int(X_train.shape[0]),
        "held_out_rows": int(held_rows.size),
        "hidden": ",".join(str(w) for w in args.hidden) or "none",
        "activation": args.activation,
        "dropout": args.dropout,
        "epochs": args.epochs,
        "epochs_run": epochs_run,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "early_stopping": args.early_stopping,
        "seed": args.seed,
        "missing": args.missing,
        "seconds": round(fit_seconds, 3),
        "samples_per_second": round(speed, 1),
        "fastbp_version": fastbp.__version__,
    }
    model.preprocessing = section
    try:
        path = model.save(args.out)
    except OSError as exc:
        raise CommandError(f"{args.out}: cannot write the model: {exc.strerror or exc}") from None
    print(
        f"{where}: {_shown_metrics(metrics)}; trained {epochs_run} epoch"
        f"{'s' if epochs_run != 1 else ''} in"
        f" {fit_seconds:.2f}s, {speed:,.0f} samples/s; saved {path}",
        file=out,
    )
    return 0


class _Progress(Callback):
    """A fit's progress as the command line shows it: the bar of ``verbose=1``, with
    each epoch's line above it."""

    def __init__(self, verbose, epochs, n_batches):
        super().__init__()
        self.verbose, self.epochs, self.n_batches = verbose, epochs, n_batches

    def on_train_begin(self, logs=None):
        first = len(self.model.history.epoch)
        self.display = _progress.make(
            self.verbose, self.epochs, self.n_batches, first, epoch_lines=True
        )
        self.done, self.started = 0, time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.done, self.started = 0, time.perf_counter()

    def on_batch_chunk_end(self, batch, logs=None):
        self.display.batches(batch - self.done)
        self.done = batch

    def on_epoch_end(self, epoch, logs=None):
        self.display.epoch_end(epoch, dict(logs), time.perf_counter() - self.started)

    def on_train_end(self, logs=None):
        self.display.close()


def _predict_table(model, section, args):
    table = _read(args.data, features=section["features"], ignore=(section["target"],))
    dropped = _pipeline.handle_missing(
        table, args.missing, fill=_pipeline.fill_values(section), need_target=False
    )
    return table, _pipeline.features(section, table), dropped


def predict(args, out):
    model = _load(args.model)
    section = _section(model, args.model)
    table, X, dropped = _predict_table(model, section, args)
    predicted = model.predict(X)
    classes = section["classes"]
    if args.proba and not classes:
        raise CommandError(f"{args.model}: --proba needs a classifier; this model is a regression")
    header = ([] if not dropped else ["row"]) + [section["target"]]
    columns = [] if not dropped else [table.rows]
    if classes:
        columns.append(LabelEncoder(classes).decode(predicted.argmax(axis=1)))
        if args.proba:
            header += [f"proba_{name}" for name in classes]
            columns += [predicted[:, k] for k in range(len(classes))]
    else:
        columns.append(_pipeline.outputs(section, predicted[:, 0].astype(np.float64)))
    target = sys.stdout if args.out is None else None
    try:
        file = target or open(args.out, "w", newline="")
    except OSError as exc:
        raise CommandError(f"{args.out}: cannot write: {exc.strerror or exc}") from None
    try:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        formatted = [
            column if column.dtype == object else _format_numbers(column) for column in columns
        ]
        writer.writerows(zip(*formatted))
    finally:
        if target is None:
            file.close()
    if args.out is not None:
        print(f"wrote {len(X):,} predictions to {args.out}", file=out)
    return 0


def _format_numbers(column):
    if column.dtype.kind in "iu":
        return column.astype(str)
    return np.char.mod("%.7g", column.astype(np.float64))


def evaluate(args, out):
    model = _load(args.model)
    section = _section(model, args.model)
    target = args.target or section["target"]
    table = _read(args.data, target=target, features=section["features"])
    table.target_name = target
    _pipeline.handle_missing(table, args.missing, fill=_pipeline.fill_values(section))
    y = _pipeline.targets(section, table)
    X = _pipeline.features(section, table)
    metrics = _pipeline.metrics(section, model, X, y)
    print(f"{os.path.basename(args.data)}: {len(y):,} rows", file=out)
    for key, value in metrics.items():
        shown = f"{value:.4f}" + (f" ({value:.1%})" if key == "accuracy" else "")
        print(f"  {key:<10} {shown}", file=out)
    return 0


def info(args, out):
    model = _load(args.model)
    section = model.preprocessing
    print(f"{args.model}: a fastbp model", file=out)
    print(model.summary(), file=out)
    print(
        f"trained {model.optimizer_state.step:,} steps over {len(model.history.epoch)} epochs",
        file=out,
    )
    if section is None:
        print("not trained by the command line: no feature names or scaling", file=out)
    else:
        features = section["features"]
        print(
            f"features ({len(features)}): "
            + ", ".join(features[:20])
            + (f", ... ({len(features) - 20} more)" if len(features) > 20 else ""),
            file=out,
        )
        print(f"target {section['target']!r}: {section['task']}", file=out)
        if section["classes"]:
            print(f"classes ({len(section['classes'])}): {', '.join(section['classes'])}", file=out)
        training = section.get("training", {})
        if training:
            shown = ", ".join(
                f"{key} {_setting(value)}"
                for key, value in training.items()
                if key != "fastbp_version"
            )
            print(f"training: {shown}", file=out)
        if section.get("metrics"):
            print(f"metrics: {_shown_metrics(section['metrics'])}", file=out)
        trained_with = training.get("fastbp_version")
        if trained_with:
            print(
                f"trained with fastbp {trained_with}; this is fastbp {fastbp.__version__}", file=out
            )
            return 0
    print(f"fastbp {fastbp.__version__}", file=out)
    return 0


def _setting(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return str(value)


def export(args, out):
    model = _load(args.model)
    to_onnx = getattr(model, "to_onnx", None)
    if to_onnx is None:
        raise CommandError(
            "this fastbp cannot export ONNX (its onnx feature is missing): install a fastbp"
            " with ONNX export and its extra, pip install 'fastbp[onnx]'"
        )
    try:
        written = to_onnx(args.onnx)
    except ImportError as exc:
        raise CommandError(
            f"ONNX export needs the onnx extra: pip install 'fastbp[onnx]' ({exc})"
        ) from None
    except OSError as exc:
        raise CommandError(f"{args.onnx}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {written if isinstance(written, str) else args.onnx}", file=out)
    if model.preprocessing is not None:
        print(
            "the graph takes standardized features: (x - mean) / scale, as `fastbp info`"
            " lists them",
            file=out,
        )
    return 0


def demo(args, out):
    from . import _demo

    return _demo.run(epochs=args.epochs, samples=args.samples, quiet=args.quiet, out=out)


def bench(args, out):
    from . import _bench

    return _bench.run(
        quick=args.quick, repeats=args.repeats, threads=args.threads, chart=args.chart, out=out
    )


COMMANDS = {
    "train": train,
    "predict": predict,
    "evaluate": evaluate,
    "info": info,
    "export": export,
    "demo": demo,
    "bench": bench,
}


def _run(function, args):
    try:
        return function(args, sys.stdout)
    except (DataError, CommandError) as exc:
        print(f"fastbp {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (ValueError, FloatingPointError) as exc:  # refused by fastbp's own checks
        print(f"fastbp {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"fastbp {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastbp predict ... | head`
        sys.stderr.close()
        return EXIT_ERROR


def main(argv=None):
    """The ``fastbp`` console script and ``python -m fastbp``."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    return _run(COMMANDS[args.command], args)


def demo_main(argv=None):
    """The ``fastbp-demo`` console script: ``fastbp demo``."""
    parser = _Parser(prog="fastbp-demo", description="fastbp's demo (as fastbp demo)")
    _demo_arguments(parser)
    parser.add_argument("--version", action="version", version=f"fastbp {fastbp.__version__}")
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    args.command = "demo"
    return _run(demo, args)
