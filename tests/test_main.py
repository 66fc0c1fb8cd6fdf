"""The demo (fastbp/__main__.py, ``python -m fastbp`` and ``fastbp-demo``): its
arguments are checked like any input, with a usage message instead of a traceback."""

import pytest

from fastbp import __main__ as demo


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--samples", "1"], r"--samples: must be an integer from 10 to 1,000,000, got 1"),
        (["--samples", "0"], r"--samples: must be an integer from 10"),
        (["--samples", "-5"], r"--samples: must be an integer from 10"),
        (["--samples", "10000000"], r"--samples: must be an integer from 10 to 1,000,000"),
        (["--samples", "ten"], r"--samples: expected an integer, got 'ten'"),
        (["--epochs", "0"], r"--epochs: must be an integer >= 1, got 0"),
        (["--epochs", "1.5"], r"--epochs: expected an integer"),
    ],
)
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    # --samples 1 ended in a traceback ("X_val is empty: it has 0 samples").
    with pytest.raises(SystemExit) as exit_info:
        demo.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith("usage:")
    import re

    assert re.search(message, err)


def test_the_smallest_run_works(capsys):
    assert demo.main(["--samples", "10", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "test R^2" in out and "nan" not in out
