"""Searches on a local Ray cluster (the ``ray`` extra): parallel candidates, a killed worker, a killed driver.

One ``ray.init(num_cpus=2)`` serves the whole module. Latency comes from the jetson-orin-nano roofline estimate
(deterministic, no export), proxies use the tiny ``test`` preset on camvid-mini.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install segfactory[ray])")

from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import Genotype
from segfactory.factory.model import build_model
from segfactory.search import ray_executor
from segfactory.search.loop import run_search
from segfactory.search.options import SearchOptions
from segfactory.search.ray_executor import RayExecutor, make_ray_executor_factory

TRAINED = ("ok", "early-stopped", "failed")


def _camvid_mini_or_skip() -> None:
    from segfactory.factory.datasets import camvid_mini_path
    from segfactory.factory.errors import InputError

    try:
        camvid_mini_path()
    except InputError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def ray_cluster():
    _camvid_mini_or_skip()
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


def _options(out: Path, budget: int, strategy: str = "ppo", seed: int = 0) -> SearchOptions:
    return SearchOptions(out=str(out), budget=budget, strategy=strategy, seed=seed, preset="test",
                         encoder_weights="none", target="jetson-orin-nano", input_size=(64, 64), device="cpu",
                         threads=1, executor="ray", proxy={"max_proxy_macs": 10**12})


def _trials(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]


def _check_complete(out: Path, budget: int) -> list[dict]:
    trials = _trials(out)
    indices = [t["index"] for t in trials]
    assert sorted(indices) == list(range(len(trials))), f"indices {indices}"
    assert sum(t["status"] in TRAINED for t in trials) == budget
    config = ModelConfig.create(11, 48, 1, "none")
    for t in trials:
        g = Genotype.from_dict(t["genotype"])
        assert g.key() == t["key"]
        build_model(g, config, load_weights=False)
        if t["status"] in ("ok", "early-stopped"):
            assert t["reward"] is not None and 0 <= t["miou"] <= 1
        assert t["wall_s"] is not None and t["latency_source"] == "estimated"
    for name in ("best.json", "state.pt", "summary.md", "run.json"):
        assert (out / name).is_file(), name
    return trials


def worker_that_dies_once(marker: Path) -> type:
    """A TrialWorker whose first candidate to reach a checkpoint creates ``marker`` and kills its own process,
    as a crashed worker would. Made inside a function, so Ray pickles the class by value, ``marker`` included:
    the actors need not import this test module."""
    from segfactory.search.ray_executor import TrialWorker

    class DiesOnce(TrialWorker):
        def should_continue(self, seed, stopper_state, checkpoints):
            inner = super().should_continue(seed, stopper_state, checkpoints)

            def check(k: int, value: float) -> bool:
                if k == 0:
                    try:
                        fd = os.open(str(marker), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    except FileExistsError:  # another worker died already: once is enough
                        pass
                    else:
                        os.write(fd, str(os.getpid()).encode())
                        os.close(fd)
                        os._exit(17)
                return inner is None or inner(k, value)

            return check

    return DiesOnce


@pytest.fixture(scope="module")
def parallel_run(ray_cluster, tmp_path_factory):
    """4 candidates, 2 workers; the first worker to reach a checkpoint kills its own process."""
    d = tmp_path_factory.mktemp("ray")
    marker, out = d / "killed", d / "run"
    events: list[dict] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ray_executor, "TrialWorker", worker_that_dies_once(marker))
        summary = run_search(_options(out, 4), on_event=events.append,
                             executor_factory=make_ray_executor_factory(workers=2))
    return out, marker, events, summary


def test_four_candidates_two_workers(parallel_run):
    out, _, events, summary = parallel_run
    trials = _check_complete(out, 4)
    assert len(trials) == 4 and summary["trained"] == 4
    # Two candidates were in flight together: a second was submitted before the first came back.
    kinds = [e["kind"] for e in events if e["kind"] in ("candidate", "trial")]
    assert kinds[:2] == ["candidate", "candidate"], kinds
    # The driver's stopper learned every checkpoint the workers returned, and nothing else.
    import torch

    state = torch.load(out / "state.pt", weights_only=True)
    assert sum(state["stopper"]["steps"]) == sum(len(t.get("checkpoints", [])) for t in trials)
    assert state["pending"] == {} and state["next_index"] == 4


def test_killed_worker_is_retried(parallel_run):
    out, marker, events, _ = parallel_run
    assert marker.is_file(), "no worker was killed"
    trials = _trials(out)
    retried = [t for t in trials if "retried 1 time" in t["reason"]]
    assert len(retried) == 1 and retried[0]["status"] in ("ok", "early-stopped"), trials
    assert any("worker lost" in e.get("message", "") for e in events if e["kind"] == "status")


def test_worker_lost_beyond_retries_is_failed(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_executor, "TrialWorker", worker_that_dies_once(tmp_path / "killed"))
    out = tmp_path / "run"
    run_search(_options(out, 1, strategy="random"),
               executor_factory=make_ray_executor_factory(workers=1, max_retries=0))
    (t,) = _trials(out)
    assert t["status"] == "failed" and t["reason"].startswith("worker lost 1 times"), t
    assert t["reward"] is None and t["score"] is None


class _DriverDies(Exception):
    pass


def test_killed_driver_resumes(ray_cluster, tmp_path):
    """The driver stops after its first result with another candidate in flight; --resume completes the run."""
    out = tmp_path / "run"

    def dying_factory(search):
        ex = make_ray_executor_factory(workers=2)(search)
        wait = ex.wait
        calls = []

        def wait_then_die():
            if calls:
                raise _DriverDies
            calls.append(1)
            return wait()

        ex.wait = wait_then_die
        return ex

    with pytest.raises(_DriverDies):
        run_search(_options(out, 2, strategy="evolution", seed=3), executor_factory=dying_factory)
    first = _trials(out)
    assert len(first) == 1
    state = __import__("torch").load(out / "state.pt", weights_only=True)
    (pending,) = state["pending"].items()  # the candidate in flight when the driver died
    assert int(pending[0]) == 1 - first[0]["index"]
    options = _options(out, 2, strategy="evolution", seed=3)
    options.workers = 2  # run_search makes the Ray executor from the options (as the CLI does)
    run_search(options, resume=True)
    trials = _check_complete(out, 2)
    assert trials[0] == first[0]
    assert trials[1]["index"] == int(pending[0])  # re-run with the genotype proposed before the driver died
    assert trials[1]["genotype"] == pending[1]["proposal"]["genotype"]


def test_rungs_on_ray_promote_with_the_higher_rungs_data(ray_cluster, tmp_path):
    """--rungs test,cpu-small on two workers: the best of two candidates is trained again with cpu-small's data
    (put once, fetched by the actor that trains it); only rung-0 results move the driver's stopper."""
    import torch

    out = tmp_path / "run"
    options = _options(out, 2, strategy="random", seed=1)
    options.preset, options.rungs, options.promote = "auto", "test,cpu-small", 0.5
    summary = run_search(options, executor_factory=make_ray_executor_factory(workers=2))
    trials = _trials(out)
    rung0 = [t for t in trials if t["rung"] == 0]
    (promoted,) = [t for t in trials if t["rung"] == 1]
    assert summary["trained"] == 2 and len(rung0) == 2 and all(t["rung_preset"] == "test" for t in rung0)
    source = next(t for t in rung0 if t["index"] == promoted["promoted_from"])
    assert source["reward"] == max(t["reward"] for t in rung0 if t["reward"] is not None)
    assert promoted["rung_preset"] == "cpu-small" and promoted["status"] == "ok" and promoted["key"] == source["key"]
    assert promoted["rung_scores"] == [source["score"], promoted["score"]]
    assert len(promoted["checkpoints"]) == 1 + options_settings(out, 1)["stage2_epochs"]  # trained to the end
    state = torch.load(out / "state.pt", weights_only=True)
    assert sum(state["stopper"]["steps"]) == sum(len(t.get("checkpoints", [])) for t in rung0)


def options_settings(out: Path, rung: int) -> dict:
    return json.loads((out / "run.json").read_text())["rungs"][rung]["proxy_settings"]


def test_executor_refuses_a_duplicate_submission():
    ex = RayExecutor.__new__(RayExecutor)  # only the bookkeeping is exercised
    from collections import deque

    from segfactory.factory.errors import RunError
    from segfactory.factory.zoo import ZOO
    from segfactory.search.executors import CandidateJob
    from segfactory.search.strategies import Proposal

    ex.queue, ex.running, ex.idle = deque(), {}, []
    ex.submit(CandidateJob(0, Proposal(ZOO["arch0"]), 1))
    with pytest.raises(RunError, match="still in flight"):
        ex.submit(CandidateJob(0, Proposal(ZOO["arch0"]), 1))


def test_local_executor_imports_no_ray(tmp_path):
    _camvid_mini_or_skip()
    code = (
        "import sys\n"
        "from segfactory.search.loop import run_search\n"
        "from segfactory.search.options import SearchOptions\n"
        f"o = SearchOptions(out={str(tmp_path / 'run')!r}, budget=1, strategy='random', preset='test', "
        "encoder_weights='none', target='jetson-orin-nano', input_size=(64, 64), device='cpu', threads=1, "
        "executor='local', proxy={'max_proxy_macs': 10**12})\n"
        "run_search(o)\n"
        "bad = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not bad, bad\n"
        "print('no-ray')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=300, check=False)
    assert r.returncode == 0 and "no-ray" in r.stdout, r.stderr[-2000:]


@pytest.mark.gpu
def test_two_candidates_share_one_gpu(ray_cluster, tmp_path):
    """--gpus-per-trial 0.5: two actors on one GPU; the cached features move to it once per actor."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if ray.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("the test's Ray cluster sees no GPU")
    out = tmp_path / "run"
    options = _options(out, 2, strategy="random")
    options.device = "cuda"
    run_search(options, executor_factory=make_ray_executor_factory(workers=2, gpus_per_trial=0.5))
    trials = _check_complete(out, 2)
    assert all(t["status"] in ("ok", "early-stopped") for t in trials), trials

