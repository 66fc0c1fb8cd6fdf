"""Reading the command line's data files: a CSV with a header (or Parquet, with
pyarrow) into a float32 matrix of features and a target column.

The CSV is read twice: once to count its lines (newlines counted in compiled
code), then in blocks of whole lines that the compiled parser (``fastbp._csv``)
writes straight into one float32 array of exactly that many rows (a bound from the
file's size would spare the count, about a tenth of the time, but reserve several
times the memory: a system that does not overcommit refuses it). Both passes stop
at the size found on opening; a file that grows in between stops the parse at the
array's last row with an error. The blocks go through one reused buffer
(``readinto``; the part of a line a block cuts moves to its front), not a new bytes
object or two per block, whose fresh pages the system would zero and the copies
fill. So the memory is the numeric size of the features (4 bytes a cell) plus one
block, and no cell ever becomes a Python object. The target column is kept as
numbers and, when it holds text, as the codes of its distinct values (a cell that
reads as a number is named by its value: "2" and "2.0" are the class "2").

Everything wrong with a file raises ``DataError``, whose message is one line
naming the file, the row (data rows count from 1, after the header) and line,
and the column.
"""

from __future__ import annotations

import csv
import dataclasses
import os

import numpy as np

from ._labels import number_name

BLOCK = 1 << 22  # the buffer's bytes (whole lines are parsed; the rest carries over)
_SKIP, _TEXT = -1, -2
# the parser's status codes and info slots (fastbp/_csv.pyx)
_TOO_FEW, _TOO_MANY, _NOT_NUMBER, _BAD_QUOTE, _NOT_FINITE, _NO_ROOM = 1, 2, 3, 4, 5, 6
(_ROWS, _STATUS, _ERROR_LINE, _ERROR_COLUMN, _MISSING, _MISSING_LINE, _MISSING_COLUMN) = range(7)
_TEXT_VALUES, _LINES = 7, 8
PARQUET_SUFFIXES = (".parquet", ".pq")


class DataError(ValueError):
    """A data file that cannot be used as asked; the message names the place."""


@dataclasses.dataclass
class Table:
    """What ``read`` returns.

    Attributes
    ----------
    path : str
    features : list of str
        The feature columns' names, in the order of ``X``'s columns.
    X : ndarray of shape (n_rows, n_features), float32
        NaN where a cell is missing (empty, "NA", "nan", ...).
    target : ndarray of shape (n_rows,), float64, or None
        The target column as numbers (NaN where missing or not a number).
    target_text : list of str or None
        When the target column holds text: its distinct values (in order of first
        appearance), and ``target_codes`` indexes them per row (-1: missing).
    rows : ndarray of int64
        Each row's data row number in the file (from 1).
    missing_at : (row, column name) or None
        The first missing feature cell.
    """

    path: str
    features: list
    X: np.ndarray
    target: np.ndarray | None = None
    target_text: list | None = None
    target_codes: np.ndarray | None = None
    rows: np.ndarray | None = None
    missing_at: tuple | None = None
    target_name: str | None = None
    lines: np.ndarray | None = None

    @property
    def target_missing(self):
        """Boolean mask of the rows whose target is missing."""
        if self.target_codes is not None:
            return self.target_codes < 0
        return np.isnan(self.target)

    @property
    def target_is_text(self):
        return self.target_codes is not None

    def take(self, keep):
        """Keep the rows where ``keep`` (a boolean mask) is true, in place."""
        n = int(np.count_nonzero(keep))
        self.X[:n] = self.X[keep]  # row-wise compaction; NumPy buffers the gather
        self.X = self.X[:n]
        for name in ("target", "target_codes", "rows", "lines"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[keep])


def is_parquet(path):
    return os.fspath(path).lower().endswith(PARQUET_SUFFIXES)


def read(path, target=None, features=None, ignore=()):
    """Read ``path``: the feature columns (``features``: those names, in that order;
    None: every column but ``target`` and ``ignore``) and the ``target`` column
    (None: no target). Raises DataError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not a data file")
    if is_parquet(path):
        return _read_parquet(path, target, features, ignore)
    return _read_csv(path, target, features, ignore)


def _columns(path, header, target, features, ignore):
    """Check the header against what is asked; return (feature names, roles)."""
    if not header or header == [""]:
        raise DataError(f"{path}: the file is empty (a CSV with a header line is expected)")
    for j, name in enumerate(header):
        if not name.strip():
            raise DataError(f"{path}: line 1, column {j + 1}: the header has an empty name")
    seen = set()
    for name in header:
        if name in seen:
            raise DataError(f"{path}: line 1: the header names column {name!r} twice")
        seen.add(name)
    if target is not None and target not in seen:
        raise DataError(f"{path}: no target column {target!r}; the columns are {_listed(header)}")
    if features is None:
        features = [n for n in header if n != target and n not in ignore]
        if not features:
            raise DataError(f"{path}: no feature columns (only the target {target!r})")
    else:
        lacking = [n for n in features if n not in seen]
        extra = [n for n in header if n not in features and n != target and n not in ignore]
        if lacking or extra:
            parts = []
            if lacking:
                parts.append(f"lacks the model's feature(s) {_listed(lacking)}")
            if extra:
                parts.append(f"has column(s) the model was not trained on: {_listed(extra)}")
            raise DataError(
                f"{path}: the columns differ from the model's features: the file"
                f" {' and '.join(parts)}"
            )
    index = {name: i for i, name in enumerate(features)}
    roles = np.array(
        [index.get(name, _TEXT if name == target else _SKIP) for name in header], dtype=np.intc
    )
    return list(features), roles


def _listed(names, limit=12):
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _read_header(path, file):
    raw = file.readline()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: line 1: the header is not UTF-8 text") from None
    if "\0" in text:
        raise DataError(f"{path}: line 1: not a text (CSV) file")
    rows = list(csv.reader([text]))
    return [name.strip() for name in rows[0]] if rows else []


def _count_lines(file, buffer, size):
    """Newlines in the next ``size`` bytes, plus one for a last line without one
    (read through ``buffer``, a bytearray, counted in compiled code)."""
    from . import _csv

    lines, last, view = 0, 10, memoryview(buffer)
    while True:
        got = file.readinto(view[:size])
        size -= got
        if not got:
            return lines + (last != 10)
        lines += _csv.count_newlines(view[:got])
        last = buffer[got - 1]


def _read_csv(path, target, features, ignore):
    from . import _csv

    with open(path, "rb") as file:
        header = _read_header(path, file)
        names, roles = _columns(path, header, target, features, ignore)
        start = file.tell()
        left = os.fstat(file.fileno()).st_size - start  # the bytes read, at most
        buffer = bytearray(BLOCK)
        capacity = _count_lines(file, buffer, left)
        file.seek(start)
        X = np.empty((capacity, len(names)), dtype=np.float32)
        has_target = target is not None
        spans = np.empty((capacity if has_target else 0, 2), dtype=np.intp)
        values = np.empty(capacity if has_target else 0, dtype=np.float64)
        codes = np.empty(capacity if has_target else 0, dtype=np.int32)
        texts, text_codes = [], {}
        line_of_row = np.empty(capacity, dtype=np.int64)
        info = np.zeros(_csv.N_INFO_SLOTS, dtype=np.longlong)
        n_rows, line, missing_at, text_from = 0, 2, None, None
        filled = 0  # bytes in the buffer: the start of a line the last block cut
        while True:
            if filled == len(buffer):  # a line longer than the buffer: a bigger one
                buffer = buffer + bytearray(len(buffer))
            with memoryview(buffer) as view:
                got = file.readinto(view[filled : filled + left])
            filled += got
            left -= got
            if not filled:
                break
            cut = buffer.rfind(b"\n", 0, filled) + 1 if got else filled
            if cut == 0:  # no line ends yet: read on
                continue
            with memoryview(buffer) as view, view[:cut] as block:
                _csv.parse_block(block, roles, X, n_rows, spans, values, info)
            rows = int(info[_ROWS])
            if info[_STATUS] == _NO_ROOM:
                raise DataError(f"{path}: the file changed while it was read")
            if info[_STATUS]:
                block = bytes(buffer[:cut])
                _raise_parse_error(path, header, info, block, line, n_rows + rows + 1)
            if info[_MISSING] and missing_at is None:
                missing_line = line + int(info[_MISSING_LINE])
                missing_at = (
                    _row_of(bytes(buffer[:cut]), int(info[_MISSING_LINE]), n_rows),
                    header[int(info[_MISSING_COLUMN])],
                    missing_line,
                )
            if int(info[_LINES]) == rows:  # no blank lines
                line_of_row[n_rows : n_rows + rows] = np.arange(line, line + rows)
            else:
                line_of_row[n_rows : n_rows + rows] = _line_numbers(bytes(buffer[:cut]), line, rows)
            if has_target and (text_from is not None or info[_TEXT_VALUES]):
                # a cell that reads as a number is named by its value ("2" and "2.0"
                # are the class "2"), here and in the numbers-only blocks before
                if text_from is None:
                    text_from = n_rows
                    for i in range(n_rows):
                        codes[i] = _code(_name(values[i]), texts, text_codes)
                for i in range(n_rows, n_rows + rows):
                    if values[i] == values[i]:
                        text = number_name(values[i])
                    else:
                        text = _decode(path, bytes(buffer[spans[i, 0] : spans[i, 1]]))
                    codes[i] = _code(text, texts, text_codes)
            n_rows += rows
            line += int(info[_LINES])
            if not got:
                break
            buffer[: filled - cut] = buffer[cut:filled]  # the cut line, to the front
            filled -= cut
    if n_rows == 0:
        raise DataError(f"{path}: no data rows after the header")
    table = Table(path, names, X[:n_rows], rows=np.arange(1, n_rows + 1), target_name=target)
    table.lines = line_of_row[:n_rows]
    table.missing_at = missing_at
    if has_target:
        table.target = values[:n_rows]
        if text_from is not None:
            table.target_text = texts
            table.target_codes = codes[:n_rows]
    return table


def _name(value):
    return "" if value != value else number_name(value)


def _code(text, texts, text_codes):
    """The code of ``text`` among the distinct ``texts`` (-1: missing)."""
    if text in _MISSING_WORDS:
        return -1
    code = text_codes.get(text)
    if code is None:
        code = text_codes[text] = len(texts)
        texts.append(text)
    return code


# the words that mean a missing value (as in fastbp/_csv.pyx, and NaN)
_MISSING_WORDS = frozenset(
    ["", "NA", "N/A", "n/a", "null", "NULL", "None", "#N/A", "<NA>", "nan", "NaN"]
)


def _decode(path, raw):
    text = raw.strip()
    if text.startswith(b'"') and text.endswith(b'"'):
        text = text[1:-1]
    try:
        return text.replace(b'""', b'"').decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: the target holds a value that is not UTF-8: {raw!r}") from None


def _line_numbers(block, first_line, rows):
    """The file line number of each of the block's ``rows`` data rows (blank lines
    are not rows)."""
    lines = block.split(b"\n")
    numbers = [first_line + i for i, text in enumerate(lines) if text.strip(b"\r")]
    return np.asarray(numbers[:rows], dtype=np.int64)


def _row_of(block, block_line, rows_before):
    """The data row number (from 1) of line ``block_line`` of the block."""
    lines = block.split(b"\n")[:block_line]
    return rows_before + sum(1 for text in lines if text.strip(b"\r")) + 1


def _raise_parse_error(path, header, info, block, first_line, row):
    status, column = int(info[_STATUS]), int(info[_ERROR_COLUMN])
    block_line = int(info[_ERROR_LINE])
    where = f"{path}: row {_row_of(block, block_line, row - 1 - int(info[_ROWS]))}"
    where += f" (line {first_line + block_line})"
    text = block.split(b"\n")[block_line].rstrip(b"\r")
    if status == _TOO_FEW:
        raise DataError(
            f"{where}: {column} field(s) where the header has {len(header)}"
            f" (a ragged row; the first missing column is {header[column]!r})"
        )
    if status == _TOO_MANY:
        raise DataError(f"{where}: more fields than the {len(header)} of the header (a ragged row)")
    name = header[column] if column < len(header) else f"#{column + 1}"
    if status == _BAD_QUOTE:
        raise DataError(
            f"{where}, column {name!r}: a quote that does not close on its line"
            " (line breaks inside quotes are not supported)"
        )
    field = _field(text, column)
    if status == _NOT_FINITE:
        raise DataError(f"{where}, column {name!r}: {field!r} is not a finite number")
    raise DataError(
        f"{where}, column {name!r}: {field!r} is not a number (features must be numeric)"
    )


def _field(line, column):
    try:
        fields = next(csv.reader([line.decode("utf-8", "replace")]))
        return fields[column].strip()
    except (StopIteration, IndexError, csv.Error):
        return "?"


def _read_parquet(path, target, features, ignore):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow (pip install pyarrow), or give a CSV"
        ) from None
    try:
        parquet = pq.ParquetFile(path)
        header = list(parquet.schema_arrow.names)
    except Exception as exc:  # pyarrow raises its own types for a foreign file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    names, _ = _columns(path, header, target, features, ignore)
    n = parquet.metadata.num_rows
    if n == 0:
        raise DataError(f"{path}: no data rows")
    X = np.empty((n, len(names)), dtype=np.float32)
    table = Table(path, names, X, rows=np.arange(1, n + 1), target_name=target)
    table.lines = table.rows + 1
    for j, name in enumerate(names):
        column = parquet.read(columns=[name]).column(0)
        try:
            X[:, j] = column.to_numpy(zero_copy_only=False).astype(np.float32)
        except (ValueError, TypeError):
            values = column.to_pylist()
            for i, value in enumerate(values):
                try:
                    float(value)
                except (TypeError, ValueError):
                    if value is not None:
                        raise DataError(
                            f"{path}: row {i + 1}, column {name!r}: {value!r} is not a"
                            " number (features must be numeric)"
                        ) from None
            X[:, j] = np.array([np.nan if v is None else float(v) for v in values])
        bad = np.flatnonzero(np.isinf(X[:, j]))
        if bad.size:
            raise DataError(f"{path}: row {bad[0] + 1}, column {name!r}: not a finite number")
    missing = np.isnan(X)
    if missing.any():
        i, j = np.argwhere(missing)[0]
        table.missing_at = (int(i) + 1, names[j], int(i) + 2)
    if target is not None:
        values = parquet.read(columns=[target]).column(0).to_pylist()
        if all(v is None or isinstance(v, (int, float)) for v in values):
            table.target = np.array([np.nan if v is None else v for v in values], dtype=float)
        else:
            distinct = {}
            codes = np.array(
                [-1 if v is None else distinct.setdefault(str(v), len(distinct)) for v in values],
                dtype=np.int32,
            )
            table.target = np.full(n, np.nan)
            table.target_text, table.target_codes = list(distinct), codes
    return table
