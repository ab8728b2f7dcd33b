"""The strategy's and the early stopper's state stay consistent with trials.jsonl across resumes.

Training is replaced by a deterministic fake executor (the seam a parallel executor uses), so these runs only
exercise proposing, prechecks, recording and restoring.
"""

from __future__ import annotations

import json

import pytest
from segfactory.search.context import make_context
from segfactory.search.executors import LocalExecutor
from segfactory.search.loop import Search
from segfactory.search.options import SearchOptions
from segfactory.search.proxy import ProxyResult


def fake_train(job, stopper) -> ProxyResult:
    """Scores that depend on the genotype alone, passed through the early stopper as training would."""
    g = job.proposal.genotype
    score = (sum(layer.repeats for layer in g.layers) % 7 + 1) / 10
    checkpoints = [score / 2, score]
    for k, v in enumerate(checkpoints):
        stopper.should_continue(k, v)
    return ProxyResult("ok", miou=score, macc=score, fwiou=score, score=score, checkpoints=checkpoints)


def run(out, budget: int, resume: bool = False) -> Search:
    from segfactory.factory.datasets import camvid_mini_path
    from segfactory.factory.errors import InputError

    try:
        camvid_mini_path()
    except InputError as e:
        pytest.skip(str(e))
    options = SearchOptions(out=str(out), budget=budget, seed=1, strategy="ppo", preset="test", encoder_weights="none",
                            target="jetson-orin-nano", input_size=(64, 64), device="cpu",
                            proxy={"stage2_epochs": 1})
    search = Search(make_context(options, resume), executor_factory=lambda s: LocalExecutor(lambda job: fake_train(job, s.stopper)))
    search.run()
    return search


def test_replay_without_state_file_rebuilds_the_same_strategy(tmp_path):
    a = run(tmp_path / "a", 2)
    run(tmp_path / "b", 1)
    (tmp_path / "b" / "state.pt").unlink()  # lost: the state is rebuilt from trials.jsonl
    b = run(tmp_path / "b", 2, resume=True)
    keys = [[json.loads(line)["key"] for line in (d / "trials.jsonl").read_text().splitlines()]
            for d in (tmp_path / "a", tmp_path / "b")]
    assert keys[0] == keys[1]
    assert a.strategy.pg.baseline == pytest.approx(b.strategy.pg.baseline)
    assert a.stopper.state_dict() == b.stopper.state_dict()
    assert a.stopper.steps == [2, 2]
    assert len(a.strategy.pg.buffer) == len(b.strategy.pg.buffer) == 2
