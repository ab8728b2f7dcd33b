"""The ``segfactory`` command of the segfactory-agent distribution (agent/pyproject.toml): the root CLI, with every
command but ``agent`` refused up front in one line.

That distribution installs the root CLI's modules but neither torch, the bundled weights nor the search, so the
other commands would load and then fail half-way ("No module named 'torch'"). The full ``segfactory``
distribution's command is the root CLI itself (``main`` of ``segfactory.factory.cli``).
"""

from __future__ import annotations

import sys

AVAILABLE = ("agent",)


def main(argv: list[str] | None = None) -> None:
    from segfactory.factory.cli import main as root_main

    args = sys.argv[1:] if argv is None else list(argv)
    # the root group takes only flags (--help, --version), so the first other word is the command
    name = next((a for a in args if not a.startswith("-")), None)
    if name is not None and name not in AVAILABLE:
        print(f"Error: 'segfactory {name}' is not part of the segfactory-agent distribution, which serves "
              "'segfactory agent serve' only; install the full segfactory (with torch) for it", file=sys.stderr)
        sys.exit(1)
    root_main(args)


if __name__ == "__main__":
    main()
