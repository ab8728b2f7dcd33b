"""Client of the device agent, used by ``search``, ``bench`` and ``profile`` with ``--device-url``.

Standard library only (``http.client``). Connection errors and 503 (queue full) are retried with
exponential back-off (honouring ``Retry-After``); every failure ends as one line: InputError for what the
caller sent (401 token, 400 model or settings, 413 size), RunError for an unreachable or failing device.
The first contact with an agent URL (in this process) checks that it speaks this client's protocol
(``settings.PROTOCOL``, reported in /v1/health); another version is a RunError saying which side to upgrade.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from segfactory.benchmarks.agent.settings import PROTOCOL, MeasureSettings
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.io import atomic_write_json

TIMEOUT_S = 1800.0  # an engine build on an Orin Nano takes minutes, and the request may queue behind others
CONNECT_TIMEOUT_S = 10.0
RETRIES = 5
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
# connection refused/reset, DNS failures, connect timeouts, a connection closed before a whole answer
_RETRYABLE = (OSError, http.client.HTTPException)
_PROTOCOL_CHECKED: set[str] = set()  # agent URLs that answered this client's protocol (in this process)


def read_token_file(path: str | Path | None) -> str | None:
    """The bearer token in ``path`` (None: send none, for an agent started with --insecure-loopback)."""
    from segfactory.benchmarks.agent.settings import read_token

    return None if path is None else read_token(path, "--device-token-file")


def _split(url: str) -> tuple[str, str, int, str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--device-url {url!r} is not an http(s)://HOST:PORT URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise InputError(f"--device-url {url!r} has a bad port") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


class _Busy(Exception):
    def __init__(self, retry_after: float | None, message: str) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _once(url: str, method: str, endpoint: str, body: bytes | None, token: str | None,
          connect_timeout_s: float, timeout_s: float) -> dict[str, Any]:
    scheme, host, port, base = _split(url)
    cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=connect_timeout_s)
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    try:
        conn.connect()
        conn.sock.settimeout(timeout_s)  # the answer comes only when the measurement is done
        try:
            conn.request(method, base + endpoint, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent may have refused early (401/413) and closed; its answer can still be read
        try:
            resp = conn.getresponse()
            raw = resp.read()
        except TimeoutError:
            raise RunError(f"device agent at {url} gave no answer within {timeout_s:g} s") from None
    finally:
        conn.close()
    try:
        payload = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        payload = {"error": raw[:200].decode("utf-8", "replace")}
    message = payload.get("error", f"HTTP {resp.status}") if isinstance(payload, dict) else f"HTTP {resp.status}"
    if resp.status == 503:
        retry_after = resp.getheader("Retry-After")
        raise _Busy(float(retry_after) if retry_after and retry_after.isdigit() else None, message)
    if resp.status == 401:
        raise InputError(f"device agent at {url} refused the token (401): check --device-token-file")
    if resp.status in (400, 404, 411, 413, 415, 417):
        raise InputError(f"device agent at {url}: {message} ({resp.status})")
    if resp.status != 200 or not isinstance(payload, dict):
        raise RunError(f"device agent at {url}: {message} ({resp.status})")
    return payload


def _request(url: str, method: str, endpoint: str, body: bytes | None, token: str | None, *,
             timeout_s: float, connect_timeout_s: float, retries: int, backoff_s: float,
             sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """One request with up to ``retries`` retries on connection errors and 503, exponential back-off."""
    last = ""
    for attempt in range(retries + 1):
        delay = min(MAX_BACKOFF_S, backoff_s * (2 ** attempt))
        try:
            return _once(url, method, endpoint, body, token, connect_timeout_s, timeout_s)
        except _Busy as e:
            last = f"busy: {e}"
            delay = max(delay, min(MAX_BACKOFF_S, e.retry_after or 0.0))
        except (InputError, RunError):
            raise
        except _RETRYABLE as e:
            last = f"{type(e).__name__}: {e}".strip().rstrip(":")
        if attempt < retries:
            sleep(delay)
    if last.startswith("busy"):
        raise RunError(f"device agent at {url} stayed busy after {retries + 1} attempts ({last})")
    raise RunError(f"device agent at {url} is unreachable after {retries + 1} attempts ({last}); "
                   "is 'segfactory agent serve' running there, and is the URL right?")


def health(url: str, token_file: str | Path | None, *, timeout_s: float = 30.0, retries: int = 2,
           backoff_s: float = BACKOFF_S) -> dict[str, Any]:
    """``GET /v1/health``: the device description, backend, queue length, limits, protocol (checked)."""
    return _health(url, read_token_file(token_file), timeout_s=timeout_s, connect_timeout_s=CONNECT_TIMEOUT_S,
                   retries=retries, backoff_s=backoff_s)


def _health(url: str, token: str | None, **request: Any) -> dict[str, Any]:
    answer = _request(url, "GET", "/v1/health", None, token, **request)
    check_protocol(url, answer.get("protocol"))
    return answer


def check_protocol(url: str, theirs: Any) -> None:
    """RunError unless ``theirs`` (the agent's /v1/health ``protocol``) is this client's :data:`PROTOCOL`."""
    if theirs == PROTOCOL:
        _PROTOCOL_CHECKED.add(url.rstrip("/"))
        return
    if isinstance(theirs, int) and theirs > PROTOCOL:
        fix = "upgrade the client (segfactory on this machine) to the agent's release"
    else:  # older, or an agent from before protocol versions (no field): the agent is behind
        fix = ("upgrade the agent (reinstall segfactory-agent on the device from this release, docs/agent.md) "
               "and restart it")
    shown = "none (an agent older than protocol versions)" if theirs is None else repr(theirs)
    raise RunError(f"device agent at {url} speaks protocol {shown}, this client protocol {PROTOCOL}: {fix}")


def measure_remote(url: str, token_file: str | Path | None, onnx_bytes: bytes,
                   settings: MeasureSettings | Mapping[str, Any] | None = None, *, timeout_s: float = TIMEOUT_S,
                   connect_timeout_s: float = CONNECT_TIMEOUT_S, retries: int = RETRIES,
                   backoff_s: float = BACKOFF_S, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Measure ``onnx_bytes`` on the agent at ``url``; benchmark JSON (latency_source "measured") + sha256 + device.

    ``settings``: a :class:`MeasureSettings` or a mapping with ``input_size`` ("HxW" or (H, W)), ``batch``,
    ``precision``, ``warmup_ms``, ``iterations``, ``duration_s``, ``threads``. ``cache_dir`` keeps answers on
    this side too, keyed by (url, model sha256, settings).
    """
    if not isinstance(onnx_bytes, (bytes, bytearray)):
        raise InputError("measure_remote needs the ONNX model as bytes")
    settings = MeasureSettings.coerce(settings)
    token = read_token_file(token_file)
    sha = hashlib.sha256(onnx_bytes).hexdigest()
    cache_path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([url.rstrip("/"), sha, settings.to_dict()]).encode()).hexdigest()[:24]
        cache_path = Path(cache_dir) / f"{key}.json"
        if cache_path.is_file():
            try:
                return json.loads(cache_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass  # a torn or foreign file: measure again and overwrite it
    if url.rstrip("/") not in _PROTOCOL_CHECKED:
        _health(url, token, timeout_s=min(timeout_s, 60.0), connect_timeout_s=connect_timeout_s, retries=retries,
                backoff_s=backoff_s)
    endpoint = "/v1/measure?" + urllib.parse.urlencode(settings.to_query())
    result = _request(url, "POST", endpoint, bytes(onnx_bytes), token, timeout_s=timeout_s,
                      connect_timeout_s=connect_timeout_s, retries=retries, backoff_s=backoff_s)
    if "median_ms" not in result or result.get("sha256") != sha:
        raise RunError(f"device agent at {url} answered without a measurement of this model")
    if cache_path is not None:
        atomic_write_json(cache_path, result)
    return result
