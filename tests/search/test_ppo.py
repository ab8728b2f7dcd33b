import pytest
import torch
from segfactory.factory.errors import InputError
from segfactory.search.controller import Controller
from segfactory.search.ppo import PGSettings, PolicyGradient

TEMPLATE_DECISIONS = range(9)


def toy_reward(actions):
    """1 for every template decision that picks choice 0, averaged: the best policy always picks 0."""
    return sum(actions[i] == 0 for i in TEMPLATE_DECISIONS) / len(TEMPLATE_DECISIONS)


def expected_toy_reward(c: Controller) -> float:
    m = c.marginals()
    return sum(float(m[i][0]) for i in TEMPLATE_DECISIONS) / len(TEMPLATE_DECISIONS)


@pytest.mark.parametrize("algorithm", ["ppo", "reinforce"])
def test_expected_reward_rises_on_a_toy_reward(algorithm):
    torch.manual_seed(0)
    c = Controller()
    pg = PolicyGradient(c, PGSettings(algorithm=algorithm, lr=0.03, buffer_size=4, minibatch=4), seed=0)
    g = torch.Generator().manual_seed(0)
    before = expected_toy_reward(c)
    for _ in range(12):
        actions, logp, _ = c.sample(g)
        pg.update(actions, logp, toy_reward(actions))
    after = expected_toy_reward(c)
    assert after > before + 0.05, (before, after)


def test_buffer_holds_only_real_samples_and_baseline_starts_at_first_reward():
    torch.manual_seed(0)
    c = Controller()
    pg = PolicyGradient(c, PGSettings(buffer_size=3), seed=0)
    g = torch.Generator().manual_seed(0)
    rewards = [0.5, 0.1, 0.9, 0.3]
    for i, r in enumerate(rewards):
        actions, logp, _ = c.sample(g)
        stats = pg.update(actions, logp, r)
        assert len(pg.buffer) == min(i + 1, 3)
        assert stats["steps"] == min(i + 1, 3)  # one single-sample step per stored slot (the paper)
    expected = 0.5
    for r in rewards[1:]:
        expected = 0.95 * expected + 0.05 * r
    assert pg.baseline == pytest.approx(expected)


def test_state_round_trip_continues_identically():
    def run(split: bool):
        torch.manual_seed(0)
        c = Controller()
        pg = PolicyGradient(c, PGSettings(lr=0.01, buffer_size=4), seed=0)
        g = torch.Generator().manual_seed(0)
        out = []
        for i in range(4):
            if split and i == 2:
                state = {"c": c.state_dict(), "pg": pg.state_dict(), "g": g.get_state()}
                torch.manual_seed(123)
                c = Controller()
                pg = PolicyGradient(c, PGSettings(lr=0.01, buffer_size=4), seed=99)
                c.load_state_dict(state["c"])
                pg.load_state_dict(state["pg"])
                g = torch.Generator()
                g.set_state(state["g"])
            actions, logp, _ = c.sample(g)
            pg.update(actions, logp, toy_reward(actions))
            out.append(actions)
        return out

    assert run(False) == run(True)


def test_unknown_algorithm():
    with pytest.raises(InputError):
        PolicyGradient(Controller(), PGSettings(algorithm="a2c"))
