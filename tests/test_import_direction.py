"""design.md's package boundaries: factory <- export <- benchmarks <- search; only factory/cli.py reaches up.

Two kinds of checks. Static: the import statements of every file (at any depth, lazy or not) and the
``"package.module:attr"`` strings that only the root CLI may hold. At run time: every module of a package is
imported, and a small real call path runs, in a Python where the packages it may not use cannot be imported
(a ``sys.meta_path`` blocker that also records attempts, so an ``except ImportError`` cannot hide one).
"""

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import REPO

ALLOWED = {
    "factory": set(),
    "export": {"factory"},
    "benchmarks": {"factory", "export"},
    "search": {"factory", "export", "benchmarks"},
}
PACKAGES = set(ALLOWED)


def imported_packages(path: Path) -> set[str]:
    """segfactory packages a file imports (at any depth, lazily or not)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "segfactory" and len(parts) > 1 and parts[1] in PACKAGES:
                found.add(parts[1])
    return found


SCRIPTS = REPO / "benchmarks" / "scripts"  # measuring scripts, not installed: they may import every package


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_design(package):
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        if path.is_relative_to(SCRIPTS):
            continue
        for other in imported_packages(path) - ALLOWED[package] - {package}:
            bad.append(f"{path.relative_to(REPO)} imports segfactory.{other}")
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_only_root_cli_names_other_packages_by_string(package):
    # "package.module:attr" targets and import_module("segfactory.<other>...") calls are lazy imports by string.
    others = "|".join(sorted(PACKAGES - {package}))
    pattern = re.compile(rf"segfactory\.({others})[\w.]*:\w|import_module\(\s*[\"']segfactory\.({others})")
    root = REPO / "factory" / "cli.py"
    offenders = [str(p.relative_to(REPO)) for p in (REPO / package).rglob("*.py")
                 if p != root and pattern.search(p.read_text())]
    assert not offenders, f"only factory/cli.py may name other packages: {offenders}"


def test_factory_imports_alone():
    code = (
        "import sys, segfactory.factory.model, segfactory.factory.cost, segfactory.factory.zoo\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in (['segfactory','export'],"
        " ['segfactory','benchmarks'], ['segfactory','search'])]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


# ---- run time ---------------------------------------------------------------------------------------------------

def package_modules(package: str) -> list[str]:
    """Importable module names of ``package`` (folders without __init__.py, e.g. benchmarks/scripts, are not)."""
    root = REPO / package
    names = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if not all((root / Path(*rel.parts[:i]) / "__init__.py").is_file() for i in range(len(rel.parts))):
            continue
        parts = [p for p in rel.with_suffix("").parts if p != "__init__"]
        names.append(".".join(["segfactory", package, *parts]))
    return names


HARNESS = '''
import importlib, json, sys

BLOCKED = set({blocked!r})
attempts = []

class Blocker:
    """Make the packages this one may not use unimportable, and remember who tried."""

    def find_spec(self, name, path=None, target=None):
        parts = name.split(".")
        if parts[0] == "segfactory" and len(parts) > 1 and parts[1] in BLOCKED:
            attempts.append(name)
            raise ImportError(f"{{name}} is blocked in this test")
        return None

sys.meta_path.insert(0, Blocker())
failures, missing = [], []
for module in {modules!r}:
    try:
        importlib.import_module(module)
    except ImportError as e:
        if e.name and not e.name.startswith("segfactory") and "blocked" not in str(e):
            missing.append(f"{{module}}: {{e.name}}")  # an optional dependency absent here
        else:
            failures.append(f"{{module}}: {{e}}")
try:
{call}
except Exception as e:  # the call path may fail for a reason of its own: only the imports are judged here
    failures.append(f"call path: {{type(e).__name__}}: {{e}}")
print(json.dumps({{"failures": failures, "attempts": attempts, "missing": missing}}))
'''

# A small real call path per package, run with the other packages blocked (seconds each).
CALLS = {
    "factory": '''
import torch
from segfactory.factory.cli import main
from segfactory.factory.errors import RunError
from segfactory.factory.evaluate import open_predictor
try:
    main(["arch", "show", "arch0", "--encoder-weights", "none", "--input-size", "64x64", "--json"])
except SystemExit as e:
    assert e.code == 0, e.code
try:  # a model file without an opener is refused, not opened through another package
    open_predictor(None, sys.executable)
except RunError:
    pass
''',
    "export": '''
import tempfile, numpy as np, torch
from pathlib import Path
from segfactory.export.eval_cli import open_onnx
from segfactory.export.onnx import export_onnx
from segfactory.factory.config import ModelConfig
from segfactory.factory.model import build_model
from segfactory.factory.zoo import ZOO
with tempfile.TemporaryDirectory() as tmp:
    model = build_model(ZOO["arch0"], ModelConfig.create(5, 16, 1, "none"), load_weights=False).eval()
    path = export_onnx(model, Path(tmp) / "m.onnx", input_size=(32, 32), simplify=False)
    assert open_onnx(path)(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 32, 32)
''',
    "benchmarks": '''
import random
from segfactory.benchmarks.targets import get_target
from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import sample_genotype
config = ModelConfig.create(5, 16, 1, "none")
genotype = sample_genotype(random.Random(0))
assert get_target("jetson-orin-nano").latency(genotype, config, (64, 64)).source == "estimated"
cpu = get_target("cpu")
cpu.min_seconds, cpu.warmup_ms = 0.0, 0.0
assert cpu.latency(genotype, config, (32, 32)).source == "measured"
''',
    "search": '''
from segfactory.search.strategies import STRATEGIES, make_strategy
for name in ("random", "evolution"):
    make_strategy(name, seed=0).propose()
''',
}


def run_blocked(package: str, call: str, modules: list[str] | None = None) -> dict:
    blocked = sorted(PACKAGES - ALLOWED[package] - {package})
    code = HARNESS.format(blocked=blocked, modules=package_modules(package) if modules is None else modules,
                          call=textwrap.indent(call.strip() or "pass", "    "))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_runtime_imports_follow_design(package):
    """Every module imports, and the call path runs, with the packages ``package`` may not use unimportable."""
    report = run_blocked(package, CALLS[package])
    assert not report["failures"] and not report["attempts"], report


def test_the_blocker_catches_a_lazy_import_by_string():
    # What the removed factory/cli.py HOOKS did: factory code reaching export at run time through a string.
    call = '''
from segfactory.factory.cli import load
try:
    load("segfactory.export.predictor:OnnxPredictor")
except ImportError:
    pass  # swallowed, as a caller's "except ImportError" would: the blocker remembers the attempt
'''
    report = run_blocked("factory", call, modules=["segfactory.factory.cli"])
    assert report["attempts"] == ["segfactory.export"], report
