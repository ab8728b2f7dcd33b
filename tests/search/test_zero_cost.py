"""Zero-cost scores (search/zero_cost.py): every registered score is a finite, seeded number for any genotype."""

from __future__ import annotations

import math
import random

import pytest
from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import sample_genotype
from segfactory.factory.zoo import ZOO
from segfactory.search.zero_cost import SCORES

CONFIG = ModelConfig.create(11, 8, 1, "none")


@pytest.mark.parametrize("name", list(SCORES))
@pytest.mark.parametrize("genotype", [ZOO["arch0"], sample_genotype(random.Random(3))], ids=["arch0", "seed3"])
def test_score_is_finite_and_seeded(name, genotype):
    score = SCORES.get(name)
    a = score(genotype, CONFIG, (32, 48), seed=1)
    assert math.isfinite(a) and a > 0
    assert score(genotype, CONFIG, (32, 48), seed=1) == a


def test_synflow_sees_the_decoder_not_only_its_size():
    """Two decoders with the same parameter count can differ in synflow (it weighs paths, not parameters)."""
    scores = {s: SCORES.get("synflow")(sample_genotype(random.Random(s)), CONFIG, (32, 48)) for s in range(4)}
    assert len({round(v, 6) for v in scores.values()}) == 4
