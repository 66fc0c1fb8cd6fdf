"""Data-parallel training over MPI: measured throughput on this machine and a
ring-allreduce model of many machines.

Usage (from the repository root, mpi4py and mpirun installed: pip install
"fastbp[mpi]")::

    python bench/mpi_scaling.py            # writes bench/MPI.md
    python bench/mpi_scaling.py --quick    # fewer steps, prints only

The driver launches itself under ``mpirun -n 1`` and ``-n 2`` (one thread per
rank, float32, Adam) on the benchmark's medium and large networks
(``bench/run.py``) and measures, per training step: the wall time, the time spent
inside ``Allreduce`` (the step buffer; with 2 ranks this includes waiting for the
slower rank), and the bare ``Allreduce`` of a buffer that size after a barrier
(the transfer alone). Per-rank share: the network's batch (256 and 1024 rows), so
2 ranks train a global minibatch twice as large (weak scaling).

From the measured compute time per step, the model of a ring allreduce over N
machines,

    T_allreduce(N) = 2 (N - 1) / N * bytes / bandwidth + 2 (N - 1) * latency,

gives the efficiency T_compute / (T_compute + T_allreduce(N)) at 4 to 64 ranks
(no overlap of communication with computation), for a fixed share per rank (weak
scaling: the global batch grows with N) and for a fixed global batch (strong
scaling: each rank's compute shrinks as 1/N).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
NETWORKS = {  # bench/run.py's medium and large networks, float32
    "medium": ((784, 512, 512, 10), "cross_entropy", 256),
    "large": ((1024, 4096, 4096, 1024), "mse", 1024),
}
STEPS = {"medium": 40, "large": 4}
QUICK_STEPS = {"medium": 10, "large": 2}
BANDWIDTHS = {"10 Gbit/s": 10e9 / 8, "100 Gbit/s": 100e9 / 8}  # bytes per second
# Per-hop latency of one message: TCP over 10 Gbit Ethernet, about 20 us; RDMA-class
# 100 Gbit/s fabrics (InfiniBand, RoCE), about 5 us.
LATENCY = {"10 Gbit/s": 20e-6, "100 Gbit/s": 5e-6}
RANKS = (4, 8, 16, 32, 64)


class TimedComm:
    """A communicator that times its Allreduce calls (fit(comm=...) duck-types)."""

    def __init__(self, comm):
        self.comm, self.allreduce_seconds, self.allreduce_calls = comm, 0.0, 0

    def Allreduce(self, *args, **kwargs):  # noqa: N802 (mpi4py's name)
        start = time.perf_counter()
        self.comm.Allreduce(*args, **kwargs)
        self.allreduce_seconds += time.perf_counter() - start
        self.allreduce_calls += 1

    def __getattr__(self, name):
        return getattr(self.comm, name)


def worker(name, steps):
    """One rank: train ``steps`` steps of ``name`` (after one warm-up epoch)."""
    from mpi4py import MPI

    import fastbp

    comm = MPI.COMM_WORLD
    size = comm.Get_size()
    widths, loss, share = NETWORKS[name]
    batch = share * size
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch * steps, widths[0])).astype(np.float32)
    if loss == "mse":
        y = rng.normal(size=(batch * steps, widths[-1])).astype(np.float32)
    else:
        y = rng.integers(0, widths[-1], batch * steps)
    layers = [fastbp.Dense(w, "relu") for w in widths[1:-1]]
    layers.append(fastbp.Dense(widths[-1], "softmax" if loss == "cross_entropy" else "linear"))
    model = fastbp.Sequential(layers, loss=loss, optimizer="adam", seed=0, threads=1)
    timed = TimedComm(comm)
    model.fit(X[:batch], y[:batch], epochs=1, batch_size=batch, comm=timed)  # warm-up
    timed.allreduce_seconds, timed.allreduce_calls = 0.0, 0
    comm.Barrier()
    start = time.perf_counter()
    model.fit(X, y, epochs=1, batch_size=batch, comm=timed)
    wall = time.perf_counter() - start
    # The bare transfer: an Allreduce of the step buffer's size after a barrier.
    buffer = np.zeros(model.count_params() + 9, dtype=np.float32)
    bare = []
    for _ in range(max(3, steps // 2)):
        comm.Barrier()
        t0 = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        bare.append(time.perf_counter() - t0)
    # Per step: the fit's Allreduces, less the few per fit (setup, epoch, finish).
    in_allreduce = timed.allreduce_seconds / steps
    result = {
        "network": name,
        "ranks": size,
        "params": model.count_params(),
        "bytes": int(buffer.nbytes),
        "step_s": wall / steps,
        "allreduce_s": in_allreduce,
        "bare_allreduce_s": float(np.median(bare)),
        "samples_per_s": batch * steps / wall,
    }
    if comm.Get_rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def launch(ranks, name, steps):
    command = ["mpirun", "--oversubscribe", "-n", str(ranks)]
    if os.geteuid() == 0:
        command.append("--allow-run-as-root")
    command += [sys.executable, os.path.abspath(__file__), "--worker", name, str(steps)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def allreduce_time(nbytes, ranks, bandwidth, latency):
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + 2 * (ranks - 1) * latency


def model_table(measured):
    """Efficiency at RANKS for each network and bandwidth, weak and strong scaling."""
    lines = [
        "| network | parameters | link | scaling | " + " | ".join(f"N={n}" for n in RANKS) + " |",
        "| :--- | ---: | :--- | :--- | " + " | ".join("---:" for _ in RANKS) + " |",
    ]
    for name, (one, _) in measured.items():
        compute = one["step_s"] - one["allreduce_s"]  # one rank: the step's compute
        for link, bandwidth in BANDWIDTHS.items():
            for scaling in ("weak", "strong"):
                cells = []
                for n in RANKS:
                    work = compute if scaling == "weak" else compute / n
                    comm = allreduce_time(one["bytes"], n, bandwidth, LATENCY[link])
                    cells.append(f"{work / (work + comm):.0%}")
                lines.append(
                    f"| {name} | {one['params']:,} | {link} | {scaling} | "
                    + " | ".join(cells)
                    + " |"
                )
    return "\n".join(lines)


def measured_table(measured):
    lines = [
        "| network | ranks | global batch | samples/s | step (ms) | in Allreduce (ms) |"
        " Allreduce share | bare Allreduce (ms) |",
        "| :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in measured.items():
        for r in runs:
            batch = NETWORKS[name][2] * r["ranks"]
            lines.append(
                f"| {name} | {r['ranks']} | {batch} | {r['samples_per_s']:,.0f} |"
                f" {1e3 * r['step_s']:.1f} | {1e3 * r['allreduce_s']:.2f} |"
                f" {r['allreduce_s'] / r['step_s']:.1%} | {1e3 * r['bare_allreduce_s']:.2f} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("NETWORK", "STEPS"))
    parser.add_argument("--quick", action="store_true", help="fewer steps; print only")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    steps = QUICK_STEPS if args.quick else STEPS
    measured = {name: [launch(n, name, steps[name]) for n in (1, 2)] for name in NETWORKS}
    text = (
        "## Measured (this machine)\n\n"
        + measured_table(measured)
        + "\n\n## Predicted efficiency (ring allreduce, no overlap)\n\n"
        + model_table(measured)
        + "\n"
    )
    print(text)
    if not args.quick:
        with open(os.path.join(HERE, "mpi_results.json"), "w") as file:
            json.dump(measured, file, indent=1)
        print("bench/mpi_results.json written; bench/MPI.md holds the discussion")


if __name__ == "__main__":
    main()
