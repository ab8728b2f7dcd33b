"""Rules every command's options follow (issue 23), checked over every command rather than case by case.

- a float flag refuses NaN and infinities (every float parameter is a :class:`~segfactory.factory.commands.types.
  Float`);
- a search flag given where it has no effect is warned about in one line (``Opt.applies``);
(That a choice among registered names is read from its registry is ``tests/test_registries_cli.py``'s.)
"""

from __future__ import annotations

import click
import pytest
from segfactory.factory.cli import COMMANDS, load
from segfactory.factory.commands.types import Float
from segfactory.search.options import SearchOptions, declared, without_effect


def _commands() -> list[tuple[str, click.Command]]:
    """Every command and subcommand of the CLI, by its path (``search pick``)."""
    out = []

    def walk(path: str, cmd: click.Command) -> None:
        out.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(f"{path} {name}", sub)

    for name, (target, _) in COMMANDS.items():
        walk(name, load(target))
    return out


FLOAT_PARAMS = [(path, p.name) for path, cmd in _commands() for p in cmd.params
                if isinstance(p.type, click.types.FloatParamType)]


@pytest.mark.parametrize("path, name", FLOAT_PARAMS, ids=[f"{c}:{n}" for c, n in FLOAT_PARAMS])
def test_every_float_flag_refuses_nan(path, name):
    cmd = dict(_commands())[path]
    param = next(p for p in cmd.params if p.name == name)
    assert isinstance(param.type, Float), f"{path} {param.opts[0]} is a {type(param.type).__name__}, not Float"
    for bad in ("nan", "inf", "-inf", "NaN"):
        with pytest.raises(click.BadParameter, match="not a finite number"):
            param.type.convert(bad, param, None)


def test_float_flags_were_found():
    assert len(FLOAT_PARAMS) >= 20 and any(p == "build" for p, _ in FLOAT_PARAMS)


APPLIES = [(f.name, o) for f, o in declared() if o.applies is not None]


@pytest.mark.parametrize("name, opt", APPLIES, ids=[n for n, _ in APPLIES])
def test_flag_without_effect_is_warned(name, opt):
    """For each mode-bound flag: some options put it out of its mode (a warning), others in it (none)."""
    modes = [SearchOptions(strategy=s, max_latency_ratio=r, rungs=g) for s in ("ppo", "random", "evolution", "list")
             for r in (None, 0.5) for g in ("auto", "off")]
    warned = [o for o in modes if without_effect(o, {name})]
    quiet = [o for o in modes if not without_effect(o, {name})]
    assert warned and quiet
    line = without_effect(warned[0], {name})[0]
    assert line.startswith(f"{opt.flag} has no effect: it applies only with ")
    assert not without_effect(warned[0], set())  # the default, not given: nothing said


def test_warning_is_one_line_on_the_command_line(tmp_path, capsys):
    from segfactory.factory.cli import main

    with pytest.raises(SystemExit) as info:
        main(["search", "--strategy", "ppo", "--population", "5", "--data", "nope:x", "-q", "--out",
              str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "Warning: --population has no effect: it applies only with --strategy evolution" in err.splitlines()


def test_auto_strategy_warns_about_the_flags_of_the_strategy_it_did_not_pick(tmp_path, capsys):
    """--strategy auto is resolved once the device is known; a PPO flag on a CPU (evolution) is then warned about."""
    from segfactory.factory.cli import main

    with pytest.raises(SystemExit) as info:
        main(["search", "--controller", "reachable", "--population", "5", "--device", "cpu", "--data", "nope:x",
              "-q", "--out", str(tmp_path / "s")])
    lines = capsys.readouterr().err.splitlines()
    assert info.value.code == 2
    assert ("Warning: --controller has no effect: it applies only with --strategy ppo (--strategy auto chose "
            "evolution on cpu)") in lines
    assert not any("--population" in line for line in lines)
