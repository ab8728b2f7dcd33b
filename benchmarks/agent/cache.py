"""The agent's results, kept by (model sha256, settings key): in memory, and on disk under ``--cache-dir``.

A model measured once with some settings is answered from here without being parsed or measured again; the
disk copy lets a restarted agent (or one serving several clients) answer too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from segfactory.factory.io import atomic_write_json

log = logging.getLogger("segfactory.agent")


class ResultCache:
    """Benchmark results by (sha256, settings key); ``cache_dir`` None keeps them in memory only."""

    def __init__(self, cache_dir: str | Path | None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.memory: dict[tuple[str, str], dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.memory)

    def _path(self, sha: str, skey: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / "results" / sha[:2] / f"{sha}-{skey}.json"

    def get(self, sha: str, skey: str) -> dict[str, Any] | None:
        hit = self.memory.get((sha, skey))
        if hit is not None:
            return hit
        path = self._path(sha, skey)
        if path is not None and path.is_file():
            try:
                hit = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                log.warning("ignoring unreadable cache entry %s", path)
                return None
            self.memory[(sha, skey)] = hit
        return hit

    def put(self, sha: str, skey: str, result: dict[str, Any]) -> None:
        self.memory[(sha, skey)] = result
        path = self._path(sha, skey)
        if path is not None:
            atomic_write_json(path, result)
