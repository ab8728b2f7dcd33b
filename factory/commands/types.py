"""Click parameter types every command shares: a float flag that refuses NaN (and infinities).

click's ``float`` and ``FloatRange`` accept ``nan`` (every comparison with NaN is false, so no range rejects it)
and ``inf``: a limit of NaN then rejects every candidate, a budget of NaN minutes never ends. Every float flag
of every command is a :class:`Float` (``tests/test_option_rules.py`` checks, command by command).
"""

from __future__ import annotations

import math
from typing import Any

import click


class Float(click.FloatRange):
    """A finite float, optionally within a range (click.FloatRange's arguments)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

    def __repr__(self) -> str:
        return f"Float({self._describe_range()})" if (self.min, self.max) != (None, None) else "Float"


FLOAT = Float()
POSITIVE = Float(min=0, min_open=True)
NON_NEGATIVE = Float(min=0)


class Names(click.Choice):
    """A choice among the names a registry holds, read when the flag is parsed or its help shown, so that a name
    registered after import (a plugin, a test's throwaway entry) is offered with no other change.

    ``names``: a callable returning the names (``registry.names``), ``extra``: names the command adds (``auto``).
    """

    def __init__(self, names: Any, *, extra: tuple[str, ...] = (), case_sensitive: bool = True) -> None:
        self._names, self._extra = names, tuple(extra)
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:  # type: ignore[override]
        return (*self._extra, *self._names())
