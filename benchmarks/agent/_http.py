"""aiohttp plumbing of the agent: JSON error answers, and one line instead of a traceback for a request that
aiohttp cannot parse (a negative Content-Length, a bad request line, an oversized header).

aiohttp answers such a request itself, before any middleware runs, with a multi-line text body, and logs the
parser's exception with its traceback: anyone who can reach the port could fill the device's log. The agent's
runner makes each connection's protocol handler answer them as every other refusal (JSON, one line) and log
one line.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("segfactory.agent")


def json_error(status: int, message: str, **headers: str) -> web.Response:
    """The agent's error answer: ``{"error": one line, "status": code}``."""
    return web.json_response({"error": message, "status": status}, status=status, headers=headers or None)


def first_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0].rstrip(":") if lines else ""


class _OneLineErrors(RequestHandler):
    """aiohttp's per-connection handler, answering unparseable requests with one JSON line."""

    __slots__ = ()  # the same layout as RequestHandler, so that a handler's class can be switched to this one

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reason = first_line(exc.message or message or "") or type(exc).__name__
        log.warning("refused a malformed HTTP request from %s: %s", request.remote, reason)
        response = json_error(status, f"malformed HTTP request: {reason}")
        response.force_close()
        return response


class AgentRunner(web.AppRunner):
    """An AppRunner whose connections use :class:`_OneLineErrors` (aiohttp has no public hook for the class)."""

    @property
    def server(self) -> Any:
        server = super().server
        if server is None:
            return None

        def protocol() -> RequestHandler:
            handler = server()
            handler.__class__ = _OneLineErrors
            return handler

        return protocol
