"""The agent client: retries with back-off on 503 and connection errors, a one-line message when unreachable."""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from segfactory.benchmarks.agent import client
from segfactory.benchmarks.agent.client import health, measure_remote, read_token_file
from segfactory.benchmarks.agent.settings import PROTOCOL, MeasureSettings
from segfactory.factory.errors import InputError, RunError

BODY = b"not really onnx; the fake agent only hashes it"


class _FakeAgent(BaseHTTPRequestHandler):
    """Answers 503 ``busy`` times, then a benchmark JSON of the uploaded bytes; /v1/health with ``protocol``."""

    busy = 2
    protocol: ClassVar[int | None] = PROTOCOL  # None: an agent from before protocol versions
    calls: ClassVar[list[tuple[float, str, str]]] = []
    health_calls: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).health_calls.append(self.path)
        answer = {"status": "ok"} if self.protocol is None else {"status": "ok", "protocol": self.protocol}
        self._send(200, answer)

    def do_POST(self) -> None:
        import hashlib

        data = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append((time.monotonic(), self.path, self.headers.get("Authorization", "")))
        if len(type(self).calls) <= type(self).busy:
            self._send(503, {"error": "queue full"}, {"Retry-After": "0"})
        else:
            self._send(200, {"median_ms": 1.5, "latency_source": "measured",
                             "sha256": hashlib.sha256(data).hexdigest()})

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def fake_agent(monkeypatch):
    monkeypatch.setattr(client, "_PROTOCOL_CHECKED", set())  # a port may be reused by another test's agent
    monkeypatch.setattr(_FakeAgent, "protocol", PROTOCOL)
    _FakeAgent.calls = []
    _FakeAgent.health_calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeAgent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_retries_503_with_growing_backoff(fake_agent, tmp_path):
    token = tmp_path / "token"
    token.write_text("abc123\n")
    result = measure_remote(fake_agent, token, BODY, {"input_size": (64, 48), "precision": "fp16"},
                            retries=3, backoff_s=0.1)
    assert result["median_ms"] == 1.5
    times = [t for t, _, _ in _FakeAgent.calls]
    assert len(times) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.18 and gaps[1] > gaps[0]  # 0.1 s, then 0.2 s
    _, path, auth = _FakeAgent.calls[0]
    assert auth == "Bearer abc123" and "input_size=64x48" in path and "precision=fp16" in path


def test_gives_up_on_a_busy_agent_with_one_line(fake_agent):
    _FakeAgent.busy = 10
    try:
        with pytest.raises(RunError, match="stayed busy after 2 attempts") as err:
            measure_remote(fake_agent, None, BODY, None, retries=1, backoff_s=0.01)
    finally:
        _FakeAgent.busy = 2
    assert "\n" not in str(err.value)


def test_client_side_cache(fake_agent, tmp_path):
    first = measure_remote(fake_agent, None, BODY, {"input_size": "8x8"}, retries=3, backoff_s=0.01,
                           cache_dir=tmp_path)
    calls = len(_FakeAgent.calls)
    again = measure_remote(fake_agent, None, BODY, {"input_size": "8x8"}, retries=3, backoff_s=0.01,
                           cache_dir=tmp_path)
    assert again == first and len(_FakeAgent.calls) == calls


def test_unreachable_agent_is_a_clear_one_line_error():
    url = f"http://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(RunError) as err:
        measure_remote(url, None, BODY, None, retries=2, backoff_s=0.05)
    message = str(err.value)
    assert "unreachable after 3 attempts" in message and url in message and "agent serve" in message
    assert "\n" not in message and time.perf_counter() - t0 >= 0.05 + 0.1


@pytest.mark.parametrize("url", ["127.0.0.1:8765", "ftp://host/", "http://host:notaport/"])
def test_bad_url_is_input_error(url):
    with pytest.raises(InputError, match="device-url"):
        measure_remote(url, None, BODY, None, retries=0)


def test_token_file_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_token_file(tmp_path / "missing")
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(InputError, match="one token"):
        read_token_file(tmp_path / "empty")
    assert read_token_file(None) is None


def test_settings_round_trip_and_validation():
    s = MeasureSettings.coerce({"input_size": "360x480", "batch": 2, "precision": "fp32", "iterations": 50})
    assert MeasureSettings.from_query(s.to_query()) == s and s.input_shape == (2, 3, 360, 480)
    assert s.key("ort") != s.key("trtexec") and s.key("ort") == MeasureSettings.coerce(s.to_dict()).key("ort")
    for bad in ({"precision": "fp8"}, {"batch": "0"}, {"iterations": "x"}, {"warmup_ms": "nan"},
                {"duration_s": "1e9"}, {"input_size": "360"}, {"color": "red"}):
        with pytest.raises(InputError):
            MeasureSettings.from_query(bad)


def test_protocol_is_checked_once_per_agent_url(fake_agent, monkeypatch):
    monkeypatch.setattr(_FakeAgent, "busy", 0)
    for _ in range(3):
        measure_remote(fake_agent, None, BODY, {"input_size": "8x8"}, retries=0)
    assert _FakeAgent.health_calls == ["/v1/health"] and len(_FakeAgent.calls) == 3


@pytest.mark.parametrize("theirs, fix", [(PROTOCOL + 1, "upgrade the client"), (None, "upgrade the agent"),
                                         (PROTOCOL - 1, "upgrade the agent")])
def test_another_protocol_is_a_one_line_run_error(fake_agent, theirs, fix):
    _FakeAgent.protocol = theirs
    with pytest.raises(RunError) as err:
        measure_remote(fake_agent, None, BODY, {"input_size": "8x8"}, retries=0)
    message = str(err.value)
    assert f"this client protocol {PROTOCOL}" in message and fix in message and "\n" not in message
    assert (f"speaks protocol {theirs}" if theirs is not None else "speaks protocol none") in message
    assert _FakeAgent.calls == [], "measured on an agent of another protocol"
    with pytest.raises(RunError, match=fix):
        health(fake_agent, None, retries=0)
    with pytest.raises(RunError, match=fix):  # a failed check is not cached as a pass
        measure_remote(fake_agent, None, BODY, {"input_size": "8x8"}, retries=0)
