"""The search options are declared once (search/options.py); the CLI and the resume check are built from it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click
import pytest
from segfactory.factory.errors import InputError
from segfactory.search.cli import options_from_cli, search
from segfactory.search.options import RUNTIME, SearchOptions, declared
from segfactory.search.resume_rules import resume_options, runtime_flags

CLI_ONLY = {"--resume", "--json", "--quiet", "--version", "--help"}


def _parse(args: list[str]) -> tuple[SearchOptions, set[str]]:
    ctx = search.make_context("search", args)
    return options_from_cli(ctx, dict(ctx.params))


def test_every_field_has_exactly_one_flag_and_the_cli_has_no_other():
    declared_flags = []
    for _, o in declared():
        declared_flags += [o.flag, *o.aliases, *(p.flag for p in o.parts)]
    assert len(declared_flags) == len(set(declared_flags))
    ctx = click.Context(search, info_name="search")
    cli_flags = {opt for p in search.get_params(ctx) for opt in p.opts if opt.startswith("--")}
    assert cli_flags - CLI_ONLY == set(declared_flags)


def test_cli_defaults_are_the_dataclass_defaults():
    options, given = _parse([])
    assert given == set()
    for f in fields(SearchOptions):
        if f.name != "out":  # the CLI makes a timestamped directory
            assert getattr(options, f.name) == getattr(SearchOptions(), f.name), f.name


def test_renamed_flags_land_in_their_fields(tmp_path):
    genotypes = tmp_path / "list.txt"
    genotypes.write_text("arch0\n# a comment\narch1\n")
    options, given = _parse(["--no-early-stopping", "--action-feedback", "--pg", "reinforce", "--time-limit", "5",
                             "--crop", "64x96", "--loader-workers", "0", "--proxy-set", "stage1_lr=0.01",
                             "--genotypes", str(genotypes), "--input-size", "64x64", "--seed", "0"])
    assert options.early_stopping is False and options.feedback is True and options.pg_algorithm == "reinforce"
    assert options.proxy == {"stage1_lr": 0.01, "time_limit_s": 5.0, "crop": (64, 96), "workers": 0}
    assert len(options.genotypes) == 2 and options.input_size == (64, 64)
    # --seed 0 is the default, but it was given: a resume compares it
    assert given == {"early_stopping", "feedback", "pg_algorithm", "proxy", "genotypes", "input_size", "seed"}


def test_runtime_knobs_are_the_declared_ones():
    assert runtime_flags() == ["--budget", "--threads", "--executor", "--ray-address", "--workers",
                               "--gpus-per-trial", "--cpus-per-trial", "--minutes", "--verify-every"]
    assert {f.name for f, o in declared() if o.resume == RUNTIME} == {
        "budget", "threads", "executor", "ray_address", "workers", "gpus_per_trial", "cpus_per_trial",
        "max_minutes", "verify_every"}


SETTINGS = {"time_limit_s": 60.0, "crop": [64, 64], "stage1_lr": 0.007}


def _resume(saved: SearchOptions, asked: SearchOptions, given) -> SearchOptions:
    return resume_options(saved, asked, given, Path("runs/x"), SETTINGS)


def test_resume_refuses_a_given_change_naming_both_values():
    saved = SearchOptions(out="runs/x", seed=0, input_size=(64, 64))
    with pytest.raises(InputError) as e:
        _resume(saved, SearchOptions(out="runs/x", seed=3), {"seed"})
    assert str(e.value).startswith("--resume: runs/x was searched with --seed 0, this run asks for --seed 3; "
                                   "repeat the original settings (only --budget, ")
    with pytest.raises(InputError, match="without --max-params, this run asks for --max-params 1000"):
        _resume(saved, SearchOptions(max_params=1000), {"max_params"})
    with pytest.raises(InputError, match="with --input-size 64x64, this run asks for --input-size 32x32"):
        _resume(saved, SearchOptions(input_size=(32, 32)), {"input_size"})
    with pytest.raises(InputError, match="without --no-early-stopping, this run asks for --no-early-stopping"):
        _resume(saved, SearchOptions(early_stopping=False), {"early_stopping"})


def test_resume_ignores_defaults_it_was_not_given_and_takes_runtime_knobs():
    saved = SearchOptions(out="runs/old", seed=5, strategy="random", budget=3, threads=1, input_size=(64, 64))
    asked = SearchOptions(out="runs/x", budget=9, workers=2, max_minutes=1.5)  # seed, strategy: defaults
    got = _resume(saved, asked, {"budget", "workers", "max_minutes"})
    assert (got.seed, got.strategy, got.input_size) == (5, "random", (64, 64))
    assert (got.out, got.budget, got.workers, got.max_minutes, got.threads) == ("runs/x", 9, 2, 1.5, None)
    # the same values given again are no change (tuples and lists alike, as run.json stores them)
    assert _resume(saved, SearchOptions(seed=5, input_size=(64, 64)), {"seed", "input_size"}).seed == 5


def test_resume_checks_proxy_entries_against_the_settings_the_run_used():
    saved = SearchOptions(proxy={})
    assert _resume(saved, SearchOptions(proxy={"time_limit_s": 60, "crop": (64, 64)}), {"proxy"}).proxy == {}
    with pytest.raises(InputError, match="with --time-limit 60, this run asks for --time-limit 30"):
        _resume(saved, SearchOptions(proxy={"time_limit_s": 30.0}), {"proxy"})
    with pytest.raises(InputError, match="with --proxy-set stage1_lr=0.007, this run asks for --proxy-set "
                                         "stage1_lr=0.5"):
        _resume(saved, SearchOptions(proxy={"stage1_lr": 0.5}), {"proxy"})


def test_library_resume_compares_every_field():
    with pytest.raises(InputError, match="--seed 3"):
        _resume(SearchOptions(), SearchOptions(seed=3), None)
    with pytest.raises(ValueError, match="not SearchOptions fields: sede"):
        _resume(SearchOptions(), SearchOptions(), {"sede"})


@pytest.mark.parametrize("argv, budget", [(["--minutes", "20"], None), (["--minutes", "20", "--budget", "5"], 5),
                                          ([], 8)])
def test_minutes_alone_bound_the_search(argv, budget, monkeypatch, tmp_path):
    """`search --minutes M` without --budget runs for its minutes, not for the default 8 candidates."""
    from click.testing import CliRunner
    from segfactory.search import loop
    from segfactory.search.options import MAX_BUDGET

    seen = {}
    monkeypatch.setattr(loop, "run_search", lambda options, **kw: seen.setdefault("o", options) and {})
    CliRunner().invoke(search, [*argv, "--out", str(tmp_path / "s"), "--json"])
    assert seen["o"].budget == (MAX_BUDGET if budget is None else budget)
