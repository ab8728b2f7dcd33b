"""Type checks of settings dataclasses against their own annotations, for values that come from users.

``--proxy-set stage1_lr=[1,2]`` or ``--train-set batch_size=2.5`` arrive as JSON; without a check, the wrong type
surfaces deep inside training as a TypeError (or silently, as a float batch size). :func:`check_types` reads the
annotations the dataclass already declares, so a new setting is checked with no other change. It knows the
annotation forms settings use: ``int``, ``float``, ``str``, ``bool``, ``tuple[X, Y]`` and ``X | None``.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from typing import Any

from segfactory.factory.errors import InputError

_WORDS = {"int": "an integer", "float": "a finite number", "str": "a string", "bool": "true or false",
          "None": "null"}


def _split(annotation: str) -> list[str]:
    """``"tuple[int, int] | None"`` -> ``["tuple[int, int]", "None"]`` (top-level ``|`` only)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(annotation):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(annotation[start:i].strip())
            start = i + 1
    return [*parts, annotation[start:].strip()]


def _matches(value: Any, kind: str) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    if kind.startswith("tuple[") and kind.endswith("]"):
        items = [k.strip() for k in kind[len("tuple["):-1].split(",")]
        return (isinstance(value, (tuple, list)) and len(value) == len(items)
                and all(_matches(v, k) for v, k in zip(value, items)))
    return True  # a form this checker does not know: the dataclass' own checks apply


def describe(annotation: str) -> str:
    """``"int | None"`` -> ``"an integer or null"``."""
    words = []
    for kind in _split(annotation):
        if kind.startswith("tuple["):
            items = [k.strip() for k in kind[len("tuple["):-1].split(",")]
            words.append(f"a list of {len(items)} ({', '.join(_WORDS.get(k, k) for k in items)})")
        else:
            words.append(_WORDS.get(kind, kind))
    return " or ".join(words)


def check_types(obj: Any, what: str) -> None:
    """Raise :class:`InputError` naming the first field of dataclass ``obj`` whose value its annotation refuses."""
    for f in fields(obj):
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        value = getattr(obj, f.name)
        if not any(_matches(value, kind) for kind in _split(annotation)):
            shown = json.dumps(list(value) if isinstance(value, tuple) else value, default=str)
            raise InputError(f"{what} {f.name}={shown} must be {describe(annotation)}")
