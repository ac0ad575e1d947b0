"""``/metrics``, ``/healthz`` and ``/readyz`` over HTTP, served in the node's event loop.

A deliberately small HTTP/1.0 server on anyio (so it runs under asyncio and trio alike):
GET only, one request per connection, the request head bounded in size and time. It shares
the event loop with the engine, so ``/healthz`` answering *is* the proof of liveness: a loop
blocked by a processor that never awaits cannot answer it.

- ``/metrics``: the Prometheus text format of the given registry;
- ``/healthz``: 200 ``ok`` while the event loop answers;
- ``/readyz``: 200 ``ready``, or 503 with the reason (store unreachable, node not started).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import anyio
import anyio.abc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from resilient_task.service.health import Readiness

__all__ = ["DEFAULT_HOST", "serve_metrics"]

log = logging.getLogger("resilient_task.metrics")

DEFAULT_HOST = "127.0.0.1"
"""Where the endpoints listen unless told otherwise: this machine only."""

_MAX_HEAD = 8192
_READ_TIMEOUT = 5.0


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _read_head(stream: anyio.abc.ByteStream) -> bytes | None:
    data = b""
    with anyio.move_on_after(_READ_TIMEOUT):
        while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < _MAX_HEAD:
            try:
                chunk = await stream.receive(4096)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                break
            data += chunk
        return data
    return None


def route(
    request_line: str, registry: CollectorRegistry, readiness: Callable[[], Readiness]
) -> bytes:
    """The full HTTP response to ``request_line`` (e.g. ``GET /metrics HTTP/1.1``)."""
    parts = request_line.split()
    if len(parts) < 2:
        return _response("400 Bad Request", b"bad request\n")
    method, path = parts[0], parts[1].split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"GET only\n")
    if path == "/metrics":
        return _response("200 OK", generate_latest(registry), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        return _response("200 OK", b"ok\n")
    if path == "/readyz":
        state = readiness()
        if state.ready:
            return _response("200 OK", b"ready\n")
        reason = state.reason.encode("utf-8", "replace") + b"\n"
        return _response("503 Service Unavailable", b"not ready: " + reason)
    return _response("404 Not Found", b"not found: try /metrics, /healthz or /readyz\n")


async def serve_metrics(
    *,
    registry: CollectorRegistry,
    readiness: Callable[[], Readiness],
    port: int,
    host: str = DEFAULT_HOST,
    task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the endpoints on ``host:port`` until cancelled.

    Use as ``port = await task_group.start(partial(serve_metrics, ...))``: the bound port
    (useful with ``port=0``) is reported once listening.
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    bound = listener.extra(anyio.abc.SocketAttribute.local_port)
    log.info("metrics and health endpoints on http://%s:%d/", host, bound)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            head = await _read_head(stream)
            if not head:
                return
            line = head.split(b"\n", 1)[0].decode("latin-1").strip()
            try:
                response = route(line, registry, readiness)
            except Exception:
                log.exception("metrics endpoint failed")
                response = _response("500 Internal Server Error", b"error\n")
            if line.startswith("HEAD "):
                response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(response)

    async with listener:
        task_status.started(bound)
        await listener.serve(handle)
