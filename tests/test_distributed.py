"""Data-parallel training over MPI (fastbp.distributed).

The kernel keywords that make a share of a minibatch compute its part of the
global step (``mask_row0``, ``penalty_weight``) are tested here in one process.
The rest runs tests/_mpiwork.py under ``mpirun`` (2 and 3 ranks, oversubscribed:
more processes than cores is fine for correctness) and judges what every rank
wrote; those tests skip when mpi4py or mpirun is absent.

Tolerances: in float64 the N-rank fit sums each minibatch's gradient in N parts
(each weighted by its share's weight) where one process sums it in one; those are
different orders of the same floating-point sums, about 1e-16 relative per step,
and a few epochs of small networks amplify them to about 1e-15 (measured); 1e-10
leaves a wide margin and still catches any wrong weighting (which shows at 1e-3 or
more). In float32 the same rounding is 6e-8 per operation; 4 epochs of Adam give
2e-7 relative (measured): 1e-5 bounds it with margin.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import _codes
from fastbp._backend import core

HERE = os.path.dirname(__file__)
WORK = os.path.join(HERE, "_mpiwork.py")
TIMEOUT = 120  # seconds per mpirun: far above the few seconds a run takes


# -- the kernel keywords, in one process -------------------------------------------
def _model(regularizer=None, dropout=0.3):
    model = fastbp.Sequential(
        [
            fastbp.Dropout(0.2),
            fastbp.Dense(6, "tanh", kernel_regularizer=regularizer),
            fastbp.Dropout(dropout),
            fastbp.Dense(3, "softmax"),
        ],
        seed=4,
        dtype="float64",
        threads=1,
    )
    model.build(5)
    return model


def _gradient(model, X, labels, weights, mask_row0=0, penalty_weight=0.0):
    """The share's gradient by batch_gradients (rows in storage order) and its loss."""
    network = model._network
    grads = np.zeros_like(network.params)
    ws = network.training_workspace(X.shape[0])
    network.sync_trainable()
    stats = np.zeros(1, dtype=_codes.BATCH_STATS)
    status = core().batch_gradients(
        params=network.params,
        grads=grads,
        work=ws.buffer,
        capacity=ws.capacity,
        label_work=ws.labels,
        weight_work=ws.weights,
        plan=network.compiled,
        X=X,
        targets=np.empty((0, 3)),
        labels=labels,
        sample_weight=weights,
        order=np.empty(0, dtype=np.intp),
        batch_size=X.shape[0],
        batch=0,
        loss_kind=_codes.LOSSES["cross_entropy_labels"],
        loss_param=0.0,
        step=7,
        stats=stats,
        mask_row0=mask_row0,
        penalty_weight=penalty_weight,
    )
    assert status == _codes.STATUS_OK
    return grads, float(stats["loss"][0])


def _batch():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(11, 5))
    labels = rng.integers(0, 3, 11).astype(np.intp)
    weights = rng.uniform(0.5, 2, 11)
    return X, labels, weights


@pytest.mark.parametrize("cut", [1, 4, 10])
def test_shares_with_mask_offsets_make_the_minibatch_gradient(cut):
    """Rows [0, cut) and [cut, 11) as two shares, the second with mask_row0=cut: the
    weight-averaged share gradients are the whole minibatch's, dropout included."""
    model = _model()
    X, labels, weights = _batch()
    whole, loss = _gradient(model, X, labels, weights)
    first, loss_first = _gradient(model, X[:cut], labels[:cut], weights[:cut])
    second, loss_second = _gradient(model, X[cut:], labels[cut:], weights[cut:], mask_row0=cut)
    w1, w2 = weights[:cut].sum(), weights[cut:].sum()
    np.testing.assert_allclose((w1 * first + w2 * second) / (w1 + w2), whole, rtol=1e-12)
    assert (w1 * loss_first + w2 * loss_second) / (w1 + w2) == pytest.approx(loss, rel=1e-12)
    # Without the offset the second share draws the first rows' masks: another gradient.
    shifted, _ = _gradient(model, X[cut:], labels[cut:], weights[cut:])
    assert not np.allclose((w1 * first + w2 * shifted) / (w1 + w2), whole, rtol=1e-6)


def test_penalty_weight_divides_per_sample_penalties_by_the_global_weight():
    """With per-sample penalties each share must divide by the whole minibatch's
    weight: then the averaged shares give the minibatch's gradient; dividing by the
    share's own weight counts the penalty twice."""
    model = _model(fastbp.regularizers.L2(0.05, per_sample=True), dropout=0.0)
    X, labels, weights = _batch()
    total = weights.sum()
    whole, loss = _gradient(model, X, labels, weights)
    w1, w2 = weights[:4].sum(), weights[4:].sum()
    parts = [
        _gradient(model, X[:4], labels[:4], weights[:4], penalty_weight=total),
        _gradient(model, X[4:], labels[4:], weights[4:], mask_row0=4, penalty_weight=total),
    ]
    combined = (w1 * parts[0][0] + w2 * parts[1][0]) / total
    np.testing.assert_allclose(combined, whole, rtol=1e-12)
    assert (w1 * parts[0][1] + w2 * parts[1][1]) / total == pytest.approx(loss, rel=1e-12)
    own = _gradient(model, X[:4], labels[:4], weights[:4])[0]
    own2 = _gradient(model, X[4:], labels[4:], weights[4:], mask_row0=4)[0]
    assert not np.allclose((w1 * own + w2 * own2) / total, whole, rtol=1e-6)


def test_penalty_weight_changes_nothing_without_per_sample_penalties():
    model = _model(fastbp.regularizers.L2(0.05), dropout=0.0)
    X, labels, weights = _batch()
    plain = _gradient(model, X, labels, weights)
    given = _gradient(model, X, labels, weights, penalty_weight=123.0)
    np.testing.assert_array_equal(plain[0], given[0])
    assert plain[1] == given[1]


@pytest.mark.parametrize(
    "keyword, value, message",
    [
        ("mask_row0", -1, "mask_row0 must be >= 0"),
        ("penalty_weight", -1.0, "penalty_weight must be finite and >= 0"),
        ("penalty_weight", float("nan"), "penalty_weight must be finite and >= 0"),
    ],
)
def test_bad_share_keywords_raise(keyword, value, message):
    model = _model()
    X, labels, weights = _batch()
    with pytest.raises(ValueError, match=message):
        _gradient(model, X, labels, weights, **{keyword: value})


def test_comm_must_be_a_communicator():
    model = _model()
    X, labels, _ = _batch()
    with pytest.raises(TypeError, match="comm must be an mpi4py communicator"):
        model.fit(X, labels, comm=object())


# -- under mpirun --------------------------------------------------------------------
def _mpirun():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install 'fastbp[mpi]')")
    found = shutil.which("mpirun", path=os.path.dirname(sys.executable)) or shutil.which("mpirun")
    if found is None:
        pytest.skip("mpirun is not on the PATH (pip install 'fastbp[mpi]' brings one)")
    return found


def _launch(ranks, scenario, folder):
    command = [_mpirun(), "--oversubscribe", "-n", str(ranks)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-run-as-root")
    command += [sys.executable, WORK, scenario, str(folder)]
    # One thread per rank: the ranks share this machine's cores.
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return subprocess.run(
        command, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=HERE
    )


def _results(folder, scenario, ranks):
    out = []
    for rank in range(ranks):
        with open(os.path.join(folder, f"{scenario}-{ranks}-{rank}.json")) as file:
            out.append(json.load(file))
    return out


@pytest.mark.parametrize("ranks", [2, 3])
def test_n_ranks_equal_one_process(tmp_path, ranks):
    run = _launch(ranks, "equivalence", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(tmp_path, "equivalence", ranks)
    root = results[0]
    for name, result in root.items():
        assert all(r[name]["identical"] for r in results), name  # bit-identical replicas
        if name == "local":
            assert result["weights"] < 1e-10, result  # the documented rule, by hand
            assert result["loss falls"]
            continue
        limit = 1e-5 if "float32" in name else 1e-10
        assert result["weights"] < limit, (name, result)
        assert result["history"] < limit, (name, result)
        assert result["keys"] and result["step"], (name, result)


def test_errors_reach_every_rank(tmp_path):
    run = _launch(2, "errors", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    first, second = _results(tmp_path, "errors", 2)
    assert first == second  # the same error, word for word, on every rank
    assert first["architecture"][0] == "ValueError"
    assert "rank 1's model is" in first["architecture"][1]
    assert "'units': 17" in first["architecture"][1]
    assert first["bad data"][0] == "ValueError"
    assert "on 1 of 2 ranks (rank 1: ValueError: y has class labels" in first["bad data"][1]
    assert "'input_dim': 5" in first["width"][1]
    assert "rank 1's data checksum" in first["different data"][1]
    assert first["stop on one rank"][0] == "RuntimeError"
    assert "did not take the same number of steps" in first["stop on one rank"][1]
    assert "optimizer's settings differ between ranks" in first["optimizer drift"][1]


def test_an_exception_on_one_rank_ends_the_job(tmp_path):
    run = _launch(2, "abort", tmp_path)
    assert run.returncode != 0
    assert "fastbp: rank 1 of 2 failed during distributed training" in run.stderr
    assert "callback failed on purpose" in run.stderr
    assert not os.path.exists(tmp_path / "abort-2-0.json")  # nobody finished 50 epochs


def test_a_killed_rank_ends_the_job_and_a_checkpoint_resumes(tmp_path):
    killed = _launch(2, "killed", tmp_path)
    assert killed.returncode != 0
    assert not os.path.exists(tmp_path / "killed-2-0.json")
    assert os.path.exists(tmp_path / "ckpt-2.npz")  # written before rank 1 died
    resumed = _launch(2, "resume", tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = _results(tmp_path, "resume", 2)[0]
    assert result["resumed from"] >= 2
    assert result["weights"] < 1e-10, result


@pytest.mark.parametrize("ranks", [2, 3])
def test_sklearn_estimators_with_comm_equal_one_process(tmp_path, ranks):
    """fastbp.sklearn's fit(comm=): the same coefficients and loss curve as one
    process (rounding of the reduced sums: 1e-10), bit-identical on every rank,
    also when random_state is None (rank 0's stream is broadcast)."""
    pytest.importorskip("sklearn")
    run = _launch(ranks, "estimators", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    results = _results(tmp_path, "estimators", ranks)
    for name, result in results[0].items():
        assert all(r[name]["identical"] and r[name]["unseeded identical"] for r in results)
        assert result["weights"] < 1e-10, (name, result)
        assert result["curve"] < 1e-10, (name, result)
        assert result["same n_iter"], (name, result)
