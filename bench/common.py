"""Helpers shared by the benchmark scripts: statistics, formatting, the machine
description, and importing the optional libraries lazily."""

import datetime
import importlib.metadata
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# -- optional libraries ---------------------------------------------------------
def have(module):
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def version(distribution):
    """The installed version of ``distribution``, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_fastbp(attempts=20, wait=1.0):
    """Import fastbp and its compiled core, retrying for a while.

    The compiled module may be in the middle of a rebuild (another process writing
    the shared object); the import then fails for a moment.

    Returns
    -------
    module
        The ``fastbp`` package, its compiled core loaded.
    """
    for attempt in range(attempts):
        try:
            import fastbp
            from fastbp._backend import core

            core()
            return fastbp
        except ImportError:
            if attempt == attempts - 1:
                raise
            for name in [m for m in sys.modules if m == "fastbp" or m.startswith("fastbp.")]:
                del sys.modules[name]
            time.sleep(wait)
    raise AssertionError("unreachable")


# -- statistics and formatting ----------------------------------------------------
class Report:
    """Lines printed as they come and kept, to be written to a Markdown file."""

    def __init__(self):
        self.lines = []

    def say(self, line=""):
        print(line, flush=True)
        self.lines.append(line)

    def save(self, path):
        """Write the lines to ``path`` (None: nowhere)."""
        if path:
            with open(path, "w") as f:
                f.write("\n".join(self.lines) + "\n")


def summarize(values):
    """Return the median, min, max and quartiles of ``values`` as a dict."""
    values = sorted(float(v) for v in values)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {
        "median": statistics.median(values),
        "min": values[0],
        "max": values[-1],
        "q1": q1,
        "q3": q3,
        "n": len(values),
    }


def fmt_time(seconds):
    """Format a duration with a unit that keeps 3 significant digits."""
    if seconds is None or not np.isfinite(seconds):
        return "–"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_range(low, high):
    """Format a time range 'low–high' in the unit of the larger end."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if high >= scale or unit == "ns":
            return f"{low / scale:.3g}–{high / scale:.3g} {unit}"
    raise AssertionError("unreachable")


def fmt_number(value, digits=3):
    """Format a number with ``digits`` significant digits, thousands grouped."""
    if value is None or not np.isfinite(value):
        return "–"
    if abs(value) >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown_table(headers, rows, align=None):
    """Return a Markdown table; ``align`` is a string of 'l'/'r' per column."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- the machine ------------------------------------------------------------------
def cpu_model():
    """The CPU model name from /proc/cpuinfo (Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info():
    """threadpoolctl's description of the loaded BLAS and OpenMP libraries."""
    from threadpoolctl import threadpool_info

    keep = (
        "user_api",
        "internal_api",
        "version",
        "architecture",
        "threading_layer",
        "num_threads",
        "filepath",
    )
    return [{k: info.get(k) for k in keep} for info in threadpool_info()]


def openblas_report():
    """Return lines describing the OpenBLAS core types and the environment
    variables that override them, with a warning when they are set."""
    lines = []
    for info in blas_info():
        if info["internal_api"] == "openblas":
            lines.append(
                f"OpenBLAS {info['version']} ({os.path.basename(info['filepath'])}):"
                f" core type {info['architecture']}, {info['threading_layer']}"
            )
    set_vars = {k: os.environ[k] for k in OPENBLAS_ENV if k in os.environ}
    if set_vars:
        shown = ", ".join(f"{k}={v}" for k, v in set_vars.items())
        lines.append(
            f"WARNING: {shown} is set in the environment: it forces OpenBLAS's"
            f" kernel choice and can make the numbers incomparable. Run with"
            f" `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python ...`."
        )
    return lines


def machine_info(argv=None):
    """Describe the machine and software for the results files.

    Call after NumPy, SciPy (and torch, when used) are imported, so that
    threadpoolctl sees their BLAS libraries.
    """
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(["python"] + list(sys.argv if argv is None else argv)),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": affinity,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": source_commit(),
        "versions": {
            name: version(dist)
            for name, dist in (
                ("fastbp", "fastbp"),
                ("numpy", "numpy"),
                ("scipy", "scipy"),
                ("torch", "torch"),
                ("scikit-learn", "scikit-learn"),
                ("threadpoolctl", "threadpoolctl"),
            )
        },
        "blas": blas_info(),
        "openblas_env": {k: os.environ.get(k) for k in OPENBLAS_ENV},
    }


def source_commit():
    """The fastbp commit the figures come from ("+changes" when the tree differed from
    it), or None outside a git checkout, so that a reader can tell a stale figure."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=10
        )

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "fastbp")
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+changes" if changed.stdout.strip() else "")


def machine_markdown(info):
    """Render ``machine_info()`` as a Markdown bullet list."""
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    lines = [
        f"- Date: {info['date']}",
        f"- fastbp commit: {info.get('commit') or 'unknown'}",
        f"- Command: `{info['command']}`",
        f"- CPU: {info['cpu']}; {info['logical_cpus']} logical CPUs"
        f" ({info['usable_cpus']} usable by this process)",
        f"- Platform: {info['platform']}, Python {info['python']}",
        f"- Versions: {versions}",
    ]
    for lib in info["blas"]:
        line = f"- {lib['user_api']}: {lib['internal_api']}"
        if lib["version"]:
            line += f" {lib['version']}"
        line += f" ({os.path.basename(lib['filepath'])})"
        if lib["architecture"]:
            line += f", core type {lib['architecture']}"
        if lib["threading_layer"]:
            line += f", threading {lib['threading_layer']}"
        lines.append(line)
    env = ", ".join(
        f"{k}={v if v is not None else '(unset)'}" for k, v in info["openblas_env"].items()
    )
    lines.append(f"- Environment: {env}")
    return "\n".join(lines)
