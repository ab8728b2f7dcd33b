"""Helpers shared by tests: where ../shared is, seeded random genotypes."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The read-only ``shared/`` folder beside the repository (override with SEGFACTORY_SHARED)."""
    return Path(os.environ.get("SEGFACTORY_SHARED", REPO.parent / "shared"))


def require_shared(*parts: str) -> Path:
    """Skip the calling test when ``shared/<parts>`` is absent."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared data folder is not beside this checkout)")
    return path


def random_genotypes(count: int, seed: int = 0):
    from segfactory.factory.genotype import sample_genotype

    rng = random.Random(seed)
    return [sample_genotype(rng) for _ in range(count)]
