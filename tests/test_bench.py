"""Smoke tests of the benchmark scripts in bench/: they run at tiny sizes, write
their Markdown and JSON, and leave out torch and scikit-learn when those are absent."""

import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile

import pytest

from fastbp._backend import core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "bench", "run.py")
DIGITS = os.path.join(ROOT, "bench", "digits.py")
GEMM_PATHS = os.path.join(ROOT, "bench", "gemm_paths.py")
BLIS_PRODUCTS = os.path.join(ROOT, "bench", "blis_products.py")
SMOKE_NETWORKS = ["tiny", "deep", "large"]  # what run.py --smoke selects


def have(module):
    return importlib.util.find_spec(module) is not None


def expected_implementations():
    return ["fastbp", "numpy"] + [
        name for name, module in (("torch", "torch"), ("sklearn", "sklearn")) if have(module)
    ]


def run(args, timeout=120):
    # Outside the source tree, so that "python -c" imports the installed fastbp.
    proc = subprocess.run(
        [sys.executable] + args,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "CHECK FAILED" not in proc.stdout, proc.stdout
    return proc


def table_rows(markdown):
    """(first cell, second cell) of every Markdown table row."""
    rows = []
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and not set(cells[0]) <= set(":-"):
            rows.append((cells[0], cells[1]))
    return rows


def test_run_smoke(tmp_path):
    proc = run([RUN, "--smoke", "--out", str(tmp_path)])
    impls = expected_implementations()
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert markdown.strip() == proc.stdout.strip()
    data = json.loads((tmp_path / "results.json").read_text())

    assert data["meta"]["smoke"] and not data["failures"]
    assert all(check["ok"] for check in data["checks"]), data["checks"]
    assert {c["implementation"] for c in data["checks"] if "implementation" in c} == set(impls)
    assert data["gemm"] and all(g["gflops"]["peak"] > 0 for g in data["gemm"])
    # The multiply-add peak of the same run: the widest loop this CPU runs, on every
    # thread asked for, and each network's share of it.
    fma = {(g["dtype"], g["threads"]): g["fma"] for g in data["gemm"]}
    assert all(f["isa"] == core().PEAK_ISA and f["gflops"] > 0 for f in fma.values())
    assert all(f["threads"] == threads for (_, threads), f in fma.items())
    for r in data["results"]:
        peak = fma[(r["dtype"], r["threads"])]["gflops"]
        assert r["pct_of_fma_peak"] == pytest.approx(100 * r["gflops"] / peak)
    assert "## Multiply-add peak (GFLOP/s)" in markdown and "% of FMA peak" in markdown
    for opt, title in (("sgd", "SGD"), ("adam", "Adam")):
        block = [r for r in data["results"] if r["optimizer"] == opt]
        assert sorted((r["network"], r["implementation"]) for r in block) == sorted(
            (n, i) for n in SMOKE_NETWORKS for i in impls
        )
        for r in block:
            assert r["median"] > 0 and r["step_times"] and min(r["step_times"]) > 0
            assert r["gflops"] > 0 and r["samples_per_s"] > 0 and r["finite"]
            if r["implementation"] == "fastbp":
                assert r["ratio_to_fastbp"] == pytest.approx(1.0)
        section = markdown.split(f"### float32, 1 BLAS thread, {title}")[1]
        section = section.split("###")[0].split("\n## ")[0]
        assert sorted(table_rows(section)[1:]) == sorted(
            (n, i) for n in SMOKE_NETWORKS for i in impls
        )
    assert re.search(r"core type \w+", markdown)
    # One-row predict latency: every implementation (and fastbp's scikit-learn
    # drop-in beside scikit-learn's), the same probabilities.
    predictors = impls + (["fastbp.sklearn"] if "sklearn" in impls else [])
    assert sorted(r["implementation"] for r in data["latency"]) == sorted(predictors)
    for r in data["latency"]:
        assert r["calls"] == 200 and 0 < r["median"] <= r["p99"] <= r["p999"]
        assert r["max_error"] < 1e-6  # float32 probabilities of the same weights
    assert next(r for r in data["latency"] if r["implementation"] == "fastbp")["ratio"] == 1
    section = markdown.split("## One-row prediction latency")[1]
    assert sorted(row[1] for row in table_rows(section)[1:]) == ["1"] * len(predictors)


def test_run_caps_the_repeats_of_the_million_row_network(tmp_path):
    """The tabular network's epoch (1,000,192 rows in a full run) is measured at most
    3 times whatever --repeats says, and the report says so."""
    run(
        [RUN, "--smoke", "--networks", "tiny,tabular", "--repeats", "5", "--optimizer", "adam"]
        + ["--implementations", "fastbp,numpy", "--latency-calls", "0", "--no-check"]
        + ["--out", str(tmp_path)]
    )
    data = json.loads((tmp_path / "results.json").read_text())
    repeats = {(r["network"], r["implementation"]): len(r["epoch_times"]) for r in data["results"]}
    assert repeats == {
        ("tiny", "fastbp"): 5,
        ("tiny", "numpy"): 5,
        ("tabular", "fastbp"): 3,
        ("tabular", "numpy"): 3,
    }
    assert {r["epochs_per_measurement"] for r in data["results"]} == {1}  # --smoke
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert "measured 5 time(s) (tabular: at most 3, an epoch of it takes seconds)" in markdown
    assert "| tabular | 50-256-256-2 | relu | cross_entropy | 256 |" in markdown


def test_a_measurement_runs_epochs_back_to_back_for_min_time(tmp_path):
    """With --min-time, each measurement times k whole epochs (k from a timed warm-up
    epoch, at least 1) and records their mean; 0.05 s of 6-step epochs of the tiny
    network takes more than one epoch for fastbp (a fit of 6 steps lasts well under
    25 ms on any machine that runs the suite)."""
    run(
        [RUN, "--smoke", "--networks", "tiny", "--min-time", "0.05", "--optimizer", "sgd"]
        + ["--implementations", "fastbp,numpy", "--latency-calls", "0", "--no-check"]
        + ["--repeats", "2", "--out", str(tmp_path)]
    )
    data = json.loads((tmp_path / "results.json").read_text())
    k = {r["implementation"]: r["epochs_per_measurement"] for r in data["results"]}
    assert set(k) == {"fastbp", "numpy"} and all(isinstance(v, int) for v in k.values())
    assert k["fastbp"] >= 2 and k["numpy"] >= 1
    for r in data["results"]:
        assert len(r["epoch_times"]) == 2
        assert r["step_times"] == pytest.approx([t / 6 for t in r["epoch_times"]])
    assert "for at least 0.05 s" in (tmp_path / "RESULTS.md").read_text()


def test_run_without_torch_and_sklearn(tmp_path):
    """With torch and scikit-learn unimportable, run.py leaves them out."""
    code = (
        "import runpy, sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['sklearn'] = None\n"
        f"sys.argv = [{RUN!r}, '--smoke', '--networks', 'tiny', '--optimizer', 'sgd',"
        f" '--out', {str(tmp_path)!r}]\n"
        f"runpy.run_path({RUN!r}, run_name='__main__')\n"
    )
    proc = run(["-c", code])
    assert "left out: torch, sklearn" in proc.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert sorted(r["implementation"] for r in data["results"]) == ["fastbp", "numpy"]
    assert sorted(r["implementation"] for r in data["latency"]) == ["fastbp", "numpy"]


@pytest.mark.skipif(not have("sklearn"), reason="the digits data set comes with scikit-learn")
def test_digits_quick(tmp_path):
    out = tmp_path / "digits.json"
    proc = run([DIGITS, "--quick", "--json", str(out)])
    impls = expected_implementations()
    data = json.loads(out.read_text())
    assert [r["implementation"] for r in data["digits"]] == impls
    for r in data["digits"]:
        assert r["median"] > 0 and r["accuracy"] > 0.5
    assert [r["implementation"] for r in data["memory"]] == impls
    for r in data["memory"]:
        assert 0 < r["before_mib"] <= r["peak_mib"]
    assert [r["what"] for r in data["imports"]][:2] == ["import numpy", "import fastbp"]
    assert all(r["median"] > 0 for r in data["imports"])
    rows = [first for first, _ in table_rows(proc.stdout)]
    for name in impls:
        assert rows.count(name) == 2  # digits and memory tables
    assert "`import fastbp`" in rows


def test_gemm_paths_quick():
    # Both paths timed for each of the three shapes and three forms, and the rule's
    # choice named; a CPU without a version of the kernel says that BLAS does every
    # product.
    from fastbp._backend import core

    proc = run([GEMM_PATHS, "--quick", "--runs", "1"])
    if not core().SMALL_GEMM_CPU:
        assert "uses BLAS for every product" in proc.stdout
        return
    rows = [line.strip("|").split("|") for line in proc.stdout.splitlines()]
    rows = [[c.strip() for c in r] for r in rows if len(r) == 9 and r[0].strip() == "float32"]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (form, str(m), str(n), str(k))
        for form in ("NN", "NT", "TN")
        for m, n, k in ((32, 32, 64), (64, 100, 100), (128, 512, 784))
    ]
    for r in rows:
        blas, small, ratio = float(r[5]), float(r[6]), float(r[7])
        assert blas > 0 and small > 0 and ratio == pytest.approx(blas / small, rel=0.02, abs=0.01)
        assert r[8] == core().gemm_path(
            int(r[2]), int(r[3]), int(r[4]), r[1][0] == "T", r[1][1] == "T"
        )
    assert re.search(r"the rule takes the faster path for \d+ of 9 products", proc.stdout)


def test_blis_products_times_each_product_of_the_tiny_step():
    # Each of the tiny step's five products timed by fastbp, OpenBLAS and BLIS (its
    # detected configuration and one named), each result checked against NumPy in
    # the script; the ratios are those of the times, the totals their sums.
    pytest.importorskip("blis")
    import shutil

    if shutil.which(os.environ.get("CC", "cc")) is None:
        pytest.skip("no C compiler for bench/repeat_gemm.c")
    proc = run([BLIS_PRODUCTS, "--quick", "--runs", "1", "--configs", "generic"])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    blis_columns = [i for i, c in enumerate(head) if c.startswith("BLIS ") and c.endswith("µs")]
    assert head[6:8] == ["fastbp µs", "OpenBLAS µs"]
    assert blis_columns == list(range(8, len(head) - 2))  # then the two ratios
    assert "BLIS generic µs" in head  # the named configuration (and the detected one)
    assert head[-2:] == ["best BLIS / fastbp", "OpenBLAS / fastbp"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    products = [r for r in rows if r[0].startswith("layer ")]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in products] == [
        ("layer 1 forward", "NN", "32", "32", "64"),
        ("layer 1 gradient", "TN", "64", "32", "32"),
        ("layer 2 forward", "NN", "32", "10", "32"),
        ("layer 2 delta down", "NT", "32", "32", "10"),
        ("layer 2 gradient", "TN", "32", "10", "32"),
    ]
    total = next(r for r in rows if r[0] == "**the step's products**")
    for r in products + [total]:
        fastbp, openblas, blis = float(r[6]), float(r[7]), min(float(r[i]) for i in blis_columns)
        assert fastbp > 0 and openblas > 0 and blis > 0
        assert float(r[-2]) == pytest.approx(blis / fastbp, rel=0.03, abs=0.01)
        assert float(r[-1]) == pytest.approx(openblas / fastbp, rel=0.03, abs=0.01)
    for column in [6, 7] + blis_columns:
        assert float(total[column]) == pytest.approx(
            sum(float(r[column]) for r in products), rel=0.01, abs=0.02
        )
    bad = subprocess.run(
        [sys.executable, BLIS_PRODUCTS, "--quick", "--configs", "nonesuch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "no configuration nonesuch" in bad.stderr


def test_results_name_the_commit_they_come_from():
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout (an sdist): the commit is unknown there")
    spec = importlib.util.spec_from_file_location(
        "bench_common", os.path.join(ROOT, "bench", "common.py")
    )
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    commit = common.source_commit()
    assert commit.split("+")[0] == head.stdout.strip()
    assert f"- fastbp commit: {commit}" in common.machine_markdown(common.machine_info())


def test_charts_from_the_results(tmp_path):
    """bench/charts.py draws the step-time chart from run.py's JSON and the
    estimators' chart from sklearn_compare.py's: two PNG files."""
    pytest.importorskip("matplotlib")
    sklearn_json = tmp_path / "sklearn.json"
    rows = [
        dict(data="digits", solver=s, speedup=v, fastbp_s=0.1, sklearn_s=0.1 * v)
        for s, v in (("adam", 4.0), ("lbfgs", 1.5))
    ]
    sklearn_json.write_text(json.dumps({"rows": rows}))
    charts = os.path.join(ROOT, "bench", "charts.py")
    run(
        [
            charts,
            "--results",
            os.path.join(ROOT, "bench", "results.json"),
            "--sklearn",
            str(sklearn_json),
            "--out",
            str(tmp_path),
        ]
    )
    for name in ("steps.png", "sklearn.png"):
        with open(tmp_path / name, "rb") as file:
            assert file.read(8) == b"\x89PNG\r\n\x1a\n"


def test_sklearn_compare_quick(tmp_path):
    """bench/sklearn_compare.py --quick: every (data set, solver) row for both
    libraries, and the online-learning case (partial_fit, 32 rows a call), whose
    held-out accuracies agree (the same algorithm: at most one test sample of the
    450 may flip on rounding) and whose per-call times are measured."""
    pytest.importorskip("sklearn")
    out, out_json = tmp_path / "SKLEARN.md", tmp_path / "sklearn.json"
    script = os.path.join(ROOT, "bench", "sklearn_compare.py")
    run([script, "--quick", "--out", str(out), "--json", str(out_json)], timeout=600)
    data = json.loads(out_json.read_text())
    assert data["threads"] == 1 and "1 thread(s) for each library" in out.read_text()
    # Both libraries' BLAS (NumPy's for scikit-learn, SciPy's for fastbp) ran limited.
    assert len(data["blas_threads"]) >= 1 and set(data["blas_threads"].values()) == {1}
    assert {(r["data"], r["solver"]) for r in data["rows"]} == {
        (d, s)
        for d in ("digits", "iris", "wine", "breast cancer", "diabetes")
        for s in ("adam", "sgd nesterov", "lbfgs")
    }
    online = data["online"]
    assert online["batch"] == 32 and online["passes"] == 5
    assert abs(online["fastbp"]["score"] - online["sklearn"]["score"]) <= 1 / 450 + 1e-12
    assert online["fastbp"]["score"] > 0.9  # digits after five passes
    assert online["fastbp"]["call_s"] > 0 and online["sklearn"]["call_s"] > 0
    speedup = online["sklearn"]["call_s"] / online["fastbp"]["call_s"]
    assert online["speedup"] == pytest.approx(speedup)
    rows = dict(table_rows(out.read_text()))
    assert rows["fastbp"] == f"{online['fastbp']['call_s'] * 1e6:.0f}"
    assert rows["sklearn"] == f"{online['sklearn']['call_s'] * 1e6:.0f}"


def test_shared_writes_builds_and_times_the_three_updates(tmp_path):
    # bench/shared_writes.c, as bench/README.md builds it (a C compiler with OpenMP,
    # which building fastbp from source needs too), with a small array.
    import shutil

    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "shared_writes"
    build = subprocess.run(
        [cc, "-O3", "-fopenmp", os.path.join(ROOT, "bench", "shared_writes.c"), "-o", str(exe)],
        capture_output=True,
        text=True,
    )
    if build.returncode != 0:
        pytest.skip(f"no OpenMP C compiler: {build.stderr[-300:]}")
    out = subprocess.run([str(exe), "64", "40"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "parameters: 64 KB, 2 threads, 40 iterations" in out.stdout
    own = float(re.search(r"its own half: ([0-9.]+) us", out.stdout).group(1))
    shared = float(re.search(r"all of them: +([0-9.]+) us", out.stdout).group(1))
    ratio = float(re.search(r"ratio: ([0-9.]+)", out.stdout).group(1))
    assert own > 0 and shared > 0
    assert ratio == pytest.approx(shared / own, rel=0.05, abs=0.01)
    if platform.machine().lower() in ("x86_64", "amd64"):
        line = r"dropping the other half: ([0-9.]+) us \(dropping: ([0-9.]+) us\)"
        dropped = re.search(line, out.stdout)
        assert dropped is not None, out.stdout
        assert float(dropped.group(1)) > 0 and float(dropped.group(2)) > 0
    else:
        assert "dropping lines: not on this CPU" in out.stdout
    bad = subprocess.run([str(exe), "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "usage" in bad.stderr


def test_phases_runs_or_says_how_to_build_the_timers():
    # bench/phases.py needs the step's phase timers (FASTBP_PHASE_TIMES=1): with them
    # it prints a row for each thread of each thread count; without, it says how to
    # build them, and fails.
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "phases.py"), "--network", "small"]
        + ["--threads", "1,2", "--steps", "4", "--repeats", "1"],
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if not core().PHASE_TIMES:
        assert proc.returncode != 0
        assert "FASTBP_PHASE_TIMES=1 pip install" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| 1 ")]
    rows += [line for line in proc.stdout.splitlines() if line.startswith("| 2 ")]
    threads_and_parts = [tuple(int(c) for c in row.split("|")[1:3]) for row in rows]
    expected = [(1, 0), (2, 0), (2, 1)] if core().HAVE_OPENMP else [(1, 0), (2, 0)]
    assert threads_and_parts == expected


def test_phases_rejects_bad_arguments():
    for bad in (["--threads", "0"], ["--threads", "a"], ["--steps", "0"], ["--network", "x"]):
        proc = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", "phases.py")] + bad,
            cwd=tempfile.gettempdir(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and "error" in proc.stderr, (bad, proc.stderr)
