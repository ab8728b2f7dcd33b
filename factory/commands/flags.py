"""How every command declares a flag: :func:`option` (a click option that knows its --help section and may
derive its help from a registry when shown), and :class:`SectionedHelp`, which lists a command's options in
those sections.

``search`` and ``build`` build their flags from :class:`~segfactory.search.options.SearchOptions`' declarations
through :func:`option`; commands with a few flags of their own call it directly (``group`` defaults to
"Options", click's own heading).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

OTHER = "Options"


class SectionedOption(click.Option):
    """A click option with a --help section; ``help`` may be a callable, evaluated when the help is shown."""

    def __init__(self, *args: Any, help_group: str = OTHER, help: str | Callable[[], str] | None = None,
                 **kwargs: Any) -> None:
        self._help_fn = help if callable(help) else None
        super().__init__(*args, help=None if callable(help) else help, **kwargs)
        self.help_group = help_group

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        if self._help_fn is not None:
            self.help = self._help_fn()
        return super().get_help_record(ctx)


def option(*decls: str, group: str = OTHER, **kwargs: Any) -> Callable:
    """``click.option`` for a flag listed under ``group`` in --help (the one way a command declares a flag)."""
    return click.option(*decls, cls=SectionedOption, help_group=group, **kwargs)


class SectionedHelp:
    """Mixin for a click Command or Group: --help lists the options in sections, ``sections`` first, in that
    order, then any other section, then the subcommands."""

    sections: tuple[str, ...] = ()

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        found: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):  # type: ignore[attr-defined]
            record = param.get_help_record(ctx)
            if record is not None:
                found.setdefault(getattr(param, "help_group", OTHER), []).append(record)
        rest = [s for s in found if s not in self.sections and s != OTHER]
        for name in (*self.sections, *rest, OTHER):
            if name in found:
                with formatter.section(name):
                    formatter.write_dl(found[name])
        if isinstance(self, click.Group):
            self.format_commands(ctx, formatter)
