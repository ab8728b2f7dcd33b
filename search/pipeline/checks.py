"""Everything a build is asked to do, checked before its folder is created or any work starts.

A refused build writes nothing, so the corrected command runs in the same ``--out`` (issue 23): the training
settings are checked as each training will be made (``TrainConfig``), the search's options as the search will
resolve them (``make_context(check_only=True)``), and ``--from-search`` against the search it names: flags that
only steer a search are refused there, since that search is done; ``--baselines-from`` against the build it names
(search.pipeline.reuse).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from pathlib import Path

from segfactory.factory.errors import InputError
from segfactory.search.pipeline.options import BuildOptions
from segfactory.search.pipeline.state import recorded_stages

# SearchOptions fields the build still reads after its search stage (pick, train, export, check, bench); with
# --from-search, any other search flag would be silently ignored, so it is refused
AFTER_SEARCH = ("data", "target", "lut", "device_url", "device_token_file", "latency_threads", "max_latency_ms",
                "max_latency_ratio", "max_params", "max_macs", "seed", "device", "encoder_weights", "input_size")
# TrainConfig's names for the build's flags, for messages
TRAIN_FLAGS = {"--minutes": "--train-minutes", "--threads": "--train-threads", "--workers": "--train-workers"}


def check_build(options: BuildOptions, *, resume: bool, given: Collection[str] | None = None,
                search_done: bool = False) -> None:
    """Raise :class:`InputError` for anything the build would refuse later; creates and writes nothing.

    ``given``: the search fields the user set explicitly (None: unknown, nothing is refused for being given);
    ``search_done``: a resumed build whose search stage is recorded (its options are not checked again).
    """
    _check_training(options)
    if options.baselines_from and not (resume and "evaluate" in recorded_stages(options.out)):
        from segfactory.search.pipeline.reuse import check_baselines_from

        check_baselines_from(options)  # a build whose baselines are evaluated needs DIR no longer
    if options.from_search:
        _check_from_search(options, set(given or ()))
    elif not search_done:
        from segfactory.search.context import make_context

        d = Path(options.out) / "search"
        search = replace(options.search, out=str(d), max_minutes=options.search_minutes)
        again = resume and (d / "run.json").is_file()
        make_context(search, again, given=set() if again else None, check_only=True)


def _check_training(options: BuildOptions) -> None:
    """Each recipe's TrainConfig as the train stage makes it (the architecture is the pick's: arch0 stands in)."""
    from segfactory.factory.training import TrainConfig

    for recipe in options.recipes:
        try:
            TrainConfig(arch="arch0", data=options.search.data, recipe=recipe, epochs=options.epochs,
                        minutes=options.train_minutes, seed=options.search.seed, threads=options.train_threads,
                        workers=options.workers, **options.train_set)
        except InputError as e:
            message = str(e)
            for theirs, ours in TRAIN_FLAGS.items():
                message = message.replace(theirs, ours)
            raise InputError(message) from None
        except TypeError as e:  # a --train-set key TrainConfig does not take
            raise InputError(f"--train-set: {e}") from None


def _check_from_search(options: BuildOptions, given: set[str]) -> None:
    from segfactory.factory.io import read_json
    from segfactory.search.options import declared

    d = Path(options.from_search).resolve()
    if not (d / "run.json").is_file() or not (d / "trials.jsonl").is_file():
        raise InputError(f"--from-search {d} holds no search (run.json and trials.jsonl)")
    run = read_json(d / "run.json", "search run file")
    searched = run.get("options", {}) if isinstance(run, dict) else {}
    if searched.get("data") != options.search.data:
        raise InputError(f"--from-search {d} searched {searched.get('data')!r}, not --data {options.search.data!r}")
    size = options.search.input_size
    if size is not None and list(size) != list(run.get("input_size") or []):
        raise InputError(f"--from-search {d} searched at {'x'.join(map(str, run.get('input_size') or []))}, not "
                         f"--input-size {size[0]}x{size[1]}: drop --input-size (the build uses the search's)")
    flags = [o.flag for f, o in declared() if f.name in given and f.name not in AFTER_SEARCH]
    if flags:
        raise InputError(f"{', '.join(flags)}: only for a build that searches; --from-search {d} is a finished "
                         "search (drop them, or build without --from-search)")
