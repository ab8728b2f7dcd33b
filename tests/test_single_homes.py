"""Definitions with one home: the model defaults (factory/config.py) and the device-agent flags
(benchmarks/agent/options.py) are what every command offers."""

from __future__ import annotations

from dataclasses import fields

import click
import pytest
from segfactory.benchmarks.agent.options import DEVICE_TOKEN_FILE, DEVICE_URL
from segfactory.factory.cli import COMMANDS, load
from segfactory.factory.config import LIMITS, RELEASED, SEARCH_PROXY, ModelConfig
from segfactory.search.options import SearchOptions

MODEL_FLAGS = {"num_classes": "--num-classes", "agg_size": "--agg-size", "sep_repeats": "--sep-repeats",
               "encoder_weights": "--encoder-weights"}


def _params(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params}


def _command(path: str) -> click.Command:
    name, *sub = path.split()
    command = load(COMMANDS[name][0])
    for s in sub:
        command = command.commands[s]
    return command


def test_model_config_defaults_are_the_released_ones():
    assert ModelConfig() == ModelConfig.create()  # padding and normalisation: the released weights' own
    for config in (ModelConfig(), ModelConfig.create()):
        for f in fields(RELEASED):
            assert getattr(config, f.name) == getattr(RELEASED, f.name), f.name


@pytest.mark.parametrize("path", ["arch show", "train", "export", "bench", "profile"])
def test_model_flags_default_to_released_and_offer_the_config_limits(path):
    params = _params(_command(path))
    for name, flag in MODEL_FLAGS.items():
        p = params[name]
        assert flag in p.opts and p.default == getattr(RELEASED, name), (path, name)
        if name in LIMITS:
            assert (p.type.min, p.type.max) == LIMITS[name], (path, name)


def test_search_deploys_released_and_trains_proxies_as_the_paper():
    options = SearchOptions()
    assert (options.agg_size, options.sep_repeats, options.encoder_weights) == (
        RELEASED.agg_size, RELEASED.sep_repeats, RELEASED.encoder_weights)
    assert (options.proxy_agg_size, options.proxy_sep_repeats) == (SEARCH_PROXY.agg_size, SEARCH_PROXY.sep_repeats)
    help_text = {f.name: f.metadata["opt"].help for f in fields(SearchOptions)}
    assert str(SEARCH_PROXY.agg_size) in help_text["proxy_agg_size"]


@pytest.mark.parametrize("path", ["bench", "profile", "search"])
def test_device_flags_are_declared_once(path):
    params = _params(_command(path))
    for flag in (DEVICE_URL, DEVICE_TOKEN_FILE):
        p = params[flag.dest]
        assert p.opts == [flag.flag] and p.default is None, (path, flag.flag)
        assert type(p.type) is type(flag.type or click.STRING), (path, flag.flag)
    assert params[DEVICE_TOKEN_FILE.dest].help == DEVICE_TOKEN_FILE.help


def test_no_private_name_is_imported_across_modules():
    """A name with a leading underscore belongs to its module: another module importing it is a hidden second
    home (issue 22). Private modules of a package (``agent/_http.py``) are that package's own."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    found = []
    for folder in ("factory", "export", "benchmarks", "search"):
        for path in (repo / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segfactory."):
                    private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                    if private:
                        found.append(f"{path.relative_to(repo)}:{node.lineno} {node.module} {private}")
    assert not found, found
