"""Class labels as the command line sees them: names (strings) and their codes.

A target column of text, or of numbers used as classes, becomes the codes 0 to
K - 1 of its K distinct values in sorted order (numbers by value, text as strings),
as scikit-learn's LabelEncoder orders them; the names are kept so that predictions
come back as the labels of the data.
"""

from __future__ import annotations

import numpy as np


def number_name(value):
    """How a number shows as a class name: "3" for 3.0, "0.5" for 0.5."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class LabelEncoder:
    """Codes 0 to K - 1 for K class names.

    Parameters
    ----------
    classes : list of str
        The names, in code order.
    """

    def __init__(self, classes):
        self.classes = list(classes)
        self._index = {name: code for code, name in enumerate(self.classes)}

    @classmethod
    def from_text(cls, texts, codes):
        """The encoder of the distinct ``texts`` and ``codes`` (indexes into texts,
        -1 for missing) recoded to sorted order (-1 stays)."""
        order = sorted(range(len(texts)), key=lambda i: texts[i])
        remap = np.empty(len(texts) + 1, dtype=np.int32)
        remap[np.asarray(order, dtype=np.intp)] = np.arange(len(texts), dtype=np.int32)
        remap[-1] = -1
        return cls([texts[i] for i in order]), remap[codes]

    @classmethod
    def from_numbers(cls, values):
        """The encoder of the distinct finite ``values`` (sorted by value) and their
        codes (-1 for NaN)."""
        values = np.asarray(values, dtype=np.float64)
        known = ~np.isnan(values)
        distinct, inverse = np.unique(values[known], return_inverse=True)
        codes = np.full(values.shape, -1, dtype=np.int32)
        codes[known] = inverse
        return cls([number_name(v) for v in distinct]), codes

    def encode_names(self, names):
        """Codes of ``names`` (a list of str; None for missing: -1). Returns (codes,
        index of the first unknown name or None)."""
        codes = np.empty(len(names), dtype=np.int32)
        for i, name in enumerate(names):
            code = -1 if name is None else self._index.get(name)
            if code is None:
                return codes, i
            codes[i] = code
        return codes, None

    def encode_numbers(self, values):
        """Codes of numeric labels (-1 for NaN). Returns (codes, index of the first
        unknown value or None)."""
        values = np.asarray(values, dtype=np.float64)
        known = ~np.isnan(values)
        distinct, inverse = np.unique(values[known], return_inverse=True)
        lookup = np.empty(distinct.size, dtype=np.int32)
        for j, value in enumerate(distinct):
            code = self._index.get(number_name(value))
            if code is None:
                return None, int(np.flatnonzero(values == value)[0])
            lookup[j] = code
        codes = np.full(values.shape, -1, dtype=np.int32)
        codes[known] = lookup[inverse]
        return codes, None

    def decode(self, codes):
        """The names of ``codes``, as an array of str."""
        return np.asarray(self.classes, dtype=object)[np.asarray(codes)]
