"""The build directory and ``build.json``: the options, and each stage's result once it is done.

``build.json`` is rewritten atomically after every stage, so a killed build resumes at the first stage it lacks;
inside a stage, the unit in progress (a search candidate, a training epoch, one export) is all a kill loses.
A non-empty directory without ``build.json`` is refused, as is ``--resume`` where there is no build, and a resume
that asks for other settings than the build was started with (only the runtime knobs may change).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.factory.registry import Registry
from segfactory.search.pipeline.options import RUNTIME_FIELDS, BuildOptions

FORMAT = "segfactory.build/1"
# The pipeline: name -> "module:function" of its stage, (state, progress) -> the result build.json records; run in
# registration order. Functions are named by string so that reading build.json imports none of them.
STAGES: Registry[str] = Registry("build stage")
for _name, _function, _help in (
    ("search", "stages:stage_search", "the search, or --from-search's"),
    ("pick", "stages:stage_pick", "the best candidate under the limits, and its deployed configuration"),
    ("train", "stages:stage_train", "the pick (and the baselines) with every recipe"),
    ("export", "deploy:stage_export", "every precision, parity-gated; engines where TensorRT is"),
    ("check", "deploy:stage_check", "the exported model still meets the limit"),
    ("evaluate", "deploy:stage_evaluate", "every exported model on val"),
    ("bench", "deploy:stage_bench", "every exported model timed on the target beside arch0"),
    ("report", "report:stage_report", "report.md and report.html"),
):
    STAGES.register(_name, f"segfactory.search.pipeline.{_function}", help=_help)


def stage_function(name: str):
    """The function of stage ``name`` (imported now)."""
    import importlib

    module, _, attr = STAGES.get(name).partition(":")
    return getattr(importlib.import_module(module), attr)
SEARCH_RUNTIME = ("budget", "max_minutes", "threads", "executor", "ray_address", "workers", "gpus_per_trial",
                  "cpus_per_trial", "verify_every", "out")


@dataclass
class BuildState:
    out: Path
    options: BuildOptions
    stages: dict[str, Any] = field(default_factory=dict)  # stage -> its result (when done)
    created: str = ""
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds it took (this part)

    @property
    def path(self) -> Path:
        return self.out / "build.json"

    def done(self, stage: str) -> bool:
        return stage in self.stages

    def finish(self, stage: str, result: Any, seconds: float = 0.0) -> None:
        from segfactory.factory.io import atomic_write_json

        self.stages[stage] = result
        self.seconds[stage] = round(seconds, 1)
        atomic_write_json(self.path, self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "created": self.created, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "options": self.options.to_dict(), "stages": self.stages, "seconds": self.seconds}


def open_build(options: BuildOptions, resume: bool) -> BuildState:
    """The build in ``options.out``: a new one (the directory must be empty) or, with ``resume``, the one there."""
    from segfactory.factory.io import atomic_write_json, check_writable, read_json

    out = Path(options.out)
    check_writable(out, "--out", folder=True)
    path = out / "build.json"
    if resume:
        if not path.is_file():
            raise InputError(f"--resume: {out} holds no build to resume (no build.json)")
        doc = read_json(path, "build file")
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise InputError(f"{path} is not a {FORMAT} file")
        saved = BuildOptions.from_dict(doc["options"])
        _check_same(saved, options, out)
        if "search" in doc["stages"]:
            _check_search_budget(saved, options, out)
        for name in RUNTIME_FIELDS:
            setattr(saved, name, getattr(options, name))
        for name in SEARCH_RUNTIME:
            setattr(saved.search, name, getattr(options.search, name))
        return BuildState(out, saved, dict(doc["stages"]), doc.get("created", ""), dict(doc.get("seconds", {})))
    if out.exists() and any(out.iterdir()):
        raise InputError(f"{out} is not an empty directory: pass --resume to continue the build there, "
                         "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    state = BuildState(out, options, {}, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    atomic_write_json(path, state.to_dict())
    return state


def _check_search_budget(saved: BuildOptions, asked: BuildOptions, out: Path) -> None:
    """A finished search stage is not extended by a resume (its pick, trainings and exports would have to be
    redone): a larger --budget or --search-minutes is refused with the commands that do it."""
    more = []
    if asked.search.budget > saved.search.budget:
        more.append(f"--budget {asked.search.budget} (it ran with {saved.search.budget})")
    if (asked.search_minutes or 0) > (saved.search_minutes or 0):
        more.append(f"--search-minutes {asked.search_minutes:g} (it ran with {saved.search_minutes or 0:g})")
    if more and not saved.from_search:
        grow = (f"--budget {asked.search.budget}" if asked.search.budget > saved.search.budget
                else f"--minutes {asked.search_minutes:g}")
        raise InputError(f"--resume: the search of {out} is finished, so {' and '.join(more)} would change "
                         f"nothing; to search further run `segfactory search --resume --out {out / 'search'} "
                         f"{grow}`, then `segfactory build --from-search {out / 'search'} --out NEW_DIR` with "
                         "this build's other flags")


def recorded_stages(out: str | Path) -> set[str]:
    """The stages ``out/build.json`` records as done (none where there is no readable build)."""
    import json

    try:
        return set(json.loads((Path(out) / "build.json").read_text())["stages"])
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _check_same(saved: BuildOptions, asked: BuildOptions, out: Path) -> None:
    """Refuse a resume whose settings change the results, naming the setting and both values."""
    import json

    a, b = (json.loads(json.dumps(x.to_dict())) for x in (saved, asked))  # tuples and lists alike
    changes = [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in RUNTIME_FIELDS + ("search",) and a[k] != b[k]]
    sa, sb = a["search"], b["search"]
    changes += [f"{k}: {sa[k]!r} -> {sb[k]!r}" for k in sa if k not in SEARCH_RUNTIME and sa.get(k) != sb.get(k)]
    if changes:
        raise InputError(f"--resume: {out} was built with other settings ({'; '.join(changes[:4])}); repeat the "
                         "original command (only --budget, --search-minutes, threads and workers may change)")
