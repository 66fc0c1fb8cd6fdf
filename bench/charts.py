"""Charts of the benchmark results (matplotlib): time per training step of each
implementation per network (from ``bench/results.json``, written by ``run.py``) and
fit time of fastbp.sklearn against scikit-learn (from ``bench/sklearn.json``,
written by ``sklearn_compare.py --json``).

Usage (from the repository root)::

    python bench/charts.py            # writes bench/steps.png and bench/sklearn.png

Each chart shows ratios (time ÷ fastbp's, log scale): absolute times drift on a
shared machine, ratios measured in one interleaved run hold.
"""

import argparse
import collections
import json
import os

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def step_chart(results_path, out_path, plt):
    """Time per step ÷ fastbp's, one group of bars per (network, dtype, threads)."""
    with open(results_path) as file:
        rows = json.load(file)["results"]
    groups = collections.OrderedDict()
    for row in rows:
        key = f"{row['network']} {row['arch']}\n{row['dtype']}, {row['threads']} thr"
        groups.setdefault(key, {})[row["implementation"]] = row["ratio_to_fastbp"]
    implementations = sorted(
        {name for group in groups.values() for name in group}, key=lambda n: n != "fastbp"
    )
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(groups)), 4.8), layout="constrained")
    width = 0.8 / len(implementations)
    x = np.arange(len(groups))
    for i, name in enumerate(implementations):
        values = [group.get(name, np.nan) for group in groups.values()]
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, list(groups), fontsize=7, rotation=30, ha="right")
    ax.set_title("Time per training step ÷ fastbp's (higher: fastbp faster)")
    ax.legend(fontsize=8)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def sklearn_chart(results_path, out_path, plt):
    """scikit-learn's fit time ÷ fastbp.sklearn's, per data set and solver."""
    with open(results_path) as file:
        rows = json.load(file)["rows"]
    labels = [f"{r['data']}\n{r['solver']}" for r in rows]
    speedups = [r["speedup"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(rows)), 4.8), layout="constrained")
    ax.bar(np.arange(len(rows)), speedups, color="tab:blue")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(rows)), labels, fontsize=6, rotation=60, ha="right")
    ax.set_title("scikit-learn's MLP fit time ÷ fastbp.sklearn's (same results)")
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results.json"))
    parser.add_argument("--sklearn", default=os.path.join(HERE, "sklearn.json"))
    parser.add_argument("--out", default=HERE)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if os.path.exists(args.results):
        written.append(step_chart(args.results, os.path.join(args.out, "steps.png"), plt))
    if os.path.exists(args.sklearn):
        written.append(sklearn_chart(args.sklearn, os.path.join(args.out, "sklearn.png"), plt))
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
