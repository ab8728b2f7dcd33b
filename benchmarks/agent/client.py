"""Client of the device agent, used by ``search``, ``bench`` and ``profile`` with ``--device-url``.

Requests go through urllib3, whose :class:`~urllib3.util.Retry` retries connection errors and 503 (queue full)
with exponential back-off, honouring ``Retry-After`` (:class:`_Retry` says how this client's schedule differs
from urllib3's). Every failure ends as one line: InputError for what the caller sent (401 token, 400 model or
settings, 413 size), RunError for an unreachable or failing device. The first contact with an agent URL (in
this process) checks that it speaks this client's protocol (``settings.PROTOCOL``, reported in /v1/health);
another version is a RunError saying which side to upgrade.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import urllib3
from segfactory.benchmarks.agent.settings import PROTOCOL, MeasureSettings
from segfactory.factory.errors import InputError, RunError
from segfactory.factory.io import atomic_write_json
from urllib3.exceptions import HTTPError, MaxRetryError, ReadTimeoutError
from urllib3.util.retry import Retry

TIMEOUT_S = 1800.0  # an engine build on an Orin Nano takes minutes, and the request may queue behind others
CONNECT_TIMEOUT_S = 10.0
RETRIES = 5
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
_PROTOCOL_CHECKED: set[str] = set()  # agent URLs that answered this client's protocol (in this process)


def read_token_file(path: str | Path | None) -> str | None:
    """The bearer token in ``path`` (None: send none, for an agent started with --insecure-loopback)."""
    from segfactory.benchmarks.agent.settings import read_token

    return None if path is None else read_token(path, "--device-token-file")


def _root(url: str) -> str:
    """``url`` checked (an http(s)://HOST[:PORT][/PATH] URL), without a trailing slash."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--device-url {url!r} is not an http(s)://HOST:PORT URL")
    try:
        parts.port  # noqa: B018 - parsed on access: a bad port raises here
    except ValueError:
        raise InputError(f"--device-url {url!r} has a bad port") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class _Retry(Retry):
    """urllib3's Retry with this client's schedule, which urllib3 does not offer as settings: the first retry
    already waits ``backoff_factor`` (urllib3 retries at once, but a full queue is still full), and a
    ``Retry-After`` (the agent sends 2 s with its 503) lengthens a wait but never shortens it, capped at
    ``backoff_max``. A read timeout is not retried: the measurement outlived ``timeout_s`` and would again."""

    def get_backoff_time(self) -> float:
        failures = len(self.history)
        return 0.0 if failures == 0 else min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))

    def sleep_for_retry(self, response) -> bool:
        after = self.get_retry_after(response)
        if not after:
            return False
        time.sleep(max(self.get_backoff_time(), min(self.backoff_max, after)))
        return True

    def increment(self, *args: Any, error: Exception | None = None, **kwargs: Any) -> Retry:
        if isinstance(error, ReadTimeoutError):
            raise error
        return super().increment(*args, error=error, **kwargs)


def _request(url: str, method: str, endpoint: str, body: bytes | None, token: str | None, *,
             timeout_s: float, connect_timeout_s: float, retries: int, backoff_s: float) -> dict[str, Any]:
    """One request with up to ``retries`` retries on connection errors and 503, exponential back-off."""
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if body is not None:
        headers["Content-Type"] = "application/octet-stream"
    # POST too (allowed_methods=None): a request refused as busy, or whose connection failed, is sent again;
    # after the last 503 the answer itself comes back (raise_on_status=False), to be reported as busy below
    retry = _Retry(total=retries, redirect=False, allowed_methods=None, status_forcelist={503},
                   backoff_factor=backoff_s, backoff_max=MAX_BACKOFF_S, raise_on_status=False)
    timeout = urllib3.Timeout(connect=connect_timeout_s, read=timeout_s)  # read: the answer comes when measured
    try:
        with urllib3.PoolManager(retries=retry, timeout=timeout) as pool:  # one connection per request
            resp = pool.request(method, _root(url) + endpoint, body=body, headers=headers, redirect=False)
    except ReadTimeoutError:
        raise RunError(f"device agent at {url} gave no answer within {timeout_s:g} s") from None
    except MaxRetryError as e:
        last = f"{type(e.reason).__name__}: {e.reason}".strip().rstrip(":")
        raise RunError(f"device agent at {url} is unreachable after {retries + 1} attempts ({last}); "
                       "is 'segfactory agent serve' running there, and is the URL right?") from None
    except HTTPError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise RunError(f"device agent at {url}: {type(e).__name__}: {first}") from None
    raw = resp.data
    try:
        payload = json.loads(raw.decode("utf-8")) if raw else {}
    except (UnicodeDecodeError, ValueError):
        payload = {"error": raw[:200].decode("utf-8", "replace")}
    message = payload.get("error", f"HTTP {resp.status}") if isinstance(payload, dict) else f"HTTP {resp.status}"
    if resp.status == 503:
        raise RunError(f"device agent at {url} stayed busy after {retries + 1} attempts (busy: {message})")
    if resp.status == 401:
        raise InputError(f"device agent at {url} refused the token (401): check --device-token-file")
    if resp.status in (400, 404, 411, 413, 415, 417):
        raise InputError(f"device agent at {url}: {message} ({resp.status})")
    if resp.status != 200 or not isinstance(payload, dict):
        raise RunError(f"device agent at {url}: {message} ({resp.status})")
    return payload


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
