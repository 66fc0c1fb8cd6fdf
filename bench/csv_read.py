"""Reading a CSV for the command line: fastbp's reader (fastbp._table) against
``pandas.read_csv``, time and peak memory, and the peak memory of ``fastbp train``.

Usage (from the repository root)::

    python bench/csv_read.py                  # 1,000,000 rows x 50 numeric columns
    python bench/csv_read.py --rows 100000 --repeats 3

The file (written once to a temporary folder, or ``--file``) holds standard normal
float32 values printed with ``%.7g``; its last column is the target. Each
measurement runs in a fresh subprocess, so that its peak resident memory
(``ru_maxrss``, minus the interpreter and imports measured the same way) is its own;
the readers alternate, repeat after repeat, and the medians are reported. pandas
reads into float32 (``dtype=np.float32``) and into its default float64. The
numeric size of the data is rows x columns x 4 bytes.

Results on the development machine (2 cores shared with other work, so times are
noisy: in quiet moments fastbp's read took 2.85 s; NumPy 2.4, pandas 3.0),
1,000,000 rows x 50 columns, a 508 MB file, numeric size 200 MB, 3 repeats:

| reader | median time | peak memory above the imports |
| :--- | ---: | ---: |
| fastbp (_table.read) | 4.13 s | 253 MB (1.27x the numeric size) |
| pandas.read_csv, float32 | 5.57 s | 917 MB (4.58x) |
| pandas.read_csv, float64 | 3.60 s | 1320 MB (6.60x) |
| fastbp train --epochs 1 (read, standardize, split, train) | - | 469 MB (2.34x) |

fastbp parses numbers in one pass of compiled code (``fastbp/_csv.pyx``: a
correctly rounded fast path for up to 15 significant digits, ``strtod`` beyond)
straight into a preallocated float32 array; NumPy's ``loadtxt`` took about 2.5
times pandas' time on the same file (measured while choosing), so it is not used.
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
        write_file(path, args.rows, args.columns)
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
    above = train_peak(path, folder)
    print(f"| fastbp train --epochs 1 | - | {above / 1e6:.0f} MB ({above / numeric:.2f}x) |")


if __name__ == "__main__":
    main()
