"""Where a training step's time goes, thread by thread: the phases of fastbp's step.

Needs fastbp built with its phase timers, which other builds leave out::

    FASTBP_PHASE_TIMES=1 pip install --no-build-isolation -e .
    python bench/phases.py --network small --threads 1,2

For each thread count, ``--repeats`` epochs of ``--steps`` minibatches (the best
epoch, by wall time, is shown) and, for each thread of the step, the microseconds
a step that it spent in each phase (``fastbp._core.PHASES``): its rows' gather,
forward pass, loss and deltas; waiting at the first barrier; its share of the
gradients; its share of the update (the same weights); waiting at the second
barrier. "wall" is the fit's
time a step, Python included. One thread has no barriers to wait at; compare its
phases with each thread's share at two.
"""

import argparse
import os
import sys
import time

from threadpoolctl import threadpool_limits

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import NETWORKS  # noqa: E402

from common import load_fastbp  # noqa: E402
from impls import FastbpImpl, default_optimizer, initial_weights, make_data  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--network", default="small", choices=sorted(NETWORKS))
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--steps", type=int, default=200, help="minibatches an epoch")
    parser.add_argument("--repeats", type=int, default=7, help="measured epochs")
    args = parser.parse_args(argv)
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    for name in ("steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if any(t < 1 for t in args.threads):
        parser.error("--threads must be at least 1")
    return args


def measure(network, threads, args, core):
    """The best of ``args.repeats`` epochs: (wall seconds a step, seconds a step of
    each phase for each part that ran, shape (parts, phases))."""
    X, y = make_data(network, network.batch * args.steps, args.dtype)
    weights = initial_weights(network, args.dtype)
    impl = FastbpImpl(network, default_optimizer(args.optimizer), args.dtype, weights)
    data = impl.prepare(X, y)
    best = None
    with threadpool_limits(threads):
        impl.epoch(data)  # warm-up
        for _ in range(args.repeats):
            core.phase_times(reset=True)
            start = time.perf_counter()
            impl.epoch(data)
            wall = time.perf_counter() - start
            seconds, steps = core.phase_times()
            ran = steps > 0
            if not ran.any():
                raise RuntimeError("the fit ran no timed step")
            per_step = seconds[ran] / steps[ran][:, None]
            if best is None or wall < best[0]:
                best = (wall, per_step)
    return best[0] / args.steps, best[1]


def main(argv=None):
    args = parse_args(argv)
    fastbp = load_fastbp()
    core = fastbp._backend.core()
    if not core.PHASE_TIMES:
        sys.exit(
            "bench/phases.py: this fastbp was built without its phase timers; rebuild"
            " with FASTBP_PHASE_TIMES=1 pip install --no-build-isolation -e ."
        )
    network = NETWORKS[args.network]
    print(
        f"{network.name} {network.arch}, batch {network.batch}, {args.optimizer},"
        f" {args.dtype}: microseconds a step"
    )
    header = "| threads | thread | wall | " + " | ".join(core.PHASES) + " |"
    print(header)
    print("|" + " ---: |" * (header.count("|") - 1))
    for threads in args.threads:
        wall, per_step = measure(network, threads, args, core)
        for part, row in enumerate(per_step):
            cells = " | ".join(f"{v * 1e6:.1f}" for v in row)
            print(f"| {threads} | {part} | {wall * 1e6:.1f} | {cells} |")


if __name__ == "__main__":
    main()
