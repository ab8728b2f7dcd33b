"""The device agent on loopback with the ONNX Runtime backend: auth, limits, validation, queueing, cache."""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("onnxruntime")

from segfactory.benchmarks.agent.client import health, measure_remote
from segfactory.benchmarks.agent.config import AgentConfig, check_config
from segfactory.benchmarks.agent.server import BackgroundAgent
from segfactory.factory.errors import InputError, RunError

from tests.agent_fixtures import conv_model, external_data_model, raw_exchange, status_of

TOKEN = "test-token-0123456789abcdef"
FAST = {"input_size": "32x32", "warmup_ms": 0, "iterations": 5, "duration_s": 0}


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("agent") / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def agent(token_file):
    """One agent on a free loopback port for the tests that do not need their own configuration."""
    config = AgentConfig(host="127.0.0.1", port=0, token=TOKEN, backend="ort", max_body_mb=0.25, queue_limit=32)
    with BackgroundAgent(config) as running:
        yield running


def _ok(agent, token_file, seed: int = 0) -> dict:
    """A valid request: the agent is still serving."""
    result = measure_remote(agent.url, token_file, conv_model(seed), FAST, retries=0)
    assert result["latency_source"] == "measured" and result["median_ms"] > 0
    return result


def _post_head(url: str, length: int, token: str | None = TOKEN, extra: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /v1/measure?input_size=32x32 HTTP/1.1\r\nHost: x\r\n{auth}"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n{extra}\r\n").encode()


def test_measure_answers_benchmark_json_with_sha_and_device(agent, token_file):
    result = _ok(agent, token_file, seed=100)
    for key in ("min_ms", "mean_ms", "median_ms", "p90_ms", "p95_ms", "p99_ms", "std_ms", "iterations", "throughput",
                "backend", "threads", "precision", "batch", "input_shape", "device", "latency_source", "sha256"):
        assert key in result, key
    assert result["backend"] == "ort" and result["input_shape"] == [1, 3, 32, 32]
    assert result["iterations"] >= 5 and result["device_info"]["backend"] == "ort"
    assert result["agent"]["cache"] == "miss"
    info = health(agent.url, token_file)
    assert info["status"] == "ok" and info["backend"] == "ort" and info["queue_length"] == 0
    assert info["device"]["versions"]["onnxruntime"]


def test_no_or_wrong_token_is_401_and_agent_keeps_serving(agent, token_file, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token")
    with pytest.raises(InputError, match="401"):
        measure_remote(agent.url, None, conv_model(1), FAST, retries=0)
    with pytest.raises(InputError, match="401"):
        measure_remote(agent.url, wrong, conv_model(1), FAST, retries=0)
    with pytest.raises(InputError, match="401"):
        health(agent.url, wrong)
    assert status_of(raw_exchange(agent.url, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n"
                                             b"Authorization: Basic " + TOKEN.encode() + b"\r\n\r\n")) == 401
    _ok(agent, token_file, seed=1)


def test_body_over_limit_is_413_without_reading_it(agent, token_file):
    limit = 256 * 1024
    # the header announces too much: refused at once, after only a little of the body was sent
    response = raw_exchange(agent.url, _post_head(agent.url, limit + 1), b"\0" * 1024)
    assert status_of(response) == 413 and b"exceeds" in response
    # Expect: 100-continue (curl's way for large bodies): refused before any body is sent
    response = raw_exchange(agent.url, _post_head(agent.url, 10 * limit, extra="Expect: 100-continue\r\n"))
    assert status_of(response) == 413 and b"HTTP/1.1 100" not in response
    # a chunked upload without a length: refused once it passes the limit
    head = (b"POST /v1/measure?input_size=32x32 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % (64 * 1024) + b"\0" * (64 * 1024) + b"\r\n"
    assert status_of(raw_exchange(agent.url, head, chunk * 5)) == 413
    with pytest.raises(InputError, match="413"):
        measure_remote(agent.url, token_file, b"\0" * (limit + 10), FAST, retries=0)
    _ok(agent, token_file, seed=2)


@pytest.mark.parametrize("body, reason", [
    (b"\x08\x07garbage-not-onnx" * 64, "ONNX"),
    (conv_model(3)[:-40], "ONNX"),
    (b"", "empty"),
    (external_data_model(), "external data"),
])
def test_corrupt_onnx_is_400_with_reason(agent, token_file, body, reason):
    with pytest.raises(InputError, match="400") as err:
        measure_remote(agent.url, token_file, body, FAST, retries=0)
    assert reason in str(err.value) and "\n" not in str(err.value)
    _ok(agent, token_file, seed=3)


def test_bad_settings_are_400(agent, token_file):
    head = (b"POST /v1/measure?input_size=big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nContent-Length: 4\r\n\r\n")
    response = raw_exchange(agent.url, head, b"abcd")
    assert status_of(response) == 400 and b"HxW" in response
    static = conv_model(4, dynamic=False, size=(16, 16))
    with pytest.raises(InputError, match="fixed shape"):
        measure_remote(agent.url, token_file, static, FAST, retries=0)
    assert measure_remote(agent.url, token_file, static, {**FAST, "input_size": None}, retries=0
                          )["input_shape"] == [1, 3, 16, 16]


def test_disconnect_mid_upload_does_not_disturb_the_agent(agent, token_file):
    for _ in range(3):
        raw_exchange(agent.url, _post_head(agent.url, 100_000), conv_model(5)[:200], close_after_send=True)
    raw_exchange(agent.url, _post_head(agent.url, 100), b"", close_after_send=True)
    time.sleep(0.2)
    _ok(agent, token_file, seed=5)
    assert health(agent.url, token_file)["queue_length"] == 0


def test_twenty_concurrent_clients_get_their_own_answers_and_never_overlap(agent, token_file):
    def one(i: int) -> tuple[int, dict]:
        size = 16 + 2 * i
        settings = {**FAST, "input_size": f"{size}x{size}"}
        return i, measure_remote(agent.url, token_file, conv_model(1000 + i, out_channels=2 + i % 5), settings,
                                 retries=0)

    with ThreadPoolExecutor(20) as pool:
        results = dict(pool.map(one, range(20)))
    assert len({r["sha256"] for r in results.values()}) == 20
    for i, r in results.items():
        assert r["input_shape"] == [1, 3, 16 + 2 * i, 16 + 2 * i]
        assert r["agent"]["cache"] == "miss"
    spans = sorted((r["agent"]["measure_start"], r["agent"]["measure_end"]) for r in results.values())
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two measurements overlapped"
    assert not list(agent.agent.workdir.iterdir()), "spooled models were left behind"


def test_repeated_model_is_a_cache_hit(agent, token_file):
    first = _ok(agent, token_file, seed=7)
    t0 = time.perf_counter()
    second = _ok(agent, token_file, seed=7)
    assert second["agent"]["cache"] == "hit" and time.perf_counter() - t0 < 2.0
    assert second["median_ms"] == first["median_ms"] and second["sha256"] == first["sha256"]
    other = measure_remote(agent.url, token_file, conv_model(7), {**FAST, "iterations": 6}, retries=0)
    assert other["agent"]["cache"] == "miss"  # other settings, other entry


def test_disk_cache_survives_a_restart(tmp_path, token_file):
    config = AgentConfig(port=0, token=TOKEN, backend="ort", cache_dir=tmp_path / "cache")
    with BackgroundAgent(config) as running:
        first = measure_remote(running.url, token_file, conv_model(8), FAST, retries=0)
    assert list((tmp_path / "cache").rglob("*.json"))
    with BackgroundAgent(config) as running:
        second = measure_remote(running.url, token_file, conv_model(8), FAST, retries=0)
    assert second["agent"]["cache"] == "hit" and second["median_ms"] == first["median_ms"]


def test_full_queue_is_503_and_timeout_cancels_and_frees_the_worker(token_file):
    config = AgentConfig(port=0, token=TOKEN, backend="ort", queue_limit=1, timeout_s=1.5)
    with BackgroundAgent(config) as running:
        errors: list[Exception] = []

        def slow() -> None:  # 5 s of timing, past the 1.5 s limit
            try:
                measure_remote(running.url, token_file, conv_model(9), {**FAST, "duration_s": 5}, retries=0)
            except Exception as e:  # noqa: BLE001 - checked below
                errors.append(e)

        thread = threading.Thread(target=slow)
        t0 = time.perf_counter()
        thread.start()
        deadline = time.time() + 10
        while health(running.url, token_file)["queue_length"] < 1 and time.time() < deadline:
            time.sleep(0.02)
        with pytest.raises(RunError, match="busy"):
            measure_remote(running.url, token_file, conv_model(10), FAST, retries=0)
        thread.join(timeout=30)
        assert time.perf_counter() - t0 < 4.5, "the time limit did not cancel the measurement"
        assert len(errors) == 1 and isinstance(errors[0], RunError) and "--timeout-s" in str(errors[0])
        result = measure_remote(running.url, token_file, conv_model(11), FAST, retries=0)  # a fresh worker
        assert result["median_ms"] > 0


def test_refuses_to_start_without_a_token():
    with pytest.raises(InputError, match="token"):
        check_config(AgentConfig(port=0, token=None))
    with pytest.raises(InputError, match="loopback"):
        check_config(AgentConfig(host="0.0.0.0", port=0, token=None, insecure_loopback=True))
    check_config(AgentConfig(host="127.0.0.1", port=0, token=None, insecure_loopback=True))


def test_insecure_loopback_serves_without_token():
    config = AgentConfig(port=0, token=None, insecure_loopback=True, backend="ort")
    with BackgroundAgent(config) as running:
        assert measure_remote(running.url, None, conv_model(12), FAST, retries=0)["median_ms"] > 0


def test_cli_refuses_without_token(capsys):
    from segfactory.factory.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["agent", "serve", "--port", "0", "--backend", "ort"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: refusing to start without a token") and err.count("\n") == 1


def test_health_json_is_plain_json(agent, token_file):
    response = raw_exchange(agent.url, b"GET /v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                            + TOKEN.encode() + b"\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    assert json.loads(response.partition(b"\r\n\r\n")[2])["format"] == "segfactory.agent-health/1"


def test_bench_with_device_url_measures_on_the_agent(agent, token_file, tmp_path, capsys):
    from segfactory.factory.cli import main

    model = tmp_path / "conv.onnx"
    model.write_bytes(conv_model(13))
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", str(model), "--input-size", "32x32", "--device-url", agent.url, "--device-token-file",
              str(token_file), "--min-seconds", "0", "--warmup-ms", "0", "--json"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    result = json.loads(out)
    assert result["latency_source"] == "measured" and result["model"] == "conv.onnx"
    assert result["device_info"]["backend"] == "ort" and result["input_shape"] == [1, 3, 32, 32]
