"""The command line's data reading (fastbp._table, the parser fastbp._csv), its
preprocessing (fastbp._pipeline, fastbp._labels) and the model file's
preprocessing section."""

import copy
import json
import pickle

import numpy as np
import pytest

import fastbp
from fastbp import _labels, _pipeline, _table


def read(tmp_path, text, **columns):
    path = tmp_path / "data.csv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return _table.read(path, **columns)


def test_numbers_round_as_python_does(tmp_path):
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.normal(size=300) * 10.0 ** rng.integers(-35, 35, 300),
            rng.integers(-(10**6), 10**6, 100),
            [0.1, -0.0, 1e-45, 3.4028234e38, 123456789012345678901234, 0.30000000000000004],
        ]
    )
    texts = [repr(float(v)) for v in values]
    texts += ["1.", ".5", "-.5e-3", "+7", "1E5", " 2.5 ", "00012", "1e0000000000001"]
    text = "a\n" + "\n".join(texts) + "\n"
    table = read(tmp_path, text)
    expected = np.array([float(t) for t in texts], dtype=np.float64).astype(np.float32)
    np.testing.assert_array_equal(table.X[:, 0], expected)


TRICKY = """
0 -0 +0 -0.0 0. .0 1. .5 -.5e-3 +7 00012 -000.000 12345678 123456789 1234567.8
12345678. .12345678 0.123456789 1234567812345678 12345678.12345678
1234567890123456789 12345678901234567890 9007199254740992 9007199254740993
-9007199254740993 9007199254740992e-22 9007199254740993e-5 900719925474099.3
4503599627370497.5 0.30000000000000004 0000000000000000000000000000001.5
0.0000000000000000000000000000015 1e22 1e23 1e-22 1e-23 123456.7e-25 3.4028234e38
-3.4028235e38 1.4e-45 7e-46 1.17549435e-38 16777217 16777217.000000001 33554431 0.1
0.2 0.7 2.5e+3 2.5E-3 1e0000000000001 6.103515625e-05 1.00000005960464477539062
1.0000000596046447753906250000001 8.589973e9
""".split()


def tricky_values(seed=0, n=3000):
    """Decimal texts of every length up to 22 digits, the point anywhere, signs and
    exponents (the fast path's 8-digit chunks, its 19-digit and 2**53 limits and its
    exponent range from both sides), and the edge cases above; all within float32's
    range."""
    rng = np.random.default_rng(seed)
    texts = list(TRICKY)
    for _ in range(n):
        digits = "".join(map(str, rng.integers(0, 10, rng.integers(1, 23))))
        point = rng.integers(0, len(digits) + 1)
        text = rng.choice(["", "-", "+"]) + digits[:point] + "." + digits[point:]
        if rng.random() < 0.3:
            text = text.replace(".", "") if rng.random() < 0.3 else text
        if rng.random() < 0.4:
            text += rng.choice(["e", "E"]) + rng.choice(["", "-", "+"]) + str(rng.integers(0, 31))
        if abs(float(text)) < 3.4e38:
            texts.append(text)
    return texts


@pytest.mark.parametrize("block", [9, 37, 64, 1000, 1 << 22])
def test_tricky_numbers_are_the_float32_of_their_float64(tmp_path, monkeypatch, block):
    # each number first, in the middle and last on its line, CRLF on some lines, and
    # a last line without a newline: the 8-byte loads stay within the block
    monkeypatch.setattr(_table, "BLOCK", block)
    texts = tricky_values()
    lines = [
        f"{t},{texts[i - 1]},{texts[i - 2]}" + ("\r" if i % 3 == 0 else "")
        for i, t in enumerate(texts)
    ]
    table = read(tmp_path, "a,b,c\n" + "\n".join(lines))
    expected = np.array([float(t) for t in texts]).astype(np.float32)
    for j in range(3):
        column = np.roll(expected, j)
        assert np.array_equal(table.X[:, j].view(np.uint32), column.view(np.uint32)), j


def test_a_last_line_without_a_newline_after_longer_ones(tmp_path, monkeypatch):
    # the buffer is reused: what a previous block left in it must not be read
    monkeypatch.setattr(_table, "BLOCK", 32)
    table = read(tmp_path, "a,b\n123456789.25,99999999\n7,8\n1,2")
    expected = np.array([[123456789.25, 99999999], [7, 8], [1, 2]], dtype=np.float32)
    np.testing.assert_array_equal(table.X, expected)


@pytest.mark.parametrize("block", [7, 64, 1 << 22])
def test_blocks_quotes_blank_lines_and_crlf(tmp_path, monkeypatch, block):
    monkeypatch.setattr(_table, "BLOCK", block)
    text = 'x,"the, label",z\r\n1,"a, b",2\r\n\r\n"3",c,4\r\n5, "say ""hi""" ,6'
    table = read(tmp_path, text, target="the, label")
    assert table.features == ["x", "z"]
    np.testing.assert_array_equal(table.X, [[1, 2], [3, 4], [5, 6]])
    assert [table.target_text[c] for c in table.target_codes] == ["a, b", "c", 'say "hi"']
    assert table.lines.tolist() == [2, 4, 5]


def test_rows_allocated_are_the_lines_counted(tmp_path):
    text = "a,b,y\n1,2,3\n\n,,\n4,5,6"  # a blank line, empty cells, no last newline
    table = read(tmp_path, text, target="y")
    assert table.X.base is None or table.X.base.shape[0] == 4  # no more than the lines
    expected = np.array([[1, 2], [np.nan, np.nan], [4, 5]], dtype=np.float32)
    np.testing.assert_array_equal(table.X, expected)
    assert table.lines.tolist() == [2, 4, 5] and table.target_missing.tolist() == [0, 1, 0]


def test_a_file_that_grew_between_the_count_and_the_read(tmp_path, monkeypatch):
    monkeypatch.setattr(_table, "_count_lines", lambda *args: 2)
    with pytest.raises(_table.DataError, match="data.csv: the file changed while it was read"):
        read(tmp_path, "a\n1\n2\n3\n")


def test_errors_name_the_row_line_and_column(tmp_path, monkeypatch):
    monkeypatch.setattr(_table, "BLOCK", 16)  # errors found in a later block
    rows = "".join(f"{i},{i}\n" for i in range(30))
    with pytest.raises(_table.DataError, match=r"row 31 \(line 33\), column 'b': 'x' is not"):
        read(tmp_path, "a,b\n" + rows + "\n7,x\n")
    with pytest.raises(_table.DataError, match="row 1 .line 2., column 'a': a quote that"):
        read(tmp_path, 'a,b\n"1,2\n')
    with pytest.raises(_table.DataError, match="line 1: the header names column 'a' twice"):
        read(tmp_path, "a,a\n1,2\n")
    with pytest.raises(_table.DataError, match="not a number"):
        read(tmp_path, "a\n0x10\n")  # no hexadecimal floats


def test_missing_words_and_the_target(tmp_path):
    table = read(tmp_path, "a,y\n1,2\nNA,3\n4,\n5,nan\n", target="y")
    assert table.missing_at == (2, "a", 3)
    assert np.isnan(table.X[1, 0]) and table.target_missing.tolist() == [0, 0, 1, 1]
    # text and numbers: a number is named by its value ("2" and "2.0" are one class)
    table = read(tmp_path, "a,y\n1,2\n2,2.0\n3,cat\n4,\n", target="y")
    assert table.target_text == ["2", "cat"] and table.target_codes.tolist() == [0, 0, 1, -1]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": [1.0, 2.0, None], "y": ["u", "v", "u"]}), path)
    table = _table.read(path, target="y")
    assert table.features == ["a"] and table.missing_at == (3, "a", 4)
    assert [table.target_text[c] for c in table.target_codes] == ["u", "v", "u"]


def test_label_encoder_sorts_and_decodes():
    encoder, codes = _labels.LabelEncoder.from_text(["b", "a", "c"], np.array([0, 1, -1, 2]))
    assert encoder.classes == ["a", "b", "c"] and codes.tolist() == [1, 0, -1, 2]
    encoder, codes = _labels.LabelEncoder.from_numbers([10.0, 2.0, np.nan, 2.0, 0.5])
    assert encoder.classes == ["0.5", "2", "10"] and codes.tolist() == [2, 1, -1, 1, 0]
    assert encoder.decode([2, 0]).tolist() == ["10", "0.5"]
    assert encoder.encode_numbers([2.0, 3.0])[1] == 1  # 3 is unknown: its index
    assert encoder.encode_names(["10", None])[0].tolist() == [2, -1]


def test_task_inference(tmp_path):
    many = "".join(f"{i},{i}\n" for i in range(21))
    assert _pipeline.infer_task(read(tmp_path, "a,y\n" + many, target="y")) == "regression"
    few = "".join(f"{i},{i % 20}\n" for i in range(40))
    assert _pipeline.infer_task(read(tmp_path, "a,y\n" + few, target="y")) == "classification"
    table = read(tmp_path, "a,y\n1,1.5\n2,1\n", target="y")
    assert _pipeline.infer_task(table) == "regression"
    table = read(tmp_path, "a,y\n1,x\n2,y\n", target="y")
    with pytest.raises(_table.DataError, match="regression needs a numeric target"):
        _pipeline.infer_task(table, "regression")


def _with_preprocessing():
    model = fastbp.Sequential([fastbp.Dense(2, "softmax")], input_dim=2, seed=0)
    model.preprocessing = {
        "features": ["a", "b"],
        "mean": [0.5, 1.0],
        "scale": [2.0, 1.0],
        "target": "y",
        "task": "classification",
        "classes": ["no", "yes"],
        "target_mean": 0.0,
        "target_scale": 1.0,
        "training": {"epochs": 3, "data": "d.csv", "early_stopping": None},
        "metrics": {"accuracy": 0.5},
    }
    return model


def test_preprocessing_travels_with_the_model(tmp_path):
    model = _with_preprocessing()
    loaded = fastbp.load(model.save(tmp_path / "m.npz"))
    assert loaded.preprocessing == model.preprocessing
    assert loaded.get_config() == model.get_config()
    assert fastbp.Sequential.from_config(model.get_config()).preprocessing == model.preprocessing
    assert copy.deepcopy(model).preprocessing == model.preprocessing
    assert pickle.loads(pickle.dumps(model)).preprocessing == model.preprocessing
    plain = fastbp.Sequential([fastbp.Dense(1)], input_dim=2)
    assert "preprocessing" not in plain.get_config()  # other files stay as they were
    assert fastbp.load(plain.save(tmp_path / "p.npz")).preprocessing is None


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda p: p.update(scale=[0.0, 1.0]), "preprocessing.scale: must be > 0"),
        (lambda p: p.update(mean=[1.0]), "preprocessing.mean: holds 1 values for 2"),
        (lambda p: p.update(features=["a", "a"]), "preprocessing.features: names a feature"),
        (lambda p: p.update(features=["a"], mean=[0], scale=[1]), "input_dim 2"),
        (lambda p: p.update(classes=None), "preprocessing.classes: does not fit"),
        (lambda p: p.update(task="clustering"), "preprocessing.task: must be one of"),
        (lambda p: p.update(extra=1), "preprocessing: has an unknown field 'extra'"),
        (lambda p: p["training"].update(x=[1]), "preprocessing.training.x: must be a number"),
    ],
)
def test_a_bad_preprocessing_section_is_refused(tmp_path, change, field):
    model = _with_preprocessing()
    path = model.save(tmp_path / "m.npz")
    with np.load(path) as archive:
        arrays = dict(archive)
    config = json.loads(str(arrays["config"]))
    change(config["preprocessing"])
    arrays["config"] = np.array(json.dumps(config))
    np.savez(path, **arrays)
    with pytest.raises(fastbp.ModelFileError, match=field.replace("(", r"\(")):
        fastbp.load(path)
