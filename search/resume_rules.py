"""What a resumed search may change: the runtime knobs of :mod:`segfactory.search.options`, and nothing that changes
its results (each field's ``Opt.resume`` says which it is)."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.search.options import FIXED, RUNTIME, Opt, SearchOptions, declared, size_text


def runtime_flags() -> list[str]:
    """The flags a resumed search may change."""
    return [o.flag for _, o in declared() if o.resume == RUNTIME]


def resume_options(saved: SearchOptions, asked: SearchOptions, given: Collection[str] | None, where: Path,
                   proxy_settings: dict[str, Any]) -> SearchOptions:
    """The options of a resumed search: ``saved``, with the runtime knobs (and --out) of ``asked``.

    Args:
        saved: the options in run.json.
        asked: this run's options.
        given: the fields the user set explicitly (None: all of them); only these are compared, so a resumed
            command that omits a flag is not refused for the flag's default.
        where: the run directory, for the message.
        proxy_settings: the run's resolved ProxySettings (run.json), which the ``proxy`` entries are checked against.

    Raises:
        InputError: ``asked`` changes a setting that changes the results.
    """
    known = {f.name for f, _ in declared()}
    names = known if given is None else set(given)
    if names - known:
        raise ValueError(f"not SearchOptions fields: {', '.join(sorted(names - known))}")
    changes = []
    for f, o in declared():
        if o.resume != FIXED or f.name not in names:
            continue
        if o.parts:  # a dict of ProxySettings overrides: each entry against the setting the run used
            changes += _proxy_changes(o, asked.proxy, proxy_settings)
        elif _plain(getattr(saved, f.name)) != _plain(getattr(asked, f.name)):
            changes.append((_was(o, getattr(saved, f.name)), _written(o, getattr(asked, f.name)) or f"no {o.flag}"))
    if changes:
        asked_for = "; ".join(f"{old}, this run asks for {new}" for old, new in changes)
        raise InputError(f"--resume: {where} was searched {asked_for}; repeat the original settings "
                         f"(only {', '.join(runtime_flags())} may change)")
    return replace(saved, **{f.name: getattr(asked, f.name) for f, o in declared() if o.resume != FIXED})


def _proxy_changes(o: Opt, asked: dict[str, Any], settings: dict[str, Any]) -> list[tuple[str, str]]:
    parts = {p.key: p for p in o.parts}
    changes = []
    for key, value in asked.items():
        if _plain(settings.get(key)) == _plain(value):
            continue
        part = parts.get(key)
        if part is None:
            flag, write = o.flag, lambda v, k=key: f"{k}={json.dumps(_plain(v))}"
        else:
            flag, write = part.flag, (size_text if part.size else _text)
        old = settings.get(key)
        was = f"without {flag}" if old is None and part is not None else f"with {flag} {write(old)}"
        changes.append((was, f"{flag} {write(value)}"))
    return changes


def _plain(value: Any) -> Any:
    """Tuples as lists, as they come back from run.json."""
    return json.loads(json.dumps(value))


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _written(o: Opt, value: Any) -> str | None:
    """``value`` as the command line writes it; None where the flag is absent."""
    if o.flag_value is not None:
        return o.flag if value == o.flag_value else None
    if value is None or (isinstance(value, (list, dict)) and not value):
        return None
    return f"{o.flag} {(o.show or _text)(value)}"


def _was(o: Opt, value: Any) -> str:
    written = _written(o, value)
    return f"with {written}" if written else f"without {o.flag}"
