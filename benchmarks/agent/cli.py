"""``segfactory agent serve``: run the device agent. Imports no torch (the device has none)."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from segfactory.benchmarks.agent.backends import AGENT_BACKENDS, AUTO, MEASURING_BACKENDS
from segfactory.benchmarks.agent.limits import ACTIVATION_FACTOR, MEMORY_FRACTION
from segfactory.benchmarks.agent.settings import LIMITS, MAX_SIDE
from segfactory.factory.commands.flags import option
from segfactory.factory.commands.options import version
from segfactory.factory.commands.types import POSITIVE

SERVE_HELP = f"""Serve GET /v1/health and POST /v1/measure until interrupted.

\b
Each request is bounded (400 names the bound):
  threads     at most this device's CPU cores
  memory      an estimate (input bytes x {1 + ACTIVATION_FACTOR} + outputs + 2 x model, erring high)
              at most {MEMORY_FRACTION:g} x this device's total memory (MemTotal)
  batch       {LIMITS["batch"][0]}..{LIMITS["batch"][1]}; input_size sides at most {MAX_SIDE}
  duration_s  at most {LIMITS["duration_s"][1]:g}, and the whole build plus measurement at most --timeout-s
"""


@click.group("agent")
@version
def agent() -> None:
    """Serve latency measurements of uploaded ONNX models on this device (a Jetson, a GPU or CPU host)."""


@agent.command("serve", help=SERVE_HELP)
@option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface; a token is then required).")
@option("--port", default=8765, show_default=True, type=int, help="TCP port (0: any free port).")
@option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the bearer token clients must send (chmod 600).")
@option("--backend", type=click.Choice(AGENT_BACKENDS), default=AUTO, show_default=True,
              help=f"{AUTO}: the first that runs here of " + ", ".join(f"{name} ({what})" for name, what in
                                                                        MEASURING_BACKENDS.items()) + ".")
@option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep results here too (by model sha256 and settings), across restarts.")
@option("--queue-limit", default=32, show_default=True, type=int,
              help="Requests that may wait for the device; more get 503.")
@option("--insecure-loopback", is_flag=True, help="Allow serving without a token, on a loopback address only.")
@option("--max-body-mb", default=64.0, show_default=True, type=POSITIVE, help="Largest ONNX upload (MiB); 413 above.")
@option("--timeout-s", default=900.0, show_default=True, type=POSITIVE,
              help="Time limit of one build plus measurement; the worker is killed past it.")
@version
def serve(host: str, port: int, token_file: Path | None, backend: str, cache_dir: Path | None, queue_limit: int,
          insecure_loopback: bool, max_body_mb: float, timeout_s: float) -> None:
    from segfactory.benchmarks.agent.config import AgentConfig
    from segfactory.benchmarks.agent.server import serve as serve_agent
    from segfactory.benchmarks.agent.settings import read_token

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = AgentConfig(host=host, port=port, token=read_token(token_file) if token_file else None,
                         backend=backend, cache_dir=cache_dir, queue_limit=queue_limit,
                         insecure_loopback=insecure_loopback, max_body_mb=max_body_mb, timeout_s=timeout_s)
    serve_agent(config, announce=lambda line: click.echo(line))
