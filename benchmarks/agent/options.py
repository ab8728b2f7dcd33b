"""The flags that point a command at a device agent, declared once for ``search``, ``bench`` and ``profile``.

``bench`` and ``profile`` take them through :func:`device_agent_options`; ``search`` declares its
:class:`~segfactory.search.options.SearchOptions` fields from :meth:`Flag.meta`. Each command says in its own
words what it does with the agent (the ``--device-url`` help); name, type, default and the token's help are these.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
from segfactory.factory.commands.flags import option


@dataclass(frozen=True)
class Flag:
    """One flag: its spelling, the parameter (and SearchOptions field) it fills, its click type and help."""

    flag: str
    dest: str
    help: str
    type: Any = None  # a click type; None: text

    def meta(self, help: str | None = None) -> dict[str, Any]:
        """What :class:`~segfactory.search.options.Opt` takes for this flag (``help``: the command's own)."""
        return {"flag": self.flag, "type": self.type, "help": help or self.help}

    def option(self, help: str | None = None) -> Callable:
        """The click option, default None (no agent)."""
        return option(self.flag, self.dest, type=self.type, default=None, help=help or self.help)


DEVICE_URL = Flag("--device-url", "device_url", "Device agent URL (segfactory agent serve).")
DEVICE_TOKEN_FILE = Flag("--device-token-file", "device_token_file", "File holding the device agent's token.",
                         click.Path(dir_okay=False))


def device_agent_options(url_help: str) -> Callable:
    """``--device-url`` (``url_help``: what the command does with the agent) and ``--device-token-file``."""

    def add(f: Callable) -> Callable:
        return DEVICE_URL.option(url_help)(DEVICE_TOKEN_FILE.option()(f))

    return add
