import random

import pytest
from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import Genotype, action_space
from segfactory.factory.model import build_model
from segfactory.factory.zoo import ZOO
from segfactory.search.early_stop import EarlyStopper
from segfactory.search.limits import Limits
from segfactory.search.strategies import STRATEGIES, Evolution, Proposal, RandomSearch, make_strategy, mutate
from segfactory.search.trials import TrialStore, best_trial, load_trials


def fake_reward(g: Genotype) -> float:
    """A deterministic reward of the genotype alone (favours sep_conv_3x3 templates)."""
    return sum(t.op_a == "sep_conv_3x3" for t in g.templates) / 3 + 0.01 * g.layers[0].repeats


@pytest.mark.parametrize("name", ["random", "evolution", "ppo"])
def test_strategies_propose_valid_genotypes_and_are_deterministic(name):
    def run():
        s = make_strategy(name, seed=3, **({"population": 4, "sample": 2} if name == "evolution" else {}))
        out = []
        for i in range(8 if name != "ppo" else 3):
            p = s.propose()
            assert isinstance(p.genotype, Genotype)
            s.tell(p, fake_reward(p.genotype) if i % 3 else None)
            out.append(p.genotype.key())
        return out, s

    a, _ = run()
    b, _ = run()
    assert a == b
    if name != "ppo":
        assert len(set(a)) > 1


# Options a registered strategy needs to be made at all (the others take their defaults).
NEEDS = {"list": {"genotypes": [ZOO["arch1"].to_dict()]}, "evolution": {"population": 2, "sample": 1}}


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_every_registered_strategy_proposes_a_valid_genotype(name):
    s = make_strategy(name, seed=0, **NEEDS.get(name, {}))
    p = s.propose()
    assert isinstance(p.genotype, Genotype) and Genotype.from_actions(p.genotype.to_actions()) == p.genotype
    s.tell(p, 0.5)
    assert s.state_dict()["name"] == name and Proposal.from_dict(p.to_dict()) == p


def test_unknown_strategy_is_an_input_error_listing_the_names():
    from segfactory.factory.errors import InputError

    with pytest.raises(InputError, match="unknown strategy 'anneal' \\(one of ppo, random, evolution, list\\)"):
        make_strategy("anneal")
    with pytest.raises(ValueError, match="already registered"):
        STRATEGIES.register("random", lambda seed, **options: RandomSearch(seed))


@pytest.mark.parametrize("device, preset, expected", [
    ("cpu", "auto", "evolution"), ("cpu", "cpu-small", "evolution"), ("cpu", "paper", "ppo"),
    ("cuda", "auto", "ppo"), ("cuda", "cpu-full", "ppo"),
])
def test_auto_strategy_is_evolution_on_a_cpu_and_ppo_on_cuda_or_the_paper_preset(device, preset, expected):
    from segfactory.search.strategies import AUTO, resolve_strategy

    assert resolve_strategy(AUTO, device, preset) == expected
    for name in STRATEGIES.names():  # a named strategy is kept
        assert resolve_strategy(name, device, preset) == name


def test_proposed_genotypes_build():
    s = RandomSearch(seed=0)
    cfg = ModelConfig.create(encoder_weights="none", agg_size=48, sep_repeats=1)
    import torch

    for _ in range(3):
        m = build_model(s.propose().genotype, cfg, load_weights=False).eval()
        with torch.no_grad():
            assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 11, 64, 64)


def test_mutation_changes_exactly_one_decision():
    rng = random.Random(0)
    for _ in range(200):
        parent = [rng.randrange(n) for n in action_space()]
        child = mutate(parent, rng)
        diff = [i for i, (a, b) in enumerate(zip(parent, child)) if a != b]
        assert len(diff) == 1
        Genotype.from_actions(child)


def test_evolution_population_and_tournament():
    s = Evolution(seed=0, population=5, sample=5)  # the tournament sees everyone: the best is the parent
    told = []
    for _ in range(5):
        p = s.propose()
        assert p.info["origin"] == "random"
        s.tell(p, fake_reward(p.genotype))
        told.append(p)
    best = max(told, key=lambda p: fake_reward(p.genotype))
    child = s.propose()
    assert child.info["origin"] == "mutation"
    diff = sum(a != b for a, b in zip(child.genotype.to_actions(), best.genotype.to_actions()))
    assert diff == 1
    s.tell(child, 0.0)
    assert len(s.population) == 5  # the oldest left


def test_evolution_tournaments_start_once_it_holds_a_tournament():
    """Under a tight limit random members are rare: mutation starts after `sample` of them, the population grows."""
    s = Evolution(seed=1, population=6, sample=2)
    origins = []
    for _ in range(10):
        p = s.propose()
        origins.append(p.info["origin"])
        s.tell(p, fake_reward(p.genotype))
        assert len(s.population) == min(len(origins), 6)
    assert origins[:2] == ["random", "random"] and set(origins[2:]) == {"mutation"}


def test_strategy_state_round_trip():
    for name in ("random", "evolution", "ppo"):
        s = make_strategy(name, seed=1, **({"population": 2, "sample": 1} if name == "evolution" else {}))
        for _ in range(3 if name != "ppo" else 1):
            p = s.propose()
            s.tell(p, 0.3)
        state = s.state_dict()
        expect = s.propose().genotype.key()
        t = make_strategy(name, seed=99, **({"population": 2, "sample": 1} if name == "evolution" else {}))
        t.load_state_dict(state)
        assert t.propose().genotype.key() == expect
        assert Proposal.from_dict(p.to_dict()) == p


def test_early_stopper_fixed_counter_and_own_rng():
    es = EarlyStopper(2, seed=0)
    for i in range(250):
        es.should_continue(0, 1.0)  # always above the running value
    assert es.steps[0] == 250
    assert es.delta[0] == pytest.approx(0.9 * 0.9 * 0.8)  # both milestones applied (upstream skipped them)
    # A value far below the running average stops (u <= delta < 1 cannot rescue it).
    assert es.should_continue(0, 0.0) is False
    # A value above it continues; the other checkpoint is independent.
    assert es.should_continue(1, 0.5) is True
    a, b = EarlyStopper(1, seed=5), EarlyStopper(1, seed=5)
    for es_ in (a, b):
        es_.m[0] = 0.5
    random.seed(0)
    da = [a.should_continue(0, 0.45) for _ in range(30)]
    random.seed(1)
    db = [b.should_continue(0, 0.45) for _ in range(30)]
    assert da == db
    assert EarlyStopper(1, enabled=False).should_continue(0, 0.0)


def test_trials_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "trials.jsonl"
    store = TrialStore(path)
    store.open()
    for i in range(3):
        store.append({"index": i, "status": "ok", "reward": 0.1 * i, "latency_ms": 1.0 + i, "params": 10})
    with open(path, "ab") as f:
        f.write(b'{"index": 3, "stat')  # a kill during the write
    trials, _ = load_trials(path)
    assert [t["index"] for t in trials] == [0, 1, 2]
    again = TrialStore(path)
    assert len(again.open()) == 3 and again.torn_bytes > 0
    again.append({"index": 3, "status": "failed", "reward": None})
    assert [t["index"] for t in load_trials(path)[0]] == [0, 1, 2, 3]
    assert best_trial(load_trials(path)[0])["index"] == 2
    assert best_trial(load_trials(path)[0], Limits(max_latency_ms=2.5))["index"] == 1


def test_trials_damaged_middle_line_is_an_error(tmp_path):
    from segfactory.factory.errors import InputError

    path = tmp_path / "trials.jsonl"
    path.write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(InputError, match="line 2"):
        load_trials(path)


def test_list_strategy_proposes_in_order_then_is_exhausted():
    from segfactory.factory.zoo import ZOO
    from segfactory.search.strategies import StrategyExhausted

    s = make_strategy("list", genotypes=[ZOO["arch0"].to_dict(), ZOO["arch1"].to_dict()])
    assert [s.propose().genotype.key() for _ in range(2)] == [ZOO["arch0"].key(), ZOO["arch1"].key()]
    with pytest.raises(StrategyExhausted):
        s.propose()


def test_heldout_split_is_contiguous_blocks_of_sorted_frames():
    from segfactory.search.proxy import heldout_split

    names = [f"seq{v}_{i:04d}" for v in "abc" for i in range(30)]
    shuffled = names[::-1]  # the order of the dataset does not matter, the names do
    sequences = [n.split("_")[0] for n in shuffled]
    train, held = heldout_split(shuffled, sequences, 0.1, 1, gap=0)
    held_names = sorted(shuffled[i] for i in held)
    assert len(held) == 9 and not set(train) & set(held) and len(train) + len(held) == 90
    # one run of three consecutive frames at the end of each recording
    assert held_names == [f"seq{v}_{i:04d}" for v in "abc" for i in (27, 28, 29)]
    # a gap of one frame before each run is used by neither side (near copies of the held-out frames)
    train, held = heldout_split(shuffled, sequences, 0.1, 1, gap=1)
    assert len(train) == 90 - 9 - 3 and not {shuffled[i] for i in train} & {f"seq{v}_0026" for v in "abc"}


def test_heldout_frames_and_cache_come_from_every_recording():
    """Issue 11: the held-out frames cover every recording in several blocks, and the stage-1 cache is a seeded
    random sample of the whole training part (it was the first frames by name: one CamVid video)."""
    import numpy as np
    from segfactory.factory.config import ModelConfig
    from segfactory.search.presets import PRESETS
    from segfactory.search.proxy_data import ProxyData

    class Frames:  # three recordings of different lengths, in name order A, B, C
        spec, num_classes, ignore_index, class_names = "camvid:synthetic", 3, 255, ("a", "b", "c")
        names = tuple(f"{v}_{i:04d}" for v, n in (("A", 12), ("B", 20), ("C", 40)) for i in range(n))

        def __len__(self):
            return len(self.names)

        def __getitem__(self, i):
            mask = np.zeros((32, 32), np.int64)
            mask[:, 16:] = 1 + i % 2
            return (mask[..., None] * 60 + 30).repeat(3, 2).astype(np.uint8), mask

    settings = PRESETS["test"].with_(crop=(32, 32), val_long_side=None, cache_size=12, val_fraction=0.25,
                                     val_blocks=2, val_gap=1)
    data = ProxyData.prepare(Frames(), ModelConfig.create(3, 48, 1, "none"), settings, seed=0)
    held = data.heldout_names
    assert {n[0] for n in held} == {"A", "B", "C"} and len(held) == 18
    assert {n[0] for n in data.cache_sources} == {"A", "B", "C"}  # the first 12 by name would all be A
    assert len(set(data.cache_sources)) == 12 and not set(data.cache_sources) & set(held)
