"""Reading a CSV for the command line: fastbp's reader (fastbp._table) against
``pandas.read_csv``, time and peak memory, and the peak memory of ``fastbp train``.

Usage (from the repository root)::

    python bench/csv_read.py                  # 1,000,000 rows x 50 numeric columns
    python bench/csv_read.py --rows 100000 --repeats 3

The file (written once to a temporary folder, by a child process, or ``--file``)
holds standard normal float32 values printed with ``%.7g``; its last column is the
target. Each measurement runs in a fresh subprocess, so that its peak resident
memory (``ru_maxrss``, minus the interpreter and imports measured the same way) is
its own; the readers alternate, repeat after repeat, and the medians are reported,
with fastbp's time over pandas' float64 time repeat by repeat (the issue's target:
at most 1, "at least as fast as pandas.read_csv"). pandas reads into float32
(``dtype=np.float32``) and into its default float64. The numeric size of the data
is rows x columns x 4 bytes.

Results on the development machine (2 cores shared with other work, so times are
noisy; NumPy 2.4, pandas 3.1), 1,000,000 rows x 50 columns, a 508 MB file,
numeric size 200 MB, 3 repeats, on a quiet moment:

| reader | median time | peak memory above the imports |
| :--- | ---: | ---: |
| fastbp (_table.read) | 1.22 s | 224 MB (1.12x the numeric size) |
| pandas.read_csv, float32 | 2.89 s | 911 MB (4.55x) |
| pandas.read_csv, float64 | 1.73 s | 1314 MB (6.57x) |
| fastbp train --epochs 1 (read, standardize, split, train) | - | 283 MB (1.42x) |

fastbp's time / pandas float64's, repeat by repeat: 1.06, 0.65, 0.83 (median
0.83). While the machine's other work ran, pandas' float64 read took up to 3.6 s
and fastbp's 1.1 to 1.7 s (median ratios 0.37 to 0.64). Before this work fastbp
took 2.85 to 4.1 s (0.8 to 1.1x pandas' 3.6 s) and ``train`` peaked at 2.34x.
Reading the file once into rows allocated from a bound on its size (a row takes at
least its commas) measured about 10% faster, but reserves several times the memory
it touches, which a system that does not overcommit refuses: the lines are counted
first instead.

fastbp parses numbers in compiled code (``fastbp/_csv.pyx``: a plain number is read
in the pass that finds its end, eight digits at a time; a correctly rounded fast
path for a mantissa up to 2**53 and a power of ten up to 22, ``strtod`` beyond)
straight into a float32 array of the counted rows, through one reused buffer
(``fastbp/_table.py``). A second thread parsing half of each block measured no
faster here (a median of 1.17 s against 1.14 s over four alternating runs,
its parse 1.07-1.16 s against 0.81-0.82 s; the second core is rarely free), so the
reader uses one. ``train`` holds the table's X and, while it splits, a copy of the
held-out rows only: the rows are reordered in place so that the training and
held-out rows are views. NumPy's ``loadtxt`` took about 2.5 times pandas' time on
the same file (measured while choosing), so it is not used.

(The file is written by a child because of ``ru_maxrss``: written here, it raised
this process's peak, and the subprocesses started after it then reported fastbp's
read at 161 MB, 0.80x, against 225 MB measured alone or with ``--file``; they seem
to begin with this process's peak, as a vfork'd or posix_spawn'd child would.)
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

FASTBP = "from fastbp import _table, cli"
PANDAS = "import pandas as pd"
# (imports, the read); each reader's memory is counted above its own imports
READERS = {
    "fastbp": (FASTBP, "t = _table.read(PATH, target='y')"),
    "pandas float32": (PANDAS, "d = pd.read_csv(PATH, dtype=np.float32)"),
    "pandas float64": (PANDAS, "d = pd.read_csv(PATH)"),
}
PROGRAM = """
import resource, time, numpy as np
PATH = {path!r}
{imports}
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
started = time.perf_counter()
{code}
seconds = time.perf_counter() - started
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - imported)
"""


def write_file(path, rows, columns, seed=0):
    rng = np.random.default_rng(seed)
    with open(path, "w") as file:
        file.write(",".join([f"x{i}" for i in range(columns - 1)] + ["y"]) + "\n")
        for start in range(0, rows, 100_000):
            block = rng.standard_normal((min(100_000, rows - start), columns), dtype=np.float32)
            np.savetxt(file, block, delimiter=",", fmt="%.7g")


def measure(imports, code, path):
    """(seconds, peak resident memory above the imports' in bytes) of ``code``."""
    out = (
        subprocess.run(
            [sys.executable, "-c", PROGRAM.format(path=path, imports=imports, code=code)],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.splitlines()[-1]
        .split()
    )
    return float(out[0]), int(out[1])


def train_peak(path, folder):
    """Peak memory of ``fastbp train`` on the file (one epoch), in a subprocess."""
    code = (
        f"cli.main(['train', PATH, '--target', 'y', '--epochs', '1', '--batch-size', '256',"
        f" '--quiet', '--out', {os.path.join(folder, 'm.npz')!r}])"
    )
    return measure(FASTBP, code, path)[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--file", help="use this CSV (written if it does not exist)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="fastbp-csv-")
    path = args.file or os.path.join(folder, "data.csv")
    if not os.path.exists(path):
        # in a child process: a child started later (posix_spawn or vfork shares
        # this process's memory until it runs Python) starts its ru_maxrss from
        # this process's peak, which writing the file would raise, and so hide
        # the first ~150 MB of a reader's peak
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {here!r}); import csv_read;"
                f" csv_read.write_file({path!r}, {args.rows}, {args.columns})",
            ],
            check=True,
        )
    numeric = args.rows * args.columns * 4
    print(f"{path}: {os.path.getsize(path) / 1e6:.0f} MB, numeric size {numeric / 1e6:.0f} MB")
    times = {name: [] for name in READERS}
    peaks = {name: [] for name in READERS}
    for repeat in range(args.repeats):
        names = list(READERS)
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, peak = measure(*READERS[name], path)
            times[name].append(seconds)
            peaks[name].append(peak)
    print("| reader | median time | peak memory above the imports |")
    print("| :--- | ---: | ---: |")
    for name in READERS:
        above = statistics.median(peaks[name])
        print(
            f"| {name} | {statistics.median(times[name]):.2f} s | {above / 1e6:.0f} MB"
            f" ({above / numeric:.2f}x the numeric size) |"
        )
    ratios = [a / b for a, b in zip(times["fastbp"], times["pandas float64"])]
    print(
        f"fastbp's time / pandas float64's, repeat by repeat: "
        f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"
    )
    above = train_peak(path, folder)
    print(f"| fastbp train --epochs 1 | - | {above / 1e6:.0f} MB ({above / numeric:.2f}x) |")


if __name__ == "__main__":
    main()
