"""The device agent: an HTTP server that measures uploaded ONNX models, one at a time, and caches the results.

``GET /v1/health`` describes the device; ``POST /v1/measure`` takes the ONNX file as the raw body and the
settings as query parameters, validates the model, queues it for the single measuring worker process and
answers the benchmark JSON of design.md with the model's sha256 and the device description. Every request
needs ``Authorization: Bearer TOKEN``. Nothing the client sends is used as a path, a command or code: the
model goes to a file the agent names by its hash. No torch on this import path (the device has none).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from segfactory.benchmarks.agent import limits
from segfactory.benchmarks.agent._http import AgentRunner
from segfactory.benchmarks.agent._http import json_error as _error
from segfactory.benchmarks.agent.backends import (
    describe_device,
    device_state,
    select_backend,
    worker_environment,
)
from segfactory.benchmarks.agent.cache import ResultCache
from segfactory.benchmarks.agent.config import AgentConfig, check_config
from segfactory.benchmarks.agent.onnx_check import OnnxInfo, inspect_onnx, sha256_hex
from segfactory.benchmarks.agent.settings import PROTOCOL, MeasureSettings
from segfactory.factory.errors import InputError, RunError, SegfactoryError

log = logging.getLogger("segfactory.agent")

HEALTH_FORMAT = "segfactory.agent-health/1"
CHUNK = 1 << 16


class MeasureTimeout(RunError):
    pass


class Agent:
    """State of one serving agent: the worker process, the queue, the caches."""

    def __init__(self, config: AgentConfig) -> None:
        check_config(config)
        self.config = config
        self.backend = select_backend(config.backend)
        self.device = describe_device(self.backend, dynamic=False)
        self.lock = asyncio.Lock()  # one measurement at a time; asyncio.Lock wakes waiters in FIFO order
        self.pending = 0  # requests waiting for or holding the worker
        self.measurements = 0
        self.cache = ResultCache(config.cache_dir)
        self.worker: asyncio.subprocess.Process | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="segfactory-agent-"))
        self._token = config.token.encode() if config.token else None

    # ---- safety -------------------------------------------------------------------------------------------
    def authorized(self, request: web.BaseRequest) -> bool:
        if self._token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    def _early_refusal(self, request: web.BaseRequest) -> web.Response | None:
        """401, 413 or 503 decided from the headers alone, before any of the body is read."""
        if not self.authorized(request):
            return _error(401, "missing or wrong token (send 'Authorization: Bearer TOKEN')",
                          **{"WWW-Authenticate": 'Bearer realm="segfactory-agent"'})
        if request.method == "POST":
            length = request.content_length
            if length is not None and length > self.config.max_body_bytes:
                return _error(413, f"body of {length} bytes exceeds the agent's limit of "
                                   f"{self.config.max_body_bytes} bytes (--max-body-mb)")
            if self.pending >= self.config.queue_limit:
                return _error(503, f"queue full ({self.pending} waiting, --queue-limit {self.config.queue_limit})",
                              **{"Retry-After": "2"})
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        refusal = self._early_refusal(request)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except InputError as e:
            return _error(400, str(e))
        except MeasureTimeout as e:
            return _error(504, str(e))
        except SegfactoryError as e:
            return _error(500, str(e))
        except Exception as e:
            log.exception("unexpected error")
            first = (str(e).strip().splitlines() or [""])[0]
            return _error(500, f"{type(e).__name__}: {first}")

    async def expect_handler(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue`` (curl sends it for large bodies): refuse before the body is sent."""
        refusal = self._early_refusal(request)
        if refusal is not None:
            return refusal
        if request.headers.get("Expect", "").lower() != "100-continue":
            return _error(417, f"unknown Expect: {request.headers.get('Expect')}")
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0
        return None

    # ---- endpoints ----------------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        device = {**self.device, **await asyncio.to_thread(device_state)}
        return web.json_response({
            "format": HEALTH_FORMAT, "protocol": PROTOCOL, "status": "ok", "backend": self.backend, "device": device,
            "queue_length": self.pending, "busy": self.lock.locked(), "queue_limit": self.config.queue_limit,
            "max_body_bytes": self.config.max_body_bytes, "timeout_s": self.config.timeout_s,
            "measurements": self.measurements, "cache_entries": len(self.cache),
            "cache_dir": str(self.config.cache_dir) if self.config.cache_dir else None,
            "limits": limits.describe(),
        })

    async def measure(self, request: web.Request) -> web.Response:
        t_arrive = time.monotonic()
        ctype = request.headers.get("Content-Type", "").lower()
        if ctype.startswith(("multipart/", "application/json")):
            return _error(415, "send the ONNX file as the raw body (Content-Type: application/octet-stream; "
                               "curl --data-binary @model.onnx)")
        settings = MeasureSettings.from_query(dict(request.query))
        limits.check_threads(settings.threads)  # before the body is read: a refusal costs nothing
        data = await self._read_body(request)
        if data is None:
            return _error(413, f"body exceeds the agent's limit of {self.config.max_body_bytes} bytes (--max-body-mb)")
        skey = settings.key(self.backend)
        # a model measured before with these settings was valid then: answer without parsing it again
        cached = self.cache.get(await asyncio.to_thread(sha256_hex, data), skey)
        if cached is not None:
            return web.json_response(self._answer(cached, "hit", t_arrive))
        info = await asyncio.to_thread(inspect_onnx, data, settings)
        limits.check_memory(info.input_bytes, info.output_bytes, info.size_bytes, info.input_shape)
        if self.pending >= self.config.queue_limit:
            return _error(503, f"queue full ({self.pending} waiting, --queue-limit {self.config.queue_limit})",
                          **{"Retry-After": "2"})
        self.pending += 1
        try:
            # queued models wait on disk, not in memory (queue limit x body limit could exceed a Jetson's RAM)
            path = self.workdir / f"{info.sha256}-{uuid.uuid4().hex[:12]}.onnx"
            await asyncio.to_thread(path.write_bytes, data)
            del data
            # shielded: a client that goes away never interrupts the worker protocol; the result is still cached
            result, status = await asyncio.shield(asyncio.ensure_future(self._measure_queued(info, path, settings)))
        finally:
            self.pending -= 1
        return web.json_response(self._answer(result, status, t_arrive))

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The body, streamed; None as soon as it passes the limit (the rest is not read)."""
        limit = self.config.max_body_bytes
        buf = bytearray()
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                buf += chunk
                if len(buf) > limit:
                    return None
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as e:
            raise InputError(f"the upload was interrupted ({type(e).__name__})") from None
        except Exception as e:  # noqa: BLE001 - aiohttp's ClientPayloadError/ContentLengthError on a cut upload
            raise InputError(f"the upload was interrupted ({type(e).__name__}: {e})") from None
        return bytes(buf)

    # ---- answers ------------------------------------------------------------------------------------------
    def _answer(self, result: dict[str, Any], cache: str, t_arrive: float) -> dict[str, Any]:
        out = dict(result)
        out["agent"] = dict(out.get("agent", {}), cache=cache, request_s=time.monotonic() - t_arrive)
        return out

    # ---- the worker ---------------------------------------------------------------------------------------
    async def _measure_queued(self, info: OnnxInfo, path: Path, settings: MeasureSettings
                              ) -> tuple[dict[str, Any], str]:
        """Wait for the worker, measure the model spooled at ``path`` (deleted afterwards), cache the result."""
        t_queued = time.monotonic()
        try:
            async with self.lock:
                skey = settings.key(self.backend)
                cached = self.cache.get(info.sha256, skey)  # the same model may have been measured while we waited
                if cached is not None:
                    return cached, "hit"
                wait_s = time.monotonic() - t_queued
                reply = await self._run_job({
                    "path": str(path), "settings": settings.to_dict(), "input_name": info.input_name,
                    "input_shape": list(info.input_shape), "dynamic": info.dynamic,
                    "timeout_s": self.config.timeout_s})
                self.measurements += 1
        finally:
            path.unlink(missing_ok=True)
        if not reply["ok"]:
            log.info("measure %s failed: %s", info.sha256[:12], reply["message"])
            raise (InputError if reply["kind"] == "input" else RunError)(reply["message"])
        result = reply["result"]
        result["model"] = info.sha256[:12]
        result.update({
            "sha256": info.sha256, "model_bytes": info.size_bytes, "settings": settings.to_dict(),
            "device_info": {**self.device, **await asyncio.to_thread(device_state)},
            "agent": {"backend": self.backend, "queue_wait_s": wait_s, "measure_start": reply["start"],
                      "measure_end": reply["end"], "measure_s": reply["end"] - reply["start"]},
        })
        self.cache.put(info.sha256, skey, result)
        log.info("measured %s: median %.3f ms (%s, %.1f s)", info.sha256[:12], result.get("median_ms", float("nan")),
                 self.backend, reply["end"] - reply["start"])
        return result, "miss"

    async def start_worker(self) -> None:
        if self.worker is not None and self.worker.returncode is None:
            return
        self.worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "segfactory.benchmarks.agent.worker", self.backend,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
            env=worker_environment(), start_new_session=True, limit=1 << 24)
        assert self.worker.stdout is not None
        try:
            line = await asyncio.wait_for(self.worker.stdout.readline(), timeout=300)
        except asyncio.TimeoutError:
            await self.kill_worker()
            raise RunError("the measuring process did not start within 300 s") from None
        if not line:
            code = await self.worker.wait()
            self.worker = None
            raise RunError(f"the measuring process exited at start (code {code}); see the agent's log")

    async def kill_worker(self) -> None:
        """End the worker and everything it started (trtexec): it runs in its own process group."""
        worker, self.worker = self.worker, None
        if worker is None or worker.returncode is not None:
            return
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await worker.wait()

    async def _run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        await self.start_worker()
        worker = self.worker
        assert worker is not None and worker.stdin is not None and worker.stdout is not None
        worker.stdin.write((json.dumps(job) + "\n").encode())
        await worker.stdin.drain()
        try:
            line = await asyncio.wait_for(worker.stdout.readline(), timeout=self.config.timeout_s)
        except asyncio.TimeoutError:
            await self.kill_worker()
            raise MeasureTimeout(f"build and measurement took longer than --timeout-s {self.config.timeout_s:g} s; "
                                 "cancelled") from None
        if not line:
            code = await worker.wait()
            self.worker = None
            raise RunError(f"the measuring process died (exit code {code}) while measuring")
        return json.loads(line)

    async def close(self) -> None:
        await self.kill_worker()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        app.router.add_get("/v1/health", self.health)
        app.router.add_post("/v1/measure", self.measure, expect_handler=self.expect_handler)
        return app


async def start(config: AgentConfig) -> tuple[Agent, web.AppRunner, str]:
    """Start serving; returns the agent, its runner and the URL actually bound (port 0 picks a free one)."""
    agent = Agent(config)
    await asyncio.to_thread(__import__, "onnx")  # the validator's import, paid before the first request
    await agent.start_worker()
    runner = AgentRunner(agent.app(), access_log=None, lingering_time=config.lingering_s)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        await agent.close()
        raise RunError(f"cannot listen on {config.host}:{config.port}: {e.strerror or e}") from None
    host, port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    return agent, runner, f"http://{shown}:{port}"


def serve(config: AgentConfig, announce: Callable[[str], None] = print) -> None:
    """Serve until SIGINT/SIGTERM."""
    async def main() -> None:
        agent, runner, url = await start(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        auth = "token required" if config.token else "NO TOKEN (loopback only)"
        announce(f"segfactory agent serving on {url} (backend {agent.backend}, {agent.device['name']}, {auth})")
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await agent.close()

    asyncio.run(main())


class BackgroundAgent:
    """An agent served from a thread of this process (tests, a local search): ``with BackgroundAgent(cfg) as a``."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.url = ""
        self.agent: Agent | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="segfactory-agent", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                self.agent, runner, self.url = await start(self.config)
            except BaseException as e:  # noqa: BLE001 - handed to the starting thread
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()
                await self.agent.close()

        asyncio.run(main())

    def start(self) -> BackgroundAgent:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundAgent:  # noqa: PYI034 - Self needs Python 3.11
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
