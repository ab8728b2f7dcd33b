"""Requests that must not hurt the agent (issue 15): a malformed HTTP request, too many threads, a shape too large
for the device's memory, a corrupt model; and the protocol version against a real agent."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("onnxruntime")

from segfactory.benchmarks.agent import client, limits
from segfactory.benchmarks.agent.client import health, measure_remote
from segfactory.benchmarks.agent.config import AgentConfig
from segfactory.benchmarks.agent.server import BackgroundAgent
from segfactory.benchmarks.agent.settings import PROTOCOL, MeasureSettings
from segfactory.factory.errors import InputError, RunError

from tests.agent_fixtures import conv_model, raw_exchange, status_of

FAST = {"input_size": "32x32", "warmup_ms": 0, "iterations": 5, "duration_s": 0}


@pytest.fixture(scope="module")
def agent():
    with BackgroundAgent(AgentConfig(port=0, token=None, insecure_loopback=True, backend="ort")) as running:
        yield running


def _bad_pads_model() -> bytes:
    """Parses and passes the plain ONNX checker, but its Conv contradicts itself (ONNX Runtime cannot load it)."""
    import onnx

    model = onnx.load_model_from_string(conv_model(21))
    del model.graph.node[0].attribute[0].ints[-1]  # pads of length 3 for a 2-D conv
    return model.SerializeToString()


def test_negative_content_length_is_one_line_400_and_one_log_line(agent, caplog):
    head = b"POST /v1/measure?input_size=32x32 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"
    with caplog.at_level(logging.DEBUG):
        response = raw_exchange(agent.url, head, b"abcd")
        time.sleep(0.2)  # the log record is written on the agent's thread
    assert status_of(response) == 400
    body = response.partition(b"\r\n\r\n")[2]
    answer = json.loads(body)
    assert "Content-Length" in answer["error"] and b"\n" not in body
    records = [r for r in caplog.records if r.name.startswith(("aiohttp", "segfactory"))]
    assert len(records) == 1 and records[0].exc_info is None and "\n" not in records[0].getMessage()
    assert measure_remote(agent.url, None, conv_model(20), FAST, retries=0)["median_ms"] > 0  # still serving


def test_threads_over_the_cores_are_refused_before_the_worker(agent):
    cores = os.cpu_count()
    with pytest.raises(InputError, match=rf"threads={cores + 1} exceeds this device's {cores} CPU cores"):
        measure_remote(agent.url, None, conv_model(22), {**FAST, "threads": cores + 1}, retries=0)
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=f"threads <= {cores}"):
        measure_remote(agent.url, None, conv_model(22), {**FAST, "threads": 1024}, retries=0)
    assert time.perf_counter() - t0 < 5
    assert health(agent.url, None)["limits"]["max_threads"] == cores


def test_a_shape_over_the_memory_bound_is_refused(agent, monkeypatch):
    # a small host: 64 MiB, so the bound is 32 MiB; 64 x 3 x 32 x 32 float inputs (0.75 MiB) x 65 exceed it
    monkeypatch.setattr(limits, "total_memory_bytes", lambda: 64 << 20)
    with pytest.raises(InputError, match=r"needs about \d+ MiB .* over this device's limit of 32 MiB") as err:
        measure_remote(agent.url, None, conv_model(23), {**FAST, "batch": 64}, retries=0)
    assert "64x3x32x32" in str(err.value) and "\n" not in str(err.value)
    assert measure_remote(agent.url, None, conv_model(23), FAST, retries=0)["median_ms"] > 0  # batch 1 fits
    assert health(agent.url, None)["limits"]["memory_limit_bytes"] == 32 << 20


def test_memory_bound_reads_this_host():
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    assert limits.total_memory_bytes() == total_kb * 1024
    assert limits.memory_estimate(1000, 300, 10) == 1000 * (1 + limits.ACTIVATION_FACTOR) + 300 + 20
    with pytest.raises(InputError, match="side over 16384"):
        MeasureSettings.coerce({"input_size": "16385x16"})


@pytest.mark.parametrize("body", [b"\x08\x07garbage-not-onnx" * 64, _bad_pads_model()], ids=["garbage", "bad-pads"])
def test_corrupt_onnx_gives_exit_code_2_through_the_agent(agent, tmp_path, capsys, body):
    from segfactory.factory.cli import main

    model = tmp_path / "corrupt.onnx"
    model.write_bytes(body)
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(model), "--input-size", "32x32", "--device-url", agent.url, "--min-seconds", "0",
              "--warmup-ms", "0", "--json"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "ONNX" in err and "(400)" in err and err.count("\n") == 1


def test_real_agent_reports_its_protocol_and_the_client_refuses_another(agent, monkeypatch):
    assert health(agent.url, None)["protocol"] == PROTOCOL
    monkeypatch.setattr(client, "_PROTOCOL_CHECKED", set())
    monkeypatch.setattr(client, "PROTOCOL", PROTOCOL + 1)  # a newer client than this agent
    with pytest.raises(RunError, match=rf"speaks protocol {PROTOCOL}, this client protocol {PROTOCOL + 1}: "
                                       "upgrade the agent"):
        measure_remote(agent.url, None, conv_model(24), FAST, retries=0)
