"""Corrupted model files, for the file fuzzer (tests/test_persistence_fuzz.py).

``cases(seed, n_cases, originals)`` yields ``(kind, description, data)``: a valid
model file's bytes, corrupted in one of five ways (``KINDS``):

- ``truncate``: the file cut short anywhere;
- ``flip``: one to four bytes changed, half the time inside the zip structures and
  .npy headers (where a change is not caught by a CRC-32);
- ``json``: one edit of the JSON configuration (a value replaced by an absurd one,
  a key removed, a key added), written back as a valid archive;
- ``header``: one .npy header rewritten (shape, dtype, order, keys, version, text),
  the archive rebuilt around it so that only the header is wrong (or nothing: a
  header version, byte order or memory order that NumPy may write);
- ``zip``: one field of a zip record changed (local header, central directory or
  end record: method, flags, sizes, CRC, name length, offsets, counts).

Imported by name (conftest.py puts tests/ on sys.path).
"""

import io
import json
import struct
import zipfile

import numpy as np

KINDS = ("truncate", "flip", "json", "header", "zip")

# Values a JSON field may be replaced with: huge, negative, of the wrong type.
ABSURD = [
    2**64,
    2**63,
    2**63 - 1,
    2**31,
    10**30,
    10**400,
    -1,
    -(2**63),
    0,
    1,
    1e30,
    -1e30,
    1e308,
    1e-320,
    float("nan"),
    float("inf"),
    float("-inf"),
    0.5,
    1.5,
    -0.5,
    True,
    False,
    None,
    "",
    "x",
    "float16",
    "Residual",
    "__import__('os').system('true')",
    "a" * 10_000,
    [],
    [1, 2],
    [[]],
    {},
    {"class": "Dense"},
    {"a": 1},
]


def _deep(depth):
    """A list nested ``depth`` times (a RecursionError for a recursive reader)."""
    return json.loads("[" * depth + "]" * depth) if depth < 500 else _Raw(depth)


class _Raw:
    """JSON text written as is (nesting too deep for json.dumps)."""

    def __init__(self, depth):
        self.text = "[" * depth + "]" * depth


def _dumps(config):
    raws = {}

    def default(value):
        key = f"__raw{len(raws)}__"
        raws[key] = value.text
        return key

    text = json.dumps(config, default=default)
    for key, raw in raws.items():
        text = text.replace(json.dumps(key), raw)
    return text


def _arrays(data):
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _savez(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _paths(node, path=()):
    """Every path to a value in a JSON tree (the root excluded)."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        yield path + (key,)
        yield from _paths(child, path + (key,))


def _at(node, path):
    for key in path:
        node = node[key]
    return node


def json_edit(data, rng):
    arrays = _arrays(data)
    config = json.loads(str(arrays["config"]))
    paths = list(_paths(config))
    path = paths[rng.integers(len(paths))]
    parent, key = _at(config, path[:-1]), path[-1]
    old = parent[key]
    op = rng.choice(["absurd", "absurd", "near", "delete", "add", "deep"])
    if op == "near" and isinstance(old, (int, float)) and not isinstance(old, bool):
        new = old + int(rng.choice([-1, 1, 2])) if isinstance(old, int) else old * 10
        parent[key] = new
        what = f"{list(path)}: {old!r} -> {new!r}"
    elif op == "delete" and isinstance(parent, dict):
        del parent[key]
        what = f"{list(path)}: removed"
    elif op == "add":
        target = _at(config, path) if isinstance(old, dict) else config
        target["extra"] = ABSURD[rng.integers(len(ABSURD))]
        what = f"{list(path) if target is old else []}: extra key"
    elif op == "deep":
        parent[key] = _deep(int(rng.choice([50, 100_000])))
        what = f"{list(path)}: deeply nested list"
    else:
        parent[key] = ABSURD[rng.integers(len(ABSURD))]
        what = f"{list(path)}: {old!r:.40} -> {parent[key]!r:.40}"
    arrays["config"] = np.array(_dumps(config))
    return what, _savez(arrays)


# -- .npy headers -------------------------------------------------------------------
def _npy(array, header_text=None, version=(1, 0)):
    """The .npy bytes of ``array``, with ``header_text`` in place of its header."""
    if header_text is None:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, version=version, allow_pickle=False)
        return buffer.getvalue()
    text = header_text.encode("latin1")
    size = 2 if version == (1, 0) else 4
    pad = -(6 + 2 + size + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    length = len(text).to_bytes(size, "little")
    return b"\x93NUMPY" + bytes(version) + length + text + array.tobytes()


HEADERS = [
    "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }",
    "{'descr': '<f4', 'fortran_order': False, 'shape': (2**62, 2**62), }".replace(
        "2**62", str(2**62)
    ),
    "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (0,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (2.5,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': 'abc', }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 1), }",
    "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }",
    "{'descr': '<f2', 'fortran_order': False, 'shape': (8,), }",
    "{'descr': '<c16', 'fortran_order': False, 'shape': (8,), }",
    "{'descr': '<i8', 'fortran_order': False, 'shape': (8,), }",
    "{'descr': '>f8', 'fortran_order': False, 'shape': (8,), }",
    "{'descr': 'V8', 'fortran_order': False, 'shape': (8,), }",
    "{'descr': '<U999999999', 'fortran_order': False, 'shape': (), }",
    "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (8,), }",
    "{'descr': 'garbage', 'fortran_order': False, 'shape': (8,), }",
    "{'descr': '<f8', 'fortran_order': 'yes', 'shape': (8,), }",
    "{'descr': '<f8', 'fortran_order': True, 'shape': (8,), }",
    "{'descr': '<f8', 'shape': (8,), }",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), 'extra': 1}",
    "[1, 2, 3]",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), ",
    "{'descr': __import__('os').system('true'), 'fortran_order': False, 'shape': (8,)}",
    "{'descr': '<f8', 'fortran_order': False, 'shape': (" + "(" * 300 + ")" * 300 + ",)}",
    "\x00\xff\xfe",
    "{'descr': u'<f8', 'fortran_order': False, 'shape': (8L,), }",  # Python 2's
    "{'descr': '<f8', 'fortran_order': False, 'shape': (8,), }\"\"\"",
]


def _rezip(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in members.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def header_edit(data, rng):
    arrays = _arrays(data)
    key = str(rng.choice(sorted(arrays)))
    array = arrays[key]
    op = rng.choice(["text", "text", "shape", "version", "length", "variant"])
    if op == "variant":  # a header NumPy may write: the file stays valid
        variant = ["version 2.0", "big-endian", "Fortran order"][rng.integers(3)]
        if variant == "version 2.0":
            payload = _npy(array, version=(2, 0))
        elif variant == "big-endian":
            payload = _npy(array.astype(array.dtype.newbyteorder(">")))
        else:
            payload = _npy(np.asfortranarray(array))
        what = f"{key}: {variant}"
    elif op == "text":
        text = HEADERS[rng.integers(len(HEADERS))]
        payload, what = _npy(array, text), f"{key}: header {text[:70]!r}"
    elif op == "shape":
        shape = list(array.shape) or [1]
        shape[rng.integers(len(shape))] += int(rng.choice([-1, 1, 1000, 2**40]))
        descr = np.lib.format.dtype_to_descr(array.dtype)
        text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {tuple(shape)}, }}"
        payload, what = _npy(array, text), f"{key}: shape {tuple(shape)}"
    elif op == "version":
        version = [(2, 0), (3, 0), (9, 9), (0, 0)][rng.integers(4)]
        payload = bytearray(_npy(array))
        payload[6:8] = bytes(version)
        what = f"{key}: format version {version}"
    else:
        payload = bytearray(_npy(array))
        length = int(rng.choice([0, 1, 70, 0xFFFF]))
        payload[8:10] = length.to_bytes(2, "little")
        what = f"{key}: header length {length}"
    members = {f"{name}.npy": _npy(value) for name, value in arrays.items()}
    members[f"{key}.npy"] = bytes(payload)
    return what, _rezip(members)


# -- zip records ----------------------------------------------------------------------
# (record signature, [(field name, offset, struct format)]) of the records edited.
LOCAL = (
    b"PK\x03\x04",
    [
        ("flags", 6, "<H"),
        ("method", 8, "<H"),
        ("crc", 14, "<I"),
        ("compressed size", 18, "<I"),
        ("size", 22, "<I"),
        ("name length", 26, "<H"),
        ("extra length", 28, "<H"),
    ],
)
CENTRAL = (
    b"PK\x01\x02",
    [
        ("flags", 8, "<H"),
        ("method", 10, "<H"),
        ("crc", 16, "<I"),
        ("compressed size", 20, "<I"),
        ("size", 24, "<I"),
        ("name length", 28, "<H"),
        ("extra length", 30, "<H"),
        ("comment length", 32, "<H"),
        ("header offset", 42, "<I"),
    ],
)
END = (
    b"PK\x05\x06",
    [
        ("entries on disk", 8, "<H"),
        ("entries", 10, "<H"),
        ("directory size", 12, "<I"),
        ("directory offset", 16, "<I"),
        ("comment length", 20, "<H"),
    ],
)


def _records(data, signature):
    at, found = 0, []
    while (at := data.find(signature, at)) >= 0:
        found.append(at)
        at += 1
    return found


def zip_edit(data, rng):
    signature, fields = (LOCAL, CENTRAL, END)[rng.integers(3)]
    starts = _records(data, signature)
    record = starts[rng.integers(len(starts))]
    name, offset, fmt = fields[rng.integers(len(fields))]
    at = record + offset
    (old,) = struct.unpack_from(fmt, data, at)
    top = 2 ** (8 * struct.calcsize(fmt)) - 1
    choices = [0, 1, top, old + 1, max(old - 1, 0), old * 2 % (top + 1), 8, 12, 14, 99]
    new = int(choices[rng.integers(len(choices))]) % (top + 1)
    out = bytearray(data)
    struct.pack_into(fmt, out, at, new)
    return f"{signature!r}@{record} {name}: {old} -> {new}", bytes(out)


# -- raw bytes ------------------------------------------------------------------------
def _structure(data):
    """Byte ranges of zip records and .npy headers: where a change escapes the CRC."""
    ranges = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            ranges.append((info.header_offset, info.header_offset + 30 + len(info.filename) + 128))
        directory = min(_records(data, CENTRAL[0]))
    ranges.append((directory, len(data)))
    return ranges


def flip(data, rng):
    out = bytearray(data)
    spots = []
    for _ in range(int(rng.integers(1, 5))):
        if rng.random() < 0.5:
            lo, hi = _structure(data)[rng.integers(len(_structure(data)))]
            at = int(rng.integers(lo, min(hi, len(data))))
        else:
            at = int(rng.integers(len(data)))
        out[at] ^= int(rng.integers(1, 256))
        spots.append(at)
    return f"bytes {spots}", bytes(out)


def truncate(data, rng):
    cut = int(rng.integers(len(data)))
    return f"first {cut} of {len(data)} bytes", data[:cut]


EDITS = {
    "truncate": truncate,
    "flip": flip,
    "json": json_edit,
    "header": header_edit,
    "zip": zip_edit,
}


def cases(seed, n_cases, originals):
    """``n_cases`` corrupted files: ``(kind, description, data)``, the kinds in turn,
    each from one of ``originals`` (valid model files' bytes)."""
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        kind = KINDS[i % len(KINDS)]
        original = originals[rng.integers(len(originals))]
        description, data = EDITS[kind](original, rng)
        yield kind, description, data
