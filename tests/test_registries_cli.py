"""One source for every name: the commands offer what the registries hold, read when they parse or show help.

A throwaway recipe, runner and target, registered for one test only, are listed in their command's --help and
accepted by its parsing; and no ``click.Choice`` in the packages spells out a registered name.
"""

from __future__ import annotations

import ast
import importlib

from click.testing import CliRunner
from segfactory.benchmarks.targets import TARGETS, Target

from tests.helpers import REPO

PACKAGES = ("factory", "export", "benchmarks", "search")
SCRIPTS = REPO / "benchmarks" / "scripts"  # measuring scripts, not installed


def _invoke(command, args: list[str]):
    return CliRunner().invoke(command, args, terminal_width=200, catch_exceptions=False)


def _listed(command, name: str) -> None:
    result = _invoke(command, ["--help"])
    assert result.exit_code == 0 and name in result.output, result.output


def test_a_registered_recipe_is_offered_by_train(monkeypatch, tmp_path):
    from segfactory.factory import training
    from segfactory.factory.commands.train import train
    from segfactory.factory.training.recipes import RECIPES, Recipe

    ran = []
    monkeypatch.setattr(training, "train", lambda cfg, out, **kw: ran.append(cfg))
    recipe = Recipe(batch_size=3)
    with RECIPES.temporary("throwaway_recipe", recipe, help="a recipe of this test"):
        _listed(train, "throwaway_recipe")
        result = _invoke(train, ["--arch", "arch0", "--data", "camvid-mini", "--out", str(tmp_path),
                                 "--recipe", "throwaway_recipe", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert ran[0].recipe == "throwaway_recipe" and ran[0].settings == recipe
    assert "throwaway_recipe" not in RECIPES  # the registry is as it was


def test_a_registered_runner_is_offered_by_bench(monkeypatch):
    from segfactory.benchmarks import bench as library
    from segfactory.benchmarks.cli import bench
    from segfactory.benchmarks.models import RUNNERS

    asked = {}
    monkeypatch.setattr(library, "resolve_specs", lambda *a: ["spec"])
    monkeypatch.setattr(library, "run_bench", lambda specs, **kw: asked.update(kw) or [])
    monkeypatch.setattr(library, "render", lambda results: None)
    with RUNNERS.temporary("throwaway_runner", lambda spec, **kw: None, help="a runner of this test"):
        _listed(bench, "throwaway_runner")
        result = _invoke(bench, ["--arch", "arch0", "--backend", "throwaway_runner"])
    assert result.exit_code == 0, result.output
    assert asked["backend"] == "throwaway_runner"
    for name in ("ort-cuda", "ort-tensorrt", "trtexec"):  # registered runners, and trtexec beside them
        _listed(bench, name)


class _ThrowawayTarget(Target):
    name = "throwaway_target"

    @classmethod
    def create(cls, name, **options):
        return cls()


def test_a_registered_target_is_offered_by_profile_and_get_target(monkeypatch, tmp_path):
    from segfactory.benchmarks.cli import profile
    from segfactory.benchmarks.lut import profile as library
    from segfactory.benchmarks.targets import get_target, target_class

    asked = []
    monkeypatch.setattr(library, "run_profile", lambda target, *a, **kw: asked.append(target) or {
        "out": "x", "units_total": 0, "complete": True, "overhead": None})
    with TARGETS.temporary("throwaway_target", _ThrowawayTarget, help="a target of this test"):
        _listed(profile, "throwaway_target")
        result = _invoke(profile, ["--target", "throwaway_target", "--out", str(tmp_path / "lut.json")])
        assert result.exit_code == 0, result.output
        assert asked == ["throwaway_target"]
        assert isinstance(get_target("throwaway_target"), _ThrowawayTarget)
        assert not target_class("throwaway_target").via_agent  # the base class' capabilities: none
    assert "throwaway_target" not in TARGETS


# ---- no click.Choice retypes a registry ------------------------------------------------------------------------
def _package_files():
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if not path.is_relative_to(SCRIPTS):
                yield path


def _module_name(path) -> str:
    return "segfactory." + ".".join(path.relative_to(REPO).with_suffix("").parts)


def _called(node: ast.AST) -> str | None:
    """``click.Choice(...)`` / ``Choice(...)`` -> "Choice"; the called name of a call, else None."""
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def registered_names() -> dict[str, str]:
    """Every name a registry of the packages holds -> where: each module-level ``X = Registry(...)`` is found in
    the source (so a new registry is covered with no change here) and read after importing its module; plus the
    names that are not in a Registry (target aliases, bench's trtexec, the agent's backends)."""
    from segfactory.benchmarks.agent.backends import MEASURING_BACKENDS
    from segfactory.benchmarks.models import TRTEXEC
    from segfactory.benchmarks.targets import ALIASES

    names = {**{a: "benchmarks.targets.ALIASES" for a in ALIASES}, TRTEXEC: "benchmarks.models.TRTEXEC",
             **{b: "benchmarks.agent.backends.MEASURING_BACKENDS" for b in MEASURING_BACKENDS}}
    for path in _package_files():
        for node in ast.parse(path.read_text(), str(path)).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and _called(node.value) == "Registry":
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                module = _module_name(path)
                for name in getattr(importlib.import_module(module), target.id):
                    names.setdefault(name, f"{module.removeprefix('segfactory.')}.{target.id}")
    return names


def _literal_strings(node: ast.AST, constants: dict[str, ast.AST]) -> list[str]:
    """The strings of a list/tuple/set literal, or of a module-level constant assigned one (``X_CHOICES``)."""
    if isinstance(node, ast.Name) and node.id in constants:
        node = constants[node.id]
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def test_registry_discovery_finds_the_registries():
    where = set(registered_names().values())
    for registry in ("factory.training.recipes.RECIPES", "benchmarks.models.RUNNERS", "benchmarks.targets.TARGETS",
                     "factory.ops.OPS", "factory.reference.REFERENCES", "search.strategies.STRATEGIES",
                     "search.presets.PRESETS"):
        assert registry in where, registry


# constants whose names only coincide with registered ones: the controller's update rules (--pg ppo|reinforce)
# are not strategies, although the PPO strategy is named after one of them; PPO's "paper" profile is not the
# "paper" preset (the preset selects it)
HOMONYMS = {"PG_ALGORITHMS", "CONTROLLER_PROFILES"}


def test_no_choice_spells_out_registered_names():
    """A choice among registered things reads its registry (factory.commands.types.Names); one typed out goes
    stale when a name is registered. Lists that are not registries (precisions, devices) are constants."""
    names = registered_names()
    found = []
    for path in _package_files():
        tree = ast.parse(path.read_text(), str(path))
        constants = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                     for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if _called(node) == "Choice" and node.args:
                if isinstance(node.args[0], ast.Name) and node.args[0].id in HOMONYMS:
                    continue
                clash = [f"{s} ({names[s]})" for s in _literal_strings(node.args[0], constants) if s in names]
                if clash:
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}: {', '.join(clash)}")
    assert not found, "click.Choice spells out registered names: " + "; ".join(found)
