"""How the agent serves (:class:`AgentConfig`) and the checks that refuse unsafe or impossible configurations."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from segfactory.benchmarks.agent.backends import AUTO
from segfactory.factory.errors import InputError

MAX_BODY_CAP_MB = 2047  # onnx.checker cannot take a serialized model of 2 GiB or more


@dataclass
class AgentConfig:
    """How the agent serves. ``token`` None is allowed only on loopback with ``insecure_loopback``."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    backend: str = AUTO
    cache_dir: Path | None = None
    queue_limit: int = 32
    insecure_loopback: bool = False
    max_body_mb: float = 64.0
    timeout_s: float = 900.0
    lingering_s: float = 5.0  # after a 413, discard (never keep) what the client still sends, so it sees the answer

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * (1 << 20))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_config(config: AgentConfig) -> None:
    """Refuse unsafe or impossible configurations with one-line InputErrors."""
    if config.token is None:
        if not config.insecure_loopback:
            raise InputError("refusing to start without a token: give --token-file (or, on loopback only, "
                             "--insecure-loopback)")
        if not is_loopback(config.host):
            raise InputError(f"--insecure-loopback needs a loopback --host, not {config.host}")
    if not 0 <= config.port <= 65535:
        raise InputError(f"--port {config.port} is outside 0..65535")
    if config.queue_limit < 1:
        raise InputError(f"--queue-limit {config.queue_limit} must be at least 1")
    if not 0 < config.max_body_mb <= MAX_BODY_CAP_MB:
        raise InputError(f"--max-body-mb {config.max_body_mb} must be in (0, {MAX_BODY_CAP_MB}]")
    if config.timeout_s <= 0:
        raise InputError(f"--timeout-s {config.timeout_s} must be positive")
