"""Learning-rate schedules (fastbp/schedules.py): their values epoch by epoch, and
their argument checks."""

import math

import pytest

from fastbp import callbacks as cb
from fastbp import schedules

from _models import blobs, classifier


@pytest.mark.parametrize(
    "schedule,expected",
    [
        (schedules.Constant(0.1), [0.1, 0.1, 0.1]),
        (schedules.StepDecay(0.1, step_size=2, gamma=0.5), [0.1, 0.1, 0.05, 0.05, 0.025]),
        (schedules.ExponentialDecay(1.0, gamma=0.5), [1.0, 0.5, 0.25]),
        (schedules.InverseScaling(1.0, power=0.5), [1.0, 1 / math.sqrt(2), 1 / math.sqrt(3)]),
        (
            schedules.CosineDecay(1.0, total_epochs=6, warmup_epochs=2),
            [
                0.5,
                1.0,
                1.0,
                0.5 * (1 + math.cos(math.pi / 4)),
                0.5,
                0.5 * (1 + math.cos(3 * math.pi / 4)),
                0.0,
                0.0,
            ],
        ),
    ],
)
def test_schedules(schedule, expected):
    assert [schedule(e) for e in range(len(expected))] == pytest.approx(expected, abs=1e-15)


def test_schedules_validate():
    with pytest.raises(ValueError, match="gamma"):
        schedules.StepDecay(0.1, step_size=2, gamma=-1)
    with pytest.raises(ValueError, match="warmup"):
        schedules.CosineDecay(0.1, total_epochs=3, warmup_epochs=3)
    with pytest.raises(ValueError, match="epoch"):
        schedules.Constant(0.1)(-1)
    with pytest.raises(ValueError, match="learning rate"):
        classifier().fit(
            *blobs(10), epochs=1, callbacks=[cb.LearningRateScheduler(lambda e: float("nan"))]
        )
