"""The schema of a model's configuration: every field's type, and the range of those
that no constructor checks, in one table.

A configuration (``Sequential.get_config()``, the JSON document of a model file)
may come from an untrusted file. ``check_model`` and ``check_file`` walk it against
the table below before anything is built: a field of the wrong type, a count, seed
or size out of range, a missing or unknown key raises ``ConfigError`` naming the
field (``layers[2].config.units``). They return a normalized copy (numbers as
Python floats, pairs as tuples), so what follows never meets a huge integer where
a float belongs, a bool where an int belongs, or a list where a dict belongs.

The ranges of the layers', loss's and optimizer's own arguments (a learning rate
> 0, a dropout rate in [0, 1), an activation name) are their constructors' to
check: ``fastbp.persistence`` builds them and names the field when one refuses.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from ._threads import MAX_THREADS
from .losses import LOSSES

# Counts (optimizer steps, epochs) beyond this cannot come from training, and would
# lose exactness as floats.
MAX_COUNT = 2**53
# Layer widths and input features: BLAS takes 32-bit sizes.
MAX_WIDTH = 2**31 - 1
# Longest string field (names, versions).
MAX_TEXT = 256


class ConfigError(ValueError):
    """A configuration field of the wrong type or out of range."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where or 'the configuration'}: {problem}")
        self.where = where


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


# -- the field types: each checks a value and returns it normalized --------------
class Int:
    """An integer (not a bool) in [low, high]."""

    def __init__(self, low: int, high: int | None = None) -> None:
        self.low, self.high = low, high

    def __call__(self, value: Any, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(where, f"must be an integer, got {_describe(value)}")
        if value < self.low or (self.high is not None and value > self.high):
            bounds = f">= {self.low}" if self.high is None else f"in [{self.low}, {self.high}]"
            raise ConfigError(where, f"must be an integer {bounds}, got {_describe(value)}")
        return int(value)


class Number:
    """A real number (an int or a float, not a bool): finite unless ``finite`` is
    False (recorded metrics may be NaN)."""

    def __init__(self, finite: bool = True) -> None:
        self.finite = finite

    def __call__(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(where, f"must be a number, got {_describe(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(where, "is a number too large for a float") from None
        if self.finite and not math.isfinite(number):
            raise ConfigError(where, f"must be a finite number, got {number}")
        return number


class Bool:
    def __call__(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(where, f"must be true or false, got {_describe(value)}")
        return value


class Text:
    """A string (one of ``choices`` when given)."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def __call__(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise ConfigError(where, f"must be a string, got {_describe(value)}")
        if self.choices and value not in self.choices:
            raise ConfigError(where, f"must be one of {list(self.choices)}, got {value!r}")
        return value


class Nullable:
    """None, or a value of ``kind``."""

    def __init__(self, kind: Any) -> None:
        self.kind = kind

    def __call__(self, value: Any, where: str) -> Any:
        return None if value is None else self.kind(value, where)


class Either:
    """A value of one of ``kinds`` (tried in order), ``what`` in messages."""

    def __init__(self, what: str, *kinds: Any) -> None:
        self.what, self.kinds = what, kinds

    def __call__(self, value: Any, where: str) -> Any:
        for kind in self.kinds:
            try:
                return kind(value, where)
            except ConfigError:
                pass
        raise ConfigError(where, f"must be {self.what}, got {_describe(value)}")


class ListOf:
    """A list (or tuple) of values of ``kind``; ``length``: exactly that many."""

    def __init__(self, kind: Any, min_length: int = 0, length: int | None = None) -> None:
        self.kind, self.min_length, self.length = kind, min_length, length

    def __call__(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"must be a list, got {_describe(value)}")
        if self.length is not None and len(value) != self.length:
            raise ConfigError(where, f"must hold {self.length} values, got {len(value)}")
        if len(value) < self.min_length:
            raise ConfigError(where, f"must hold at least {self.min_length} value(s)")
        return [self.kind(item, _at(where, i)) for i, item in enumerate(value)]


class Pair(ListOf):
    def __init__(self, kind: Any) -> None:
        super().__init__(kind, length=2)

    def __call__(self, value: Any, where: str) -> tuple[Any, ...]:
        return tuple(super().__call__(value, where))


class MapOf:
    """A dict of string keys to values of ``kind``."""

    def __init__(self, kind: Any) -> None:
        self.kind = kind

    def __call__(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(where, f"must be a dict, got {_describe(value)}")
        checked = {}
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > MAX_TEXT:
                raise ConfigError(where, f"has a key that is not a name: {_describe(key)}")
            checked[key] = self.kind(item, _at(where, key))
        return checked


class Record:
    """A dict with exactly the keys of ``fields`` (and any of ``optional``)."""

    def __init__(self, fields: dict[str, Any], optional: dict[str, Any] | None = None) -> None:
        self.fields, self.optional = fields, optional or {}

    def __call__(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(where, f"must be a dict, got {_describe(value)}")
        missing = [key for key in self.fields if key not in value]
        if missing:
            raise ConfigError(_at(where, missing[0]), "is missing")
        unknown = [key for key in value if key not in self.fields and key not in self.optional]
        if unknown:
            raise ConfigError(where, f"has an unknown field {_describe(unknown[0])}")
        kinds = {**self.fields, **self.optional}
        return {key: kinds[key](item, _at(where, key)) for key, item in value.items()}


class Tagged:
    """A dict whose ``tag`` field (the name of a ``what``) chooses its Record."""

    def __init__(self, what: str, tag: str, records: dict[str, Record]) -> None:
        self.what, self.tag, self.records = what, tag, records

    def __call__(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ConfigError(where, f"must be a dict, got {_describe(value)}")
        name = Text()(value.get(self.tag), _at(where, self.tag))
        if name not in self.records:
            raise ConfigError(
                _at(where, self.tag),
                f"unknown {self.what} {name!r}; expected one of {sorted(self.records)}",
            )
        return self.records[name](value, where)


# -- the table ----------------------------------------------------------------------
NUMBER, COUNT, FLAG, NAME = Number(), Int(0, MAX_COUNT), Bool(), Text()
WIDTH = Int(1, MAX_WIDTH)
REGULARIZER = Nullable(Record({"l1": NUMBER, "l2": NUMBER}, {"per_sample": FLAG}))
DENSE = Record(
    {
        "units": WIDTH,
        "activation": Nullable(NAME),
        "negative_slope": NUMBER,
        "alpha": NUMBER,
        "init": Nullable(Either("a name or a number", NAME, NUMBER)),  # None: a callable, not saved
        "bias_init": Either("a name or a number", NAME, NUMBER),
        "kernel_regularizer": REGULARIZER,
        "bias_regularizer": REGULARIZER,
        "input_dim": Nullable(WIDTH),
    }
)
DROPOUT = Record({"rate": NUMBER})


def _layer_entry(config: Record, tag: str) -> Record:
    return Record({"class": Text(tag), "config": config, "trainable": FLAG})


INNER_LAYER = Tagged(
    "layer class",
    "class",
    {"Dense": _layer_entry(DENSE, "Dense"), "Dropout": _layer_entry(DROPOUT, "Dropout")},
)
RESIDUAL = Record({"layers": ListOf(INNER_LAYER, min_length=1)})
LAYER = Tagged(
    "layer class", "class", {**INNER_LAYER.records, "Residual": _layer_entry(RESIDUAL, "Residual")}
)

CLIPPING = {"clipnorm": Nullable(NUMBER), "clipvalue": Nullable(NUMBER)}
_ADAM = Record(
    {"lr": NUMBER, "betas": Pair(NUMBER), "eps": NUMBER, "weight_decay": NUMBER},
    {**CLIPPING, "eps_uncorrected": FLAG},
)
OPTIMIZER_CONFIGS = {
    "SGD": Record(
        {"lr": NUMBER, "momentum": NUMBER, "nesterov": FLAG, "weight_decay": NUMBER}, CLIPPING
    ),
    "Adam": _ADAM,
    "AdamW": _ADAM,
    "RMSProp": Record(
        {
            "lr": NUMBER,
            "alpha": NUMBER,
            "eps": NUMBER,
            "weight_decay": NUMBER,
            "momentum": NUMBER,
            "centered": FLAG,
        },
        CLIPPING,
    ),
    "Adagrad": Record(
        {
            "lr": NUMBER,
            "lr_decay": NUMBER,
            "weight_decay": NUMBER,
            "initial_accumulator_value": NUMBER,
            "eps": NUMBER,
        },
        CLIPPING,
    ),
}
OPTIMIZER = Tagged(
    "optimizer",
    "class",
    {
        name: Record({"class": Text(name), "config": config, "iterations": COUNT})
        for name, config in OPTIMIZER_CONFIGS.items()
    },
)
# numpy.random.default_rng's bit generator, as ``bit_generator.state`` gives it.
RNG_STATE = Record(
    {
        "bit_generator": Text("PCG64"),
        "state": Record({"state": Int(0, 2**128 - 1), "inc": Int(0, 2**128 - 1)}),
        "has_uint32": Int(0, 1),
        "uinteger": Int(0, 2**32 - 1),
    }
)
# What a front end (the command line, ``fastbp._pipeline``) did to the data before
# the model saw it; optional, so files without it load as before.
PREPROCESSING = Record(
    {
        "features": ListOf(NAME, min_length=1),
        "mean": ListOf(NUMBER),
        "scale": ListOf(NUMBER),
        "target": NAME,
        "task": Text("classification", "regression"),
        "classes": Nullable(ListOf(NAME, min_length=2)),
        "target_mean": NUMBER,
        "target_scale": NUMBER,
    },
    {
        "training": MapOf(
            Nullable(Either("a number, a name or true or false", NUMBER, NAME, FLAG))
        ),
        "metrics": MapOf(Number(False)),
    },
)
MODEL = Record(
    {
        "layers": ListOf(LAYER, min_length=1),
        "loss": Text(*LOSSES),
        # The loss's own arguments (Huber's delta, a reduction name, Poisson's
        # half_deviance flag): which ones, and their ranges, are its constructor's.
        "loss_config": MapOf(Either("a number, a name or true or false", NUMBER, NAME, FLAG)),
        "optimizer": OPTIMIZER,
        "dtype": Text("float32", "float64"),
        "seed": Nullable(Int(0)),
        "threads": Nullable(Int(1, MAX_THREADS)),
        "input_dim": WIDTH,
        "rng_state": RNG_STATE,
        "dropout_seed": Int(0, 2**64 - 1),  # a uint64 of the compiled plan
        "history": Record({"epoch": ListOf(COUNT), "history": MapOf(ListOf(Number(False)))}),
        "epochs_done": COUNT,
    },
    {"preprocessing": PREPROCESSING},
)
FILE = Record(
    {
        **MODEL.fields,
        "format": NAME,
        "format_version": Int(1),
        "fastbp_version": NAME,
    },
    MODEL.optional,
)


def _check_preprocessing(config: dict[str, Any]) -> dict[str, Any]:
    """The preprocessing section against the model it feeds: one mean and one
    positive scale per input feature, distinct names, one class per output."""
    section = config.get("preprocessing")
    if section is None:
        return config
    n_features = len(section["features"])
    if n_features != config["input_dim"]:
        raise ConfigError(
            "preprocessing.features",
            f"names {n_features} features for a model of input_dim {config['input_dim']}",
        )
    if len(set(section["features"])) != n_features:
        raise ConfigError("preprocessing.features", "names a feature twice")
    for key in ("mean", "scale"):
        if len(section[key]) != n_features:
            raise ConfigError(
                f"preprocessing.{key}",
                f"holds {len(section[key])} values for {n_features} features",
            )
    for key, values in (("scale", section["scale"]), ("target_scale", [section["target_scale"]])):
        if not all(value > 0 for value in values):
            raise ConfigError(f"preprocessing.{key}", "must be > 0")
    classes = section["classes"]
    if (section["task"] == "classification") != (classes is not None):
        raise ConfigError("preprocessing.classes", f"does not fit the task {section['task']!r}")
    if classes is not None and len(set(classes)) != len(classes):
        raise ConfigError("preprocessing.classes", "names a class twice")
    return config


def check_model(config: Any) -> dict[str, Any]:
    """``config`` (``Sequential.get_config()``'s form) checked and normalized."""
    return _check_preprocessing(MODEL(config, ""))


def check_file(config: Any) -> dict[str, Any]:
    """A model file's JSON document checked and normalized."""
    return _check_preprocessing(FILE(config, ""))
