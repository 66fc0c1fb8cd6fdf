"""Progress output of fit (fastbp._progress): one bar per fit on a terminal, one line
per epoch elsewhere, epochs numbered within each fit, no leftovers in the plain bar."""

import io
import sys

import pytest

from fastbp import _progress

from _models import blobs, classifier


class Terminal(io.StringIO):
    def isatty(self):
        return True


def lines(text):
    return text.strip().splitlines()


def test_not_a_terminal_prints_one_line_per_epoch_even_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    X, y = blobs(20)
    classifier().fit(X, y, epochs=3, batch_size=5, verbose=1)
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in lines(out)] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "\r" not in out and err == ""


def test_a_second_fit_numbers_its_epochs_from_one(capsys):
    X, y = blobs(20)
    model = classifier()
    model.fit(X, y, epochs=2, verbose=2)
    model.fit(X, y, epochs=3, verbose=2)
    numbers = [line.split(":")[0] for line in lines(capsys.readouterr().out)]
    assert numbers == ["epoch 1/2", "epoch 2/2", "epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert model.history.epoch == [0, 1, 2, 3, 4]  # the History keeps the running count


def test_plain_bar_on_a_terminal_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    X, y = blobs(20)
    model = classifier()
    model.fit(X, y, epochs=2, verbose=1)
    model.fit(X, y, epochs=30, batch_size=5, verbose=1)
    text = terminal.getvalue()
    redraws = [part for line in text.split("\n") for part in line.split("\r") if part]
    assert all(part.startswith("epoch ") for part in redraws)
    # never past the fit's own last epoch, and the bar ends at its last epoch
    shown = {part.split(" ")[1] for part in redraws}
    assert "31/30" not in shown and "3/2" not in shown and "30/30" in shown
    assert "1/30" in shown
    second = text.split("\n")[1]
    assert "120/120" in second and "batch/s" in second and "accuracy" in second


def test_plain_bar_pads_over_a_longer_earlier_line(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    bar = _progress.PlainBar(epochs=2, n_batches=1, first_epoch=0)
    bar.epoch_end(0, {"loss": 123456.789, "accuracy": 0.5}, 0.1)  # a long line
    bar.epoch_end(1, {"loss": 1.0}, 0.1)  # a shorter one
    bar.close()
    drawn = terminal.getvalue().split("\r")[1:]
    assert len(drawn[-1].rstrip("\n")) >= len(drawn[-2])  # the shorter covers the longer
    assert drawn[-1].rstrip("\n").rstrip().endswith("loss: 1.0000")


def test_epoch_lines_above_the_plain_bar(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    bar = _progress.PlainBar(epochs=2, n_batches=4, first_epoch=5, epoch_lines=True)
    for epoch in (5, 6):
        bar.batches(4)
        bar.epoch_end(epoch, {"loss": 0.5}, 0.25)
    bar.close()
    finished = [line.split("\r")[-1].rstrip() for line in terminal.getvalue().split("\n")]
    assert finished[0] == "epoch 1/2: loss: 0.5000 - 0.250s"
    assert finished[1] == "epoch 2/2: loss: 0.5000 - 0.250s"
    assert finished[2].startswith("epoch 2/2 [") and "8/8" in finished[2]


def test_tqdm_bar_numbers_within_the_fit(monkeypatch, capsys):
    pytest.importorskip("tqdm")
    monkeypatch.setattr(_progress, "_terminal", lambda stream: True)
    X, y = blobs(20)
    model = classifier()
    model.fit(X, y, epochs=1, batch_size=5, verbose=1)
    capsys.readouterr()
    model.fit(X, y, epochs=2, batch_size=5, verbose=1)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "8/8" in err and "batch/s" in err
    assert "epoch 3/" not in err and "epoch 2/3" not in err


def test_verbose_checked():
    with pytest.raises(ValueError, match="verbose must be 0, 1 or 2"):
        _progress.make(3, 1, 1, 0)
