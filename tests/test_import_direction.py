"""design.md's package boundaries: factory <- export <- benchmarks <- search; only factory/cli.py reaches up."""

import ast
import re
import subprocess
import sys
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


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_follow_design(package):
    bad = []
    for path in sorted((REPO / package).rglob("*.py")):
        for other in imported_packages(path) - ALLOWED[package] - {package}:
            bad.append(f"{path.relative_to(REPO)} imports segfactory.{other}")
    assert not bad, "; ".join(bad)


def test_only_root_cli_names_other_packages_by_string():
    # "package.module:attr" targets and import_module("segfactory.export...") calls are lazy imports.
    pattern = re.compile(r"segfactory\.(export|benchmarks|search)[\w.]*:\w|import_module\(\s*[\"']segfactory\.(export|benchmarks|search)")
    offenders = [
        str(p.relative_to(REPO)) for p in (REPO / "factory").rglob("*.py")
        if p.name != "cli.py" or p.parent.name != "factory"
        if pattern.search(p.read_text())
    ]
    assert not offenders, f"only factory/cli.py may name other packages: {offenders}"


def test_factory_imports_alone():
    code = (
        "import sys, segfactory.factory.model, segfactory.factory.cost, segfactory.factory.zoo\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in (['segfactory','export'],"
        " ['segfactory','benchmarks'], ['segfactory','search'])]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
