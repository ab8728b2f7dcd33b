"""The figures of docs/layout.md: Python files and lines per folder, at a commit and in the working tree.

    python docs/layout_stats.py 4b364ee > /tmp/layout.md

Prints Markdown: a table of folders (files and lines before and after), the files that moved since REV, and
each folder's files with their lines, then and now. Reads git's objects and the working tree; changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOTS = ("factory", "export", "benchmarks", "search", "agent", "tests")
REPO = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout


def counted(path: str) -> bool:
    return path.endswith(".py") and path.split("/")[0] in ROOTS


def at_commit(rev: str) -> dict[str, int]:
    """Lines of each counted file at ``rev``."""
    files = [p for p in git("ls-tree", "-r", "--name-only", rev).splitlines() if counted(p)]
    return {p: len(git("show", f"{rev}:{p}").splitlines()) for p in files}


def now() -> dict[str, int]:
    """Lines of each counted file in the working tree (tracked or untracked, not ignored, not deleted)."""
    files = git("ls-files", "--cached", "--others", "--exclude-standard").splitlines()
    return {p: len((REPO / p).read_text(encoding="utf-8").splitlines())
            for p in sorted(set(files)) if counted(p) and (REPO / p).is_file()}


def by_folder(lines: dict[str, int]) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, n in lines.items():
        folder = str(Path(path).parent) + "/"
        out[folder][0] += 1
        out[folder][1] += n
    return {k: (v[0], v[1]) for k, v in out.items()}


def main(rev: str) -> None:
    before, after = at_commit(rev), now()
    b, a = by_folder(before), by_folder(after)
    print(f"| folder | files {rev} | lines {rev} | files now | lines now |")
    print("|---|--:|--:|--:|--:|")
    for folder in sorted(set(b) | set(a)):
        fb, lb = b.get(folder, (0, 0))
        fa, la = a.get(folder, (0, 0))
        print(f"| `{folder}` | {fb or '-'} | {lb or '-'} | {fa or '-'} | {la or '-'} |")
    tb, ta = sum(before.values()), sum(after.values())
    print(f"| **all** | {len(before)} | {tb} | {len(after)} | {ta} |")
    print(f"\nMoved since {rev} (committed renames):\n")
    for line in git("diff", "-M", "--name-status", rev, "HEAD").splitlines():
        status, *paths = line.split("\t")
        if status.startswith("R") and counted(paths[0]):
            print(f"- `{paths[0]}` -> `{paths[1]}`")
    for title, lines in ((f"Files at {rev}", before), ("Files now", after)):
        print(f"\n{title} (lines):\n")
        folders: dict[str, list[str]] = defaultdict(list)
        for path, n in sorted(lines.items()):
            folders[str(Path(path).parent) + "/"].append(f"{Path(path).name} {n}")
        for folder, names in sorted(folders.items()):
            print(f"- `{folder}`: {', '.join(names)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "4b364ee")
