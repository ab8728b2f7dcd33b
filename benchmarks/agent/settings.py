"""Measurement settings of the device agent: parsed from query parameters, validated, and keyed for the cache.

The client writes them as query parameters (``input_size=360x480&batch=1&precision=fp16&warmup_ms=200&
iterations=100``); the agent parses them back with :meth:`MeasureSettings.from_query`. Standard library only:
the device side imports this without torch or numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError
from segfactory.factory.io import parse_size

# The version of the HTTP protocol between the client and the agent (endpoints, query parameters, answers).
# Both sides import it from here; the agent reports it in /v1/health and the client refuses another version.
# Raise it with any change that an older client or agent would misread.
PROTOCOL = 1

PRECISIONS = ("fp32", "fp16", "int8")
# Bounds keep one request from occupying the device for hours; the agent's --timeout-s caps it as well. They
# hold on both sides; the agent adds its own device's bounds (threads <= its cores, the memory estimate): limits.py.
LIMITS = {"batch": (1, 256), "warmup_ms": (0.0, 60_000.0), "iterations": (1, 1_000_000),
          "duration_s": (0.0, 600.0), "threads": (1, 1024)}
MAX_SIDE = 16384  # largest input height or width
# Keys a caller may put in a settings mapping that label the request rather than change the measurement
# (targets.py passes its target name); :meth:`MeasureSettings.coerce` drops them, the agent never sees them.
LABELS = frozenset({"target"})


@dataclass(frozen=True)
class MeasureSettings:
    """What to measure: input size HxW (None: the model's static size), batch, precision, timing loop, threads."""

    input_size: tuple[int, int] | None = None
    batch: int = 1
    precision: str = "fp16"
    warmup_ms: float = 200.0
    iterations: int = 100
    duration_s: float = 3.0
    threads: int | None = None  # ONNX Runtime on a CPU only (None: 1 thread)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        for name, (lo, hi) in LIMITS.items():
            value = getattr(self, name)
            if value is not None and not lo <= value <= hi:
                raise InputError(f"{name}={value} is outside {lo}..{hi}")
        if self.input_size is not None and max(self.input_size) > MAX_SIDE:
            raise InputError(f"input_size={self.input_size[0]}x{self.input_size[1]} has a side over {MAX_SIDE}")

    @property
    def input_shape(self) -> tuple[int, int, int, int] | None:
        """(N, 3, H, W), the layout of every segfactory export (float or uint8)."""
        if self.input_size is None:
            return None
        return (self.batch, 3, *self.input_size)

    def to_query(self) -> dict[str, str]:
        """Query parameters (the inverse of :meth:`from_query`); unset optional values are left out."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            out[f.name] = f"{value[0]}x{value[1]}" if f.name == "input_size" else str(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size) if self.input_size else None
        return d

    def key(self, backend: str) -> str:
        """A short stable hash of these settings and the backend (half of the cache key)."""
        text = json.dumps({"backend": backend, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> MeasureSettings:
        """Parse query parameters; an unknown parameter or a malformed value is an :class:`InputError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(query) - known)
        if unknown:
            raise InputError(f"unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for name, text in query.items():
            if name == "input_size":
                kwargs[name] = parse_size(text, "input_size")
            elif name == "precision":
                kwargs[name] = str(text).lower()
            elif name in ("batch", "iterations", "threads"):
                kwargs[name] = _number(name, text, int)
            else:
                kwargs[name] = _number(name, text, float)
        return cls(**kwargs)

    @classmethod
    def coerce(cls, settings: MeasureSettings | Mapping[str, Any] | None) -> MeasureSettings:
        """Settings from a :class:`MeasureSettings`, a mapping of values (``input_size`` as "HxW" or (H, W)), or None."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        query: dict[str, str] = {}
        for name, value in dict(settings).items():
            if value is None or name in LABELS:
                continue
            if name == "input_size" and not isinstance(value, str):
                h, w = value
                value = f"{h}x{w}"
            query[name] = str(value)
        return cls.from_query(query)


def _number(name: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise InputError(f"{name}={text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and math.isnan(value):
        raise InputError(f"{name}={text!r} is not a number")
    return value


def read_token(path: str | os.PathLike, what: str = "token file") -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped); warns when others may read the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not a text file") from None
    if not token or any(c.isspace() for c in token):
        raise InputError(f"{what} {path} must hold one token without spaces")
    if os.name == "posix" and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logging.getLogger("segfactory.agent").warning("%s %s is readable by other users; chmod 600 it", what, path)
    return token
