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


def test_reachable_profile_learns_a_toy_reward_within_200_samples():
    """PPO with the CPU default ("reachable") lowers its entropy and raises its reward on a toy reward whose
    signal is the share of decisions equal to a target (benchmarks/scripts/controller_toy.py, another seed)."""
    import random
    import statistics

    from segfactory.factory.genotype import action_space
    from segfactory.search.ppo import PROFILES
    from segfactory.search.strategies import PPOStrategy

    rng = random.Random(7)
    target = [rng.randrange(k) for k in action_space()]
    strategy = PPOStrategy(7, settings=PROFILES["reachable"])
    rewards, entropies = [], []
    for _ in range(200):
        p = strategy.propose()
        reward = 0.3 + 0.4 * sum(a == t for a, t in zip(p.info["actions"], target)) / len(target) + rng.gauss(0, 0.02)
        strategy.tell(p, reward)
        rewards.append(reward)
        entropies.append(p.info["entropy"])
    assert statistics.mean(entropies[-20:]) < statistics.mean(entropies[:20]) - 3.0
    assert statistics.mean(rewards[-50:]) > statistics.mean(rewards[:50]) + 0.02


def test_update_every_defers_the_update_and_resumes_its_count():
    import torch
    from segfactory.search.controller import Controller
    from segfactory.search.ppo import PGSettings, PolicyGradient

    torch.manual_seed(0)
    pg = PolicyGradient(Controller(), PGSettings(buffer_size=4, update_every=4, minibatch=2, epochs=1))
    actions, logp, _ = pg.controller.sample(torch.Generator().manual_seed(0))
    steps = [pg.update(actions, logp, 0.5)["steps"] for _ in range(3)]
    assert steps == [0, 0, 0] and pg.updates == 0
    again = PolicyGradient(Controller(), pg.settings)
    again.load_state_dict(pg.state_dict())
    assert again.update(actions, logp, 0.5)["steps"] == 2 and again.updates == 1
