"""PPO's settings against a budget: does the controller learn within a few hundred samples? (issue 19.4)

    python benchmarks/scripts/controller_toy.py [--samples 200] [--seeds 1000,1001,1002] [--publish]

A toy reward stands in for proxy training (seconds instead of hours): each seed draws a target decision vector,
and a sample's reward is ``0.3 + 0.4 x`` the share of its decisions equal to the target, plus Gaussian noise
(sd 0.02), so rewards lie where proxy scores do. For each profile of ``segfactory.search.ppo.PROFILES`` (and the
variants listed here) it records the policy's entropy over the first and last 20 samples and the mean reward of
the first and last 50. The seeds are not used by the strategy comparison (``search_compare.py``). Writes
runs/controller_toy.json (``--publish``: results/controller_toy.json).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine

VARIANTS = {"reachable-lr1e-3": {"lr": 1e-3}, "reachable-entropy1e-3": {"entropy_coef": 1e-3}}


def run(settings, seed: int, samples: int) -> dict:
    from segfactory.factory.genotype import action_space
    from segfactory.search.strategies import PPOStrategy

    rng = random.Random(seed)
    target = [rng.randrange(k) for k in action_space()]
    strategy = PPOStrategy(seed, settings=settings)
    rewards, entropies = [], []
    for _ in range(samples):
        p = strategy.propose()
        actions = p.info["actions"]
        reward = 0.3 + 0.4 * sum(a == t for a, t in zip(actions, target)) / len(actions) + rng.gauss(0, 0.02)
        strategy.tell(p, reward)
        rewards.append(reward)
        entropies.append(p.info["entropy"])
    mean = statistics.mean
    return {"seed": seed, "entropy_first20": mean(entropies[:20]), "entropy_last20": mean(entropies[-20:]),
            "reward_first50": mean(rewards[:50]), "reward_last50": mean(rewards[-50:])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seeds", default="1000,1001,1002")
    parser.add_argument("--profiles", default=None, help="Comma-separated names [every profile and variant].")
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args(argv)

    from dataclasses import replace

    import torch
    from segfactory.factory.io import atomic_write_json
    from segfactory.search.ppo import PROFILES

    torch.set_num_threads(1)
    settings = {**PROFILES, **{name: replace(PROFILES["reachable"], **kw) for name, kw in VARIANTS.items()}}
    names = args.profiles.split(",") if args.profiles else list(settings)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in names:
        t0 = time.monotonic()
        for seed in seeds:
            rows.append({"profile": name, **run(settings[name], seed, args.samples)})
            r = rows[-1]
            print(f"{name:26s} seed {seed}: entropy {r['entropy_first20']:.1f} -> {r['entropy_last20']:.1f}, "
                  f"reward {r['reward_first50']:.3f} -> {r['reward_last50']:.3f}", flush=True)
        print(f"  {time.monotonic() - t0:.0f} s", flush=True)
    doc = {"format": "segfactory.bench-controller-toy/1", "machine": machine(), "samples": args.samples,
           "settings": {n: vars(settings[n]) for n in names}, "rows": rows}
    atomic_write_json(Path("runs") / "controller_toy.json", doc)
    if args.publish:
        atomic_write_json(RESULTS / "controller_toy.json", doc)


if __name__ == "__main__":
    main()
