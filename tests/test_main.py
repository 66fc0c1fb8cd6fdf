"""The demo (``fastbp demo``, ``fastbp-demo``: ``fastbp.cli.demo_main``): its
arguments are checked like any input, with a one-line usage error instead of a
traceback."""

import pytest

from fastbp import cli


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--samples", "1"], "expected at least 20 samples, got '1'"),
        (["--samples", "0"], "--samples"),
        (["--samples", "-5"], "--samples"),
        (["--samples", "ten"], "--samples"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "1.5"], "--epochs"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    # --samples 1 once ended in a traceback ("X_val is empty: it has 0 samples").
    assert cli.demo_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_the_smallest_run_works(capsys):
    assert cli.demo_main(["--samples", "20", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "nan" not in out
