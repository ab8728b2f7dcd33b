"""End-to-end search runs on camvid-mini with the tiny ``test`` preset.

Latency comes from the jetson-orin-nano roofline estimate, which is deterministic, so runs with the same seed
see the same rewards and must propose the same genotypes, killed and resumed or not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import Genotype
from segfactory.factory.zoo import resolve_arch

COMMON = ["--budget", "3", "--seed", "0", "--preset", "test", "--encoder-weights", "none", "--threads", "1",
          "--target", "jetson-orin-nano", "--input-size", "64x64", "-q"]
PPO = [*COMMON, "--strategy", "ppo"]  # the strategy with the most state to resume (controller, optimizer, buffer)


def _camvid_mini_or_skip():
    from segfactory.factory.datasets import camvid_mini_path
    from segfactory.factory.errors import InputError

    try:
        camvid_mini_path()
    except InputError as e:
        pytest.skip(str(e))


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "segfactory.factory.cli", "search", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(d: Path) -> list[dict]:
    path = d / "trials.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory) -> Path:
    """A search killed with SIGKILL during its second candidate, then resumed to completion."""
    _camvid_mini_or_skip()
    d = tmp_path_factory.mktemp("search") / "run"
    p = _cli([*PPO, "--out", str(d)])
    deadline = time.monotonic() + 240
    while len(_trials(d)) < 1:
        if p.poll() is not None:
            pytest.fail(f"search ended before it was killed: {p.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "the first candidate took too long"
        time.sleep(0.2)
    time.sleep(1.0)  # into the second candidate
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert len(_trials(d)) < 3
    r = _cli([*PPO, "--out", str(d), "--resume"])
    _, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    return d


def test_killed_search_resumes_to_a_complete_run(killed_and_resumed):
    d = killed_and_resumed
    trials = _trials(d)
    indices = [t["index"] for t in trials]
    assert len(indices) == len(set(indices)), "duplicate index after resume"
    assert sorted(indices) == list(range(len(indices)))
    assert sum(t["status"] in ("ok", "early-stopped", "failed") for t in trials) == 3
    for name in ("trials.jsonl", "controller.pt", "state.pt", "best.json", "pareto.png", "summary.md", "run.json"):
        assert (d / name).is_file(), name
    fields = {"index", "genotype", "key", "miou", "macc", "fwiou", "score", "latency_ms", "latency_source",
              "params", "macs", "reward", "status", "reason", "wall_s"}
    for t in trials:
        assert fields <= set(t)
        assert t["latency_source"] == "estimated"
    from segfactory.search.state import load_state

    run_s = load_state(d)["run_s"]  # the work outside trials is timed too, over both parts of the run
    assert run_s["strategy_s"] > 0 and run_s["state_s"] > 0 and run_s["prepare_s"] > 0


def test_best_json_is_the_best_ok_trial_and_loads_as_an_architecture(killed_and_resumed):
    import torch
    from segfactory.factory.model import build_model

    d = killed_and_resumed
    trials = _trials(d)
    ok = [t for t in trials if t["status"] == "ok"]
    best = json.loads((d / "best.json").read_text())
    assert best["trial"]["index"] == max(ok, key=lambda t: t["reward"])["index"]
    assert best["input_size"] == [64, 64]
    assert best["model_config"]["agg_size"] == 64 and best["model_config"]["sep_repeats"] == 2
    g = resolve_arch(str(d / "best.json"))
    assert g.key() == best["trial"]["key"]
    cfg = ModelConfig.from_dict(best["model_config"])
    for t in trials:  # every genotype builds
        m = build_model(Genotype.from_dict(t["genotype"]), cfg.with_(encoder_weights="none"),
                        load_weights=False).eval()
        with torch.no_grad():
            assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 11, 64, 64)


def test_same_seed_same_rewards_same_genotypes_uninterrupted(killed_and_resumed, tmp_path):
    from segfactory.factory.cli import main

    d = tmp_path / "again"
    with pytest.raises(SystemExit) as e:
        main(["search", *PPO, "--out", str(d)])
    assert e.value.code == 0
    a = sorted(_trials(killed_and_resumed), key=lambda t: t["index"])
    b = sorted(_trials(d), key=lambda t: t["index"])
    assert [t["key"] for t in a] == [t["key"] for t in b]
    assert [t["score"] for t in a] == pytest.approx([t["score"] for t in b], abs=1e-6)


def test_pick_under_limits(killed_and_resumed, tmp_path):
    from segfactory.factory.errors import RunError
    from segfactory.search.limits import Limits
    from segfactory.search.pick import pick

    d = killed_and_resumed
    ok = [t for t in _trials(d) if t["status"] == "ok"]
    fastest = min(ok, key=lambda t: t["latency_ms"])
    out = tmp_path / "pick.json"
    best = pick(d, Limits(max_latency_ms=fastest["latency_ms"]), out=out)
    assert best["trial"]["index"] == fastest["index"]
    assert resolve_arch(str(out)).key() == fastest["key"]
    smallest = min(ok, key=lambda t: t["params"])
    assert pick(d, Limits(max_params=smallest["params"]))["trial"]["params"] <= smallest["params"]
    with pytest.raises(RunError, match="meets latency <= "):
        pick(d, Limits(max_latency_ms=fastest["latency_ms"] * 0.5))


def test_non_empty_out_refuses_and_resume_needs_a_run(tmp_path):
    from segfactory.factory.cli import main

    (tmp_path / "x").write_text("keep me")
    with pytest.raises(SystemExit) as e:
        main(["search", *COMMON, "--out", str(tmp_path)])
    assert e.value.code == 2
    assert (tmp_path / "x").read_text() == "keep me"
    with pytest.raises(SystemExit) as e:
        main(["search", *COMMON, "--out", str(tmp_path / "none"), "--resume"])
    assert e.value.code == 2


def test_rejections_are_recorded_not_counted_and_capped(tmp_path):
    from segfactory.factory.cli import main

    _camvid_mini_or_skip()
    d = tmp_path / "rejected"
    with pytest.raises(SystemExit) as e:
        main(["search", *COMMON, "--strategy", "random", "--out", str(d), "--max-params", "1000",
              "--max-rejections", "3"])
    assert e.value.code == 1  # a search that cannot proceed is a failed run
    trials = _trials(d)
    assert [t["status"] for t in trials] == ["rejected"] * 3
    assert all("--max-params" in t["reason"] and t["params"] > 1000 for t in trials)
    assert (d / "summary.md").is_file()


def test_resume_refuses_changed_settings_and_accepts_runtime_knobs(tmp_path, capsys):
    """A resumed search keeps its settings: a different --seed is refused (both values named), a different
    --budget is accepted, and flags left out on resume are not compared with their defaults."""
    from segfactory.factory.cli import main

    _camvid_mini_or_skip()
    d = tmp_path / "run"
    now = ["--max-minutes", "0.000001"]  # writes run.json and the reports, trains nothing
    with pytest.raises(SystemExit) as e:
        main(["search", *COMMON, "--out", str(d), *now])
    assert e.value.code == 0 and (d / "run.json").is_file()
    capsys.readouterr()
    changed = [*COMMON, "--seed", "3"]  # the last --seed wins
    with pytest.raises(SystemExit) as e:
        main(["search", *changed, "--out", str(d), "--resume", *now])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "was searched with --seed 0, this run asks for --seed 3" in err and "--budget" in err
    run = json.loads((d / "run.json").read_text())
    assert run["options"]["seed"] == 0 and run["options"]["budget"] == 3
    assert run["options"]["strategy"] == "auto" and run["strategy"] == "evolution"  # resolved once, on a CPU
    with pytest.raises(SystemExit) as e:  # only --budget changes; --input-size, --target ... left out
        main(["search", "--out", str(d), "--resume", "--budget", "5", "-q", *now])
    assert e.value.code == 0
    run = json.loads((d / "run.json").read_text())
    assert run["options"]["budget"] == 5 and run["options"]["input_size"] == [64, 64]
    assert run["options"]["target"] == "jetson-orin-nano"
