"""Search strategies behind one interface: PPO over the LSTM controller, random search, regularised evolution.

A strategy ``propose()``s a :class:`Proposal` (a genotype plus what the strategy needs to learn from it later)
and is ``tell()``-ed its reward (``None`` for a candidate that was rejected or failed: nothing to learn from).
Proposals may be outstanding several at a time and told in any order (a parallel executor); each strategy's
``state_dict()`` holds everything, RNG included, so a resumed search continues exactly where it stopped. Same
seed and same rewards give the same sequence of genotypes.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype, action_space, sample_genotype
from segfactory.factory.registry import Registry
from segfactory.search.options import AUTO_STRATEGY as AUTO


class StrategyExhausted(Exception):
    """A strategy with nothing more to propose (``list``)."""


@dataclass(frozen=True)
class Proposal:
    """A genotype to evaluate; ``info`` is JSON-serialisable (e.g. PPO's actions and log-probability)."""

    genotype: Genotype
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), "info": self.info}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Proposal:
        return cls(Genotype.from_dict(d["genotype"]), dict(d.get("info", {})))


class Strategy(Protocol):
    name: str

    def propose(self) -> Proposal: ...

    def tell(self, proposal: Proposal, reward: float | None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RandomSearch:
    """Every decision independently uniform."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def propose(self) -> Proposal:
        return Proposal(sample_genotype(self.rng))

    def tell(self, proposal: Proposal, reward: float | None) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rng": _rng_state(self.rng)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(_rng_from(state["rng"]))


class Evolution:
    """Regularised evolution (Real et al. 2019): age-ordered population, tournament, one-decision mutation.

    Until ``sample`` candidates have been told, proposals are uniformly random; then a tournament of ``sample``
    members picks the fittest as the parent, whose copy has one decision (with more than one choice) changed to a
    different value. Each told child joins the population, and once it holds ``population`` members the oldest
    leaves. Tournaments start before the population is full because under a tight latency limit a uniformly random
    proposal is feasible 2-5% of the time, while a one-decision child of a feasible parent mostly is: filling 20
    members at random took 15 of a 20-minute search's minutes (issue 19).
    """

    name = "evolution"
    rejections_told = False  # an infeasible child is discarded: the population keeps feasible members only

    def __init__(self, seed: int = 0, population: int = 20, sample: int = 5) -> None:
        if population < 1 or not 1 <= sample <= population:
            raise InputError(f"evolution needs population >= 1 and 1 <= sample <= population "
                             f"(got {population}, {sample})")
        self.rng = random.Random(seed)
        self.population_size = population
        self.sample_size = sample
        self.population: deque[tuple[list[int], float]] = deque()  # (actions, reward), oldest first

    def propose(self) -> Proposal:
        if len(self.population) < self.sample_size:
            return Proposal(sample_genotype(self.rng), {"origin": "random"})
        contenders = self.rng.sample(range(len(self.population)), self.sample_size)
        parent = max(contenders, key=lambda i: (self.population[i][1], -i))
        return Proposal(Genotype.from_actions(mutate(self.population[parent][0], self.rng)),
                        {"origin": "mutation", "parent_age": parent})

    def tell(self, proposal: Proposal, reward: float | None) -> None:
        if reward is None:
            return
        self.population.append((proposal.genotype.to_actions(), float(reward)))
        while len(self.population) > self.population_size:
            self.population.popleft()

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "rng": _rng_state(self.rng),
                "population": [[list(a), r] for a, r in self.population]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.setstate(_rng_from(state["rng"]))
        self.population = deque((list(a), float(r)) for a, r in state["population"])


class ListStrategy:
    """Proposes given genotypes in order (to score a fixed set, e.g. for proxy-fidelity measurements)."""

    name = "list"

    def __init__(self, genotypes: list[Genotype]) -> None:
        if not genotypes:
            raise InputError("the list strategy needs at least one genotype (--genotypes FILE)")
        self.genotypes = list(genotypes)
        self.position = 0

    def propose(self) -> Proposal:
        if self.position >= len(self.genotypes):
            raise StrategyExhausted(f"all {len(self.genotypes)} listed genotypes were proposed")
        self.position += 1
        return Proposal(self.genotypes[self.position - 1])

    def tell(self, proposal: Proposal, reward: float | None) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def mutate(actions: list[int], rng: random.Random) -> list[int]:
    """Change one decision that has more than one choice to a different value."""
    sizes = action_space()
    free = [i for i, n in enumerate(sizes) if n > 1]
    i = rng.choice(free)
    child = list(actions)
    child[i] = rng.choice([v for v in range(sizes[i]) if v != actions[i]])
    return child


class PPOStrategy:
    """The paper's controller (method.md §3) trained with PPO or REINFORCE on each reward."""

    name = "ppo"

    def __init__(self, seed: int = 0, feedback: bool = False, settings=None) -> None:
        import torch
        from segfactory.search.controller import Controller
        from segfactory.search.ppo import PGSettings, PolicyGradient

        with torch.random.fork_rng():  # seed the controller's U(-0.1, 0.1) initialisation, leave the global RNG
            torch.manual_seed(seed)
            self.controller = Controller(feedback=feedback)
        self.pg = PolicyGradient(self.controller, settings or PGSettings(), seed=seed + 1)
        self.generator = torch.Generator().manual_seed(seed + 2)  # sampling

    def propose(self) -> Proposal:
        actions, log_prob, entropy = self.controller.sample(self.generator)
        return Proposal(Genotype.from_actions(actions),
                        {"actions": actions, "log_prob": log_prob, "entropy": entropy})

    def tell(self, proposal: Proposal, reward: float | None) -> None:
        if reward is None:
            return
        actions = proposal.info.get("actions") or proposal.genotype.to_actions()
        log_prob = proposal.info.get("log_prob")
        if log_prob is None:  # a proposal from elsewhere: score it under the current policy
            log_prob = float(self.controller.evaluate([actions])[0][0].detach())
        self.pg.update(actions, log_prob, reward)

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "feedback": self.controller.feedback,
                "controller": self.controller.state_dict(), "pg": self.pg.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.pg.load_state_dict(state["pg"])
        self.generator.set_state(state["generator"])


# name -> factory(seed, **options). Options a strategy does not use are ignored: the search loop passes the same
# options (feedback, settings, genotypes) whatever the strategy.
StrategyFactory = Callable[..., Strategy]
STRATEGIES: Registry[StrategyFactory] = Registry("strategy")


@STRATEGIES.register("ppo", help="the paper's LSTM controller trained with PPO (options: feedback, settings)")
def _ppo(seed: int, **options: Any) -> Strategy:
    return PPOStrategy(seed, feedback=options.get("feedback", False), settings=options.get("settings"))


@STRATEGIES.register("random", help="every decision independently uniform")
def _random(seed: int, **options: Any) -> Strategy:
    return RandomSearch(seed)


@STRATEGIES.register("evolution", help="regularised evolution (options: population, sample)")
def _evolution(seed: int, **options: Any) -> Strategy:
    return Evolution(seed, population=options.get("population", 20), sample=options.get("sample", 5))


@STRATEGIES.register("list", help="given genotypes in order (option: genotypes)")
def _list(seed: int, **options: Any) -> Strategy:
    return ListStrategy([g if isinstance(g, Genotype) else Genotype.from_dict(g)
                         for g in options.get("genotypes") or []])


AUTO_HELP = ("evolution on a CPU, ppo on CUDA or with --preset paper (on a CPU at a few hundred candidates, "
             "regularised evolution beat random search in both seeds of the comparison and PPO did not: "
             "results/search_compare.json)")


def resolve_strategy(name: str, device: str, preset: str) -> str:
    """The strategy a search runs: ``name``, or for ``auto`` the best one measured at the search's budget.

    On a CPU a search trains a few hundred candidates, where evolution beat random search in both seeds of issue
    19's comparison and PPO did not; on CUDA, and with the paper's preset, the search keeps the paper's PPO
    controller (thousands of candidates).
    """
    if name != AUTO:
        return name
    return "ppo" if device == "cuda" or preset == "paper" else "evolution"


def make_strategy(name: str, seed: int = 0, **options: Any) -> Strategy:
    """The strategy registered as ``name`` (see :data:`STRATEGIES`); an unknown name is an :class:`InputError`."""
    if name not in STRATEGIES:
        raise InputError(f"unknown strategy {name!r} (one of {', '.join(STRATEGIES)})")
    return STRATEGIES.get(name)(seed, **options)


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)
