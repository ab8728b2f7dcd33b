"""Name-keyed registries: ops and merges, search strategies, latency targets, runner backends.

One small class so that every "pick an implementation by name" in segfactory behaves alike: registering a name
twice raises :class:`ValueError` (a silent overwrite would hide a clash between two modules), and looking up an
unknown name raises :class:`KeyError` listing the known names. Registration order is kept: help texts and
error messages list names in the order they were registered. A registry is a read-only mapping
(``name in r``, ``r[name]``, ``list(r)``), so code that treated the old plain dicts as dicts keeps working.

Callers whose users type the name (``--strategy``, ``--target``, ``--backend``) turn the miss into an
``InputError`` with their own one-line message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar, overload

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one ``kind`` (a word for messages: "op", "strategy", ...) keyed by name, with optional help."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    @overload
    def register(self, name: str, *, help: str = "") -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, help: str = "") -> T: ...

    def register(self, name, obj=None, *, help=""):
        """Add ``obj`` under ``name``; without ``obj``, a decorator that adds what it decorates."""
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = entry
            self._help[name] = help
            return entry

        return add if obj is None else add(obj)

    @contextmanager
    def temporary(self, name: str, obj: T, *, help: str = "") -> Iterator[T]:
        """``obj`` under ``name`` for the ``with`` block only: a test's throwaway entry leaves the registry as it
        found it (registries are otherwise append-only, so no caller sees a name vanish)."""
        self.register(name, obj, help=help)
        try:
            yield obj
        finally:
            del self._entries[name], self._help[name]

    def get(self, name: str) -> T:  # type: ignore[override] - a miss raises instead of returning a default
        """The entry called ``name``; :class:`KeyError` listing the known names when there is none."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The one-line message for a miss (callers raising their own error type reuse it)."""
        return f"unknown {self.kind} {name!r}; known: {', '.join(self._entries) or '(none)'}"

    def names(self) -> list[str]:
        return list(self._entries)

    def help(self, name: str) -> str:
        self.get(name)
        return self._help[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
