"""``--baselines-from DIR``: the baselines (arch0 and LR-ASPP) of an earlier build, reused instead of trained again.

A baseline's training depends on the data, the recipes, the budget, the seed and the training settings: before the
build begins, :func:`check_baselines_from` compares each of DIR's trainings (the ``TrainConfig`` its metrics.json
records) with the one this build would make, and refuses a DIR that differs, naming the setting. The train stage
then copies the trainings' records and chosen checkpoints into this build (:func:`reuse_trainings`), so the build
folder stands alone. An export also depends on the input size, the search's, known only after it: DIR's ONNX files
and cards (and their val figures) are copied where DIR made them at this build's size, else the copied checkpoints
are exported and evaluated here. Latency is never reused: the bench times every model side by side in one run.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.search.pipeline.options import REFERENCE_MODELS, BuildOptions
from segfactory.search.pipeline.state import FORMAT, BuildState

# TrainConfig fields that change how a training runs, not what it computes
RUNTIME = ("device", "amp", "workers", "threads")
# the build's flag for a TrainConfig field, for messages (any other is a recipe setting: --train-set KEY=VALUE)
FLAGS = {"data": "--data", "epochs": "--epochs", "minutes": "--train-minutes", "seed": "--seed",
         "val_every": "--val-every", "encoder_weights": "--encoder-weights"}
NOT_RECIPES = ("chosen", "checkpoint")  # the other keys of a model's train result


def _source(options: BuildOptions) -> tuple[Path, dict[str, Any]]:
    """DIR and the train stage of its build.json; :class:`InputError` where DIR holds no trained baselines."""
    d = Path(options.baselines_from)
    flag = f"--baselines-from {d}"
    if d == Path(options.out).resolve():
        raise InputError(f"{flag} is this build's --out: name an earlier build")
    try:
        doc = json.loads((d / "build.json").read_text())
    except FileNotFoundError:
        raise InputError(f"{flag} holds no build (no build.json)") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{flag}: its build.json is unreadable ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("stages"), dict):
        raise InputError(f"{flag}: its build.json is not a {FORMAT} file")
    train = doc["stages"].get("train")
    if not isinstance(train, dict):
        raise InputError(f"{flag} has not finished its train stage (resume it first)")
    missing = [n for n in REFERENCE_MODELS if not isinstance(train.get(n), dict) or "checkpoint" not in train[n]]
    if missing:
        raise InputError(f"{flag} holds no trained {' or '.join(missing)} (it was built without --baselines)")
    return d, doc


def _show(field: str, value: Any) -> str:
    flag = FLAGS.get(field)
    if flag is None:  # a recipe setting
        text = "x".join(map(str, value)) if isinstance(value, list) else json.dumps(value)
        return f"--train-set {field}={text}"
    return f"no {flag}" if value is None else f"{flag} {value}"


def check_baselines_from(options: BuildOptions) -> None:
    """Refuse (:class:`InputError`, one line) a ``--baselines-from`` DIR that is no finished build with baselines,
    or whose baselines were trained otherwise than this build would train them; reads DIR, writes nothing."""
    from segfactory.search.pipeline.stages import baseline_jobs, train_config

    d, doc = _source(options)
    flag = f"--baselines-from {d}"
    for name, arch, model in baseline_jobs(options):
        by_recipe = doc["stages"]["train"][name]
        theirs = [r for r in by_recipe if r not in NOT_RECIPES]
        if set(theirs) != set(options.recipes):
            raise InputError(f"{flag} trained its baselines with --recipes {','.join(theirs)}, not "
                             f"{','.join(options.recipes)}: give the same, or train them here with --baselines")
        if not (d / by_recipe["checkpoint"]).is_file():
            raise InputError(f"{flag}: the checkpoint of its {name} ({by_recipe['checkpoint']}) is missing")
        for recipe in options.recipes:
            path = d / by_recipe[recipe]["dir"] / "metrics.json"
            try:
                recorded = json.loads(path.read_text())["train_config"]
            except (OSError, ValueError, KeyError, TypeError):
                raise InputError(f"{flag}: the training record {path} is missing or unreadable") from None
            ours = json.loads(json.dumps(train_config(options, arch, model, recipe).to_dict()))
            diffs = [k for k in ours if k not in RUNTIME and ours[k] != recorded.get(k)]
            if diffs:
                raise InputError(f"{flag} trained its baselines otherwise: " + "; ".join(
                    f"{_show(k, recorded.get(k))} there, {_show(k, ours[k])} here" for k in diffs)
                    + " (give the same, or train them here with --baselines)")


def _copy(src: Path, dst: Path) -> None:
    """``src`` to ``dst`` atomically (a kill leaves the whole file or none)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def reuse_trainings(state: BuildState, progress: Any) -> dict[str, Any]:
    """The train results of the baselines, taken from ``--baselines-from`` DIR: each recipe's metrics.json and the
    chosen recipe's model.pt are copied into this build's train/NAME/RECIPE; each entry records ``reused_from``."""
    o = state.options
    check_baselines_from(o)  # again: DIR may have changed since the build began
    d, doc = _source(o)
    out: dict[str, Any] = {}
    for name in REFERENCE_MODELS:
        progress({"kind": "status", "message": f"copying {name}'s trainings from {d}"})
        theirs = doc["stages"]["train"][name]
        chosen = theirs["chosen"]
        entry: dict[str, Any] = {}
        for recipe in o.recipes:
            src, dst = d / theirs[recipe]["dir"], state.out / "train" / name / recipe
            for file in ("metrics.json", "model.pt") if recipe == chosen else ("metrics.json",):
                _copy(src / file, dst / file)
            entry[recipe] = {**theirs[recipe], "dir": str(dst.relative_to(state.out)), "reused_from": str(d)}
        entry["chosen"] = chosen
        entry["checkpoint"] = f"{entry[chosen]['dir']}/model.pt"
        out[name] = entry
    return out


def _valid_card(path: Path) -> dict[str, Any] | None:
    from segfactory.export.card import read_card

    try:
        return read_card(path) if path.is_file() else None
    except InputError:  # a stale card: not an export to keep
        return None


def reuse_export(state: BuildState, name: str, precision: str, path: Path, size: tuple[int, int]) -> str | None:
    """DIR, where this build's export ``path`` of baseline ``name`` is (now) DIR's: copied, with its card (whose
    sha256 stays the file's), when DIR exported it at this build's ``size`` and this build has none yet."""
    from segfactory.export.card import card_path

    reused = [n for n, r in state.stages.get("train", {}).items()
              if any(isinstance(v, dict) and v.get("reused_from") for v in r.values())]
    if name not in reused:
        return None
    d = Path(state.options.baselines_from)
    src = d / path.relative_to(state.out)
    theirs = _valid_card(src)
    if not theirs or theirs.get("precision") != precision or theirs["input"]["size_hw"] != list(size):
        return None
    mine = _valid_card(path)
    if mine is None:
        _copy(src, path)  # the file first: a card without its file is not a finished export
        _copy(card_path(src), card_path(path))
        return str(d)
    return str(d) if mine["artefact"]["sha256"] == theirs["artefact"]["sha256"] else None


def reused_figures(state: BuildState, name: str, precision: str, info: dict[str, Any]) -> dict[str, Any] | None:
    """DIR's val figures of a baseline export copied from it (the same file, on the same data), or None."""
    if not info.get("reused_from"):
        return None
    try:
        doc = json.loads((Path(info["reused_from"]) / "build.json").read_text())
        figures = doc["stages"]["evaluate"][name][precision]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # DIR has not evaluated it: evaluated here
    return {**figures, "reused_from": info["reused_from"]}


def reuse_note(state: BuildState) -> str | None:
    """The report's settings line on reused baselines (None without ``--baselines-from``)."""
    o = state.options
    if not o.baselines_from:
        return None
    exported = [(n, p, e) for n in REFERENCE_MODELS for p, e in state.stages.get("export", {}).get(n, {}).items()]
    copied = [f"{n} {p}" for n, p, e in exported if e.get("reused_from")]
    made = [f"{n} {p}" for n, p, e in exported if not e.get("reused_from")]
    return (f"baselines: arch0 and LR-ASPP reused from `{o.baselines_from}` (`--baselines-from`): their trainings"
            + (f"; the exports and val figures of {', '.join(copied)}" if copied else "")
            + (f"; exported and evaluated here: {', '.join(made)}" if made else "")
            + "; every model timed here, side by side.")
