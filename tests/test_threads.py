"""Training split over threads (OpenMP) gives the single-threaded result."""

import os
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import fastbp
from fastbp import _threads
from fastbp._backend import core

needs_openmp = pytest.mark.skipif(not core().HAVE_OPENMP, reason="built without OpenMP")


@pytest.fixture
def always_parallel(monkeypatch):
    """Split every step over the threads, however small the network."""
    monkeypatch.setattr(_threads, "PARALLEL_MIN_FLOPS_PER_THREAD", 0)


def train(threads, loss, optimizer, batch_size, n=37, seed=0, dtype="float64"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 6))
    if loss == "cross_entropy":
        y = rng.integers(0, 3, n)
    elif loss == "soft":
        y = rng.dirichlet(np.ones(3), n)
        loss = "cross_entropy"
    elif loss == "binary_cross_entropy":
        y = rng.uniform(0, 1, (n, 3))
    else:
        y = rng.normal(size=(n, 3))
    model = fastbp.Sequential(
        [fastbp.Dense(9, "tanh"), fastbp.Dense(5, "relu"), fastbp.Dense(3)],
        loss=loss,
        optimizer=optimizer,
        seed=seed,
        dtype=dtype,
        threads=threads,
    )
    history = model.fit(X, y, epochs=3, batch_size=batch_size)
    return model, history


@needs_openmp
@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "soft", "binary_cross_entropy"])
@pytest.mark.parametrize("batch_size", [1, 2, 5, 16, 37])
def test_threads_match_one_thread(always_parallel, loss, batch_size):
    one, h1 = train(1, loss, fastbp.SGD(lr=0.02, momentum=0.9), batch_size)
    two, h2 = train(2, loss, fastbp.SGD(lr=0.02, momentum=0.9), batch_size)
    np.testing.assert_allclose(two.flat_params, one.flat_params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-10)
    if "accuracy" in h1.history:
        assert h2["accuracy"] == h1["accuracy"]


@needs_openmp
@pytest.mark.parametrize("threads", [2, 3, 5])
def test_adam_over_threads_and_more_threads_than_rows(always_parallel, threads):
    one, _ = train(1, "cross_entropy", fastbp.Adam(lr=0.01), batch_size=4)
    many, _ = train(threads, "cross_entropy", fastbp.Adam(lr=0.01), batch_size=4)
    np.testing.assert_allclose(many.flat_params, one.flat_params, rtol=1e-10, atol=1e-12)
    assert many.optimizer_state.step == one.optimizer_state.step == 30


def train_everything(threads, X, y, sample_weight):
    """A network where every part of the update split shows: a first layer narrower
    than the team (a part with no weight rows), L1 and L2 penalties on weights and
    biases, a frozen layer, a residual block, gradient clipping by norm and value.

    In float64: a thread's share of a product is a product of fewer rows, which
    BLAS may sum in another order (OpenBLAS's arm64 kernels do), so the split and
    the one-thread step agree to rounding, not to the bit; in float64 that is far
    below the 1e-10 the tests allow, and a parameter updated twice or never (Adam
    moves it by up to the learning rate, 0.05) far above."""
    model = fastbp.Sequential(
        [
            fastbp.Dense(
                7,
                "tanh",
                kernel_regularizer=fastbp.regularizers.L1L2(1e-3, 2e-3),
                bias_regularizer=fastbp.regularizers.L2(3e-3),
            ),
            fastbp.Dense(7, "relu", trainable=False),
            fastbp.Residual([fastbp.Dense(7, "tanh")]),
            fastbp.Dense(3, bias_regularizer=fastbp.regularizers.L1(1e-3)),
        ],
        loss="cross_entropy",
        optimizer=fastbp.Adam(lr=0.05, clipnorm=0.5, clipvalue=0.02),
        seed=3,
        threads=threads,
        dtype="float64",
    )
    history = model.fit(X, y, epochs=4, batch_size=5, sample_weight=sample_weight)
    return model, history


@needs_openmp
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("threads", [2, 3])
def test_the_update_split_over_threads_gives_the_one_thread_step(always_parallel, sparse, threads):
    """Each thread updates the weight rows and bias entries whose gradients it
    computed: with 3 threads and 2 inputs one part owns no weight row of the first
    layer. Sums split over parts (the clip norm, the penalty) round differently, so
    the comparison allows 1e-10 relative."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(23, 2))
    X[rng.random(X.shape) < 0.4] = 0
    y = rng.integers(0, 3, 23)
    sample_weight = rng.uniform(0.5, 2, 23)
    if sparse:
        X = pytest.importorskip("scipy.sparse").csr_matrix(X)
    one, h1 = train_everything(1, X, y, sample_weight)
    many, h2 = train_everything(threads, X, y, sample_weight)
    assert one.flat_params[3 * 7 : 3 * 7 + 7 * 7 + 7].tolist() == (
        many.flat_params[3 * 7 : 3 * 7 + 7 * 7 + 7].tolist()
    ), "the frozen layer moved"
    np.testing.assert_allclose(many.flat_params, one.flat_params, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-10)
    assert many.optimizer_state.step == one.optimizer_state.step == 20


@needs_openmp
@pytest.mark.parametrize("threads", [2, 3, 4, 7])
def test_the_gradient_shares_cover_unequal_layers_once(always_parallel, threads):
    """The gradients' work is cut across the trainable layers taken together, so a
    part may own whole layers, a layer's rows may fall to several parts and its bias
    entries are shared by those alone. Here a wide first layer (40 x 11 weights)
    holds most of the work, the small 11 x 1 and 1 x 2 layers fall inside one
    part's share (or several parts' with 7 threads), and the last layer is frozen:
    every row and bias entry must be computed and updated exactly once (Adam moves a
    parameter updated twice, or never, by a different amount), and the frozen one not
    at all. In float64, as train_everything and for its reason."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(29, 40))
    y = rng.normal(size=(29, 3))

    def fit(threads):
        model = fastbp.Sequential(
            [
                fastbp.Dense(11, "tanh"),
                fastbp.Dense(1, "tanh"),
                fastbp.Dense(2, "relu", bias_regularizer=fastbp.regularizers.L1(1e-3)),
                fastbp.Dense(3, trainable=False),
            ],
            loss="mse",
            optimizer=fastbp.Adam(lr=0.05),
            seed=4,
            threads=threads,
            dtype="float64",
        )
        model.build(40)
        frozen = model.layers[-1]
        start = frozen.weight.tolist(), frozen.bias.tolist()
        model.fit(X, y, epochs=3, batch_size=6)
        assert (frozen.weight.tolist(), frozen.bias.tolist()) == start, "the frozen layer moved"
        return model

    one, many = fit(1), fit(threads)
    np.testing.assert_allclose(many.flat_params, one.flat_params, rtol=1e-10, atol=1e-12)


@needs_openmp
def test_threaded_training_is_deterministic(always_parallel):
    first, _ = train(2, "cross_entropy", fastbp.SGD(lr=0.1, momentum=0.5), 8, dtype="float32")
    second, _ = train(2, "cross_entropy", fastbp.SGD(lr=0.1, momentum=0.5), 8, dtype="float32")
    np.testing.assert_array_equal(first.flat_params, second.flat_params)


@needs_openmp
def test_divergence_detected_over_threads(always_parallel):
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(40, 3)) * 1e3, rng.normal(size=40) * 1e3
    model = fastbp.Sequential(
        [fastbp.Dense(8, "relu"), fastbp.Dense(1)],
        loss="mse",
        optimizer=fastbp.SGD(lr=1e3),
        seed=0,
        threads=2,
    )
    model.build(3)
    before = model.flat_params.copy()
    with pytest.raises(FloatingPointError, match="learning rate"):
        model.fit(X, y, epochs=3, batch_size=8)
    np.testing.assert_array_equal(model.flat_params, before)


def test_plan_keeps_tiny_steps_on_one_thread():
    assert _threads.plan(10_000, threads=2) == (1, 2)
    assert _threads.plan(10**9, threads=1) == (1, 1)
    if core().HAVE_OPENMP:
        assert _threads.plan(10**9, threads=2) == (2, 1)


def test_threads_argument_checked():
    with pytest.raises(ValueError, match="threads"):
        fastbp.Sequential([fastbp.Dense(1)], threads=0)
    with pytest.raises(TypeError, match="threads"):
        fastbp.Sequential([fastbp.Dense(1)], threads=1.5)
    # Not only at the first fit, inside threadpoolctl: at construction, naming the limit.
    for threads in (2**64, _threads.MAX_THREADS + 1):
        with pytest.raises(ValueError, match=r"threads must be <= 1024"):
            fastbp.Sequential([fastbp.Dense(1)], threads=threads)


def test_the_largest_thread_budget_trains():
    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.zeros(40)
    model = fastbp.Sequential([fastbp.Dense(1)], loss="mse", threads=_threads.MAX_THREADS)
    history = model.fit(X, y, epochs=2, batch_size=8)
    assert model.threads == 1024 and np.isfinite(history["loss"]).all()


@needs_openmp
def test_the_fits_start_loss_runs_with_blas_limited_as_the_steps(always_parallel, monkeypatch):
    # A BLAS call with its own threads between multi-threaded runs of steps leaves
    # a BLAS worker spinning on the core the step's second thread needs (it halved
    # a 2-thread epoch): the starting loss, which a fit computes only for a loss
    # above its first minibatch's bound (forced here by a tiny EXPLOSION), runs
    # under the steps' BLAS limit.
    from fastbp import trainer

    seen = []
    original = trainer._start_loss

    def watched(model, data, params):
        seen.append(_threads.blas_threads())
        return original(model, data, params)

    monkeypatch.setattr(trainer, "_start_loss", watched)
    monkeypatch.setattr(trainer, "EXPLOSION", 1e-6)
    with threadpool_limits(limits=2), pytest.raises(FloatingPointError, match="1e-06 times"):
        train(2, "cross_entropy", fastbp.SGD(lr=0.02), batch_size=8)
    assert _threads.plan(1e9, 2) == (2, 1) and seen == [1]


_LIMIT_BEFORE_FIRST_USE = """
import json
import numpy as np
import fastbp
from threadpoolctl import threadpool_info, threadpool_limits
from fastbp import _threads

with threadpool_limits(limits=1):  # before fastbp loads SciPy's OpenBLAS
    model = fastbp.Sequential([fastbp.Dense(64, "relu"), fastbp.Dense(3, "softmax")], seed=0)
    X = np.random.default_rng(0).normal(size=(512, 256))
    model.fit(X, np.arange(512) % 3, epochs=1, batch_size=256)
    inside = {"budget": _threads.blas_threads(), "plan": _threads.plan(1e12)}
print(json.dumps(dict(inside, after=[lib["num_threads"] for lib in threadpool_info()
                                    if lib["user_api"] == "blas"])))
"""


def test_a_limit_set_before_fastbp_loads_its_blas_is_kept():
    # threadpool_limits limits the BLAS libraries loaded when it starts; fastbp
    # loads SciPy's OpenBLAS at its first fit, inside the block here, where that
    # library still has every thread: the budget is the fewest of any library, so
    # the block's limit holds (a fresh process, where nothing has loaded it yet).
    import json
    import subprocess
    import sys
    import tempfile

    if (os.cpu_count() or 1) < 2 or os.environ.get("OPENBLAS_NUM_THREADS", "") == "1":
        pytest.skip("needs a BLAS with more than one thread to limit")
    try:
        out = subprocess.run(
            [sys.executable, "-c", _LIMIT_BEFORE_FIRST_USE],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tempfile.gettempdir(),  # the installed fastbp, not the source tree's
        )
    except OSError as exc:  # tools/arm64_tests.sh: qemu-user runs this process only
        pytest.skip(f"cannot start another Python process here: {exc}")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["budget"] == 1 and got["plan"] == [1, 1]
    assert max(got["after"]) > 1  # SciPy's library, loaded unlimited: what fit saw


def test_blas_limited_limits_every_blas_library_and_restores_each():
    # Inside: every BLAS library at the limit. After (also when the block raises):
    # each library back at its own count, a library set differently from the others
    # included.
    libraries = _threads._blas().lib_controllers
    assert libraries  # SciPy's OpenBLAS at least
    with threadpool_limits(limits=2, user_api="blas"):
        libraries[0].set_num_threads(1)
        before = [lib.num_threads for lib in libraries]
        assert before[0] == 1 and all(count == 2 for count in before[1:])
        with _threads.blas_limited(1):
            assert [lib.num_threads for lib in libraries] == [1] * len(libraries)
        assert [lib.num_threads for lib in libraries] == before
        with pytest.raises(RuntimeError, match="inside"):
            with _threads.blas_limited(2):
                assert [lib.num_threads for lib in libraries] == [2] * len(libraries)
                raise RuntimeError("inside")
        assert [lib.num_threads for lib in libraries] == before


needs_phase_timers = pytest.mark.skipif(
    not core().PHASE_TIMES, reason="built without FASTBP_PHASE_TIMES=1"
)


@pytest.mark.skipif(core().PHASE_TIMES, reason="a build with the phase timers")
def test_phase_times_are_none_without_the_timers():
    assert core().phase_times() is None and core().phase_times(reset=True) is None


@needs_phase_timers
@pytest.mark.parametrize("threads", [1, 2])
def test_phase_timers_account_for_every_step_of_every_thread(threads, always_parallel):
    # 37 rows in minibatches of 8: 5 steps an epoch, the last of 5 rows; 3 epochs.
    # Each thread of the team counts each step once and times its five phases (its
    # work, gradients and SGD update all take time); the time is within the fit's,
    # and a reset zeroes both.
    if threads > 1 and not core().HAVE_OPENMP:
        pytest.skip("built without OpenMP")
    core().phase_times(reset=True)
    with threadpool_limits(limits=threads):
        start = time.perf_counter()
        train(threads, "cross_entropy", fastbp.SGD(lr=0.02), batch_size=8, n=37)
        wall = time.perf_counter() - start
    seconds, steps = core().phase_times(reset=True)
    assert seconds.shape == (core().MAX_THREADS, len(core().PHASES))
    assert steps.tolist() == [15] * threads + [0] * (len(steps) - threads)
    assert core().PHASES == ("work", "first barrier", "gradients", "update", "second barrier")
    assert (seconds[:threads, [0, 2, 3]] > 0).all()
    assert (seconds >= 0).all() and not seconds[threads:].any()
    assert (seconds[:threads].sum(axis=1) <= wall).all()
    after, counted = core().phase_times()
    assert not after.any() and not counted.any()
