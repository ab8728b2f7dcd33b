import math

import pytest
from segfactory.factory.errors import InputError
from segfactory.search.reward import RewardSpec, compute_reward

CASES = [
    # score, latency, params, spec, expected
    (0.5, 10.0, 1e5, RewardSpec(latency_target_ms=10.0), 0.5),  # at the target: the score
    (0.5, 20.0, 1e5, RewardSpec(latency_target_ms=10.0), 0.5 * 2 ** -0.07),  # twice as slow
    (0.5, 5.0, 1e5, RewardSpec(latency_target_ms=10.0), 0.5 * 0.5 ** -0.07),  # twice as fast gains
    (0.5, 20.0, 2e5, RewardSpec(10.0, 0.0, 1e5, 0.0), 0.5),  # both weights 0: the paper's reward
    (0.5, None, None, RewardSpec(None, 0.0, None, 0.0), 0.5),  # paper: nothing else needed
    (0.4, 10.0, 4e5, RewardSpec(10.0, -0.07, 2e5, -0.5), 0.4 * 2 ** -0.5),
    (0.4, 30.0, 1e5, RewardSpec(10.0, -0.15, 2e5, -0.1), 0.4 * 3 ** -0.15 * 0.5 ** -0.1),
    (0.0, 30.0, 1e5, RewardSpec(10.0), 0.0),
    (1.0, 10.0, None, RewardSpec(10.0), 1.0),
]


@pytest.mark.parametrize("score,latency,params,spec,expected", CASES)
def test_reward_table(score, latency, params, spec, expected):
    assert compute_reward(score, latency, params, spec) == pytest.approx(expected, rel=1e-12)


def test_faster_is_better_at_equal_score():
    spec = RewardSpec(latency_target_ms=10.0)
    rewards = [compute_reward(0.5, lat, None, spec) for lat in (2, 5, 10, 20, 50)]
    assert rewards == sorted(rewards, reverse=True)


@pytest.mark.parametrize("score,latency,params,spec", [
    (1.5, 10.0, 1.0, RewardSpec(10.0)),  # score out of range
    (math.nan, 10.0, 1.0, RewardSpec(10.0)),
    (0.5, None, 1.0, RewardSpec(10.0)),  # latency needed
    (0.5, 0.0, 1.0, RewardSpec(10.0)),
    (0.5, 10.0, None, RewardSpec(10.0, -0.07, 1e5, -0.1)),  # params needed
    (0.5, 10.0, 1.0, RewardSpec(None, -0.07)),  # no target
])
def test_bad_inputs(score, latency, params, spec):
    with pytest.raises(InputError):
        compute_reward(score, latency, params, spec)


@pytest.mark.parametrize("kwargs", [{"latency_target_ms": 0.0}, {"params_target": -1.0},
                                    {"latency_weight": math.inf}])
def test_bad_spec(kwargs):
    with pytest.raises(InputError):
        RewardSpec(**kwargs)


@pytest.mark.parametrize("weight", [-0.07, -0.5])
def test_absolute_latency_term_peaks_at_the_target(weight):
    """TuNAS' term: the reward is highest at T itself and falls on both sides, symmetric in relative error."""
    spec = RewardSpec(latency_target_ms=10.0, latency_weight=weight, latency_form="absolute")
    at = compute_reward(0.5, 10.0, None, spec)
    assert at == pytest.approx(0.5)
    for ms in (5.0, 8.0, 9.9, 10.1, 12.0, 20.0):
        assert compute_reward(0.5, ms, None, spec) < at
    assert compute_reward(0.5, 8.0, None, spec) == pytest.approx(compute_reward(0.5, 12.0, None, spec))
    mnas = RewardSpec(latency_target_ms=10.0, latency_weight=weight)  # MnasNet's: faster is always better
    assert compute_reward(0.5, 5.0, None, mnas) > compute_reward(0.5, 10.0, None, mnas)


def test_unknown_latency_form_is_refused():
    with pytest.raises(InputError, match="latency_form"):
        RewardSpec(latency_target_ms=1.0, latency_form="linear")
