"""The streaming relay to llama-server: one pooled transport per loop, bytes passed through unchanged.

A response generator's `finally` closes the upstream response, so a client that disconnects
cancels the generation upstream; the lease is released and usage recorded there too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.http import HttpResponse, StreamingHttpResponse

from proxies.accounting import UsageMeter
from proxies.loopback import LoopbackTransport
from proxies.sse import SSEFrameParser, parse_json_payload

log = logging.getLogger(__name__)

_transports: dict[int, LoopbackTransport] = {}

# Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus ones we recompute.
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
        "authorization",
        "x-api-key",
        "cookie",
    }
)
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def loopback_transport() -> LoopbackTransport:
    loop_id = id(asyncio.get_running_loop())
    transport = _transports.get(loop_id)
    if transport is None:
        transport = _transports[loop_id] = LoopbackTransport()
    return transport


@dataclass
class RelayContext:
    """What the usage record of one request needs, filled in as the request goes."""

    face: str
    endpoint: str
    model: str = ""
    client_address: str = ""
    api_key_id: int | None = None
    meter: UsageMeter = field(default_factory=UsageMeter)
    status: int = 0
    error: str = ""
    stream: bool = False
    audio_seconds: float | None = None


def forward_headers(headers: dict[str, str] | Any) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_HEADERS}


async def open_upstream(
    base_url: str,
    method: str,
    path: str,
    *,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """Send to a runner and return the response with its body still streaming.

    Goes through the lean loopback transport (see proxies/loopback.py), which also retries once
    when a reused keep-alive connection was closed before the runner answered.
    """
    host, port, netloc = _origin(base_url)
    raw = [(b"host", netloc)]
    if headers:
        raw.extend(
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
            if name.lower() not in _SET_HERE
        )
    if content:
        raw.append((b"content-length", str(len(content)).encode()))
    elif method in ("POST", "PUT", "PATCH"):
        raw.append((b"content-length", b"0"))
    return await loopback_transport().send_raw(host, port, method.encode(), path.encode(), raw, content)


# Framing and routing headers the relay sets itself (a client's own would be wrong for the runner).
_SET_HERE = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_origins: dict[str, tuple[str, int, bytes]] = {}


def _origin(base_url: str) -> tuple[str, int, bytes]:
    """`http://127.0.0.1:4321` → ("127.0.0.1", 4321, b"127.0.0.1:4321"), parsed once per runner."""
    found = _origins.get(base_url)
    if found is None:
        url = httpx.URL(base_url)
        port = url.port or 80
        netloc = url.netloc
        found = _origins[base_url] = (url.host, port, netloc)
        if len(_origins) > 1024:  # runners come and go on new ports: keep the cache small
            _origins.clear()
            _origins[base_url] = found
    return found


def response_headers(upstream: httpx.Response) -> dict[str, str]:
    return {
        k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS and k.lower() != "server"
    }


Finalizer = Callable[[RelayContext], None]


async def passthrough(upstream: httpx.Response, ctx: RelayContext, finalize: Finalizer) -> HttpResponse:
    """The upstream response as the client's response, byte for byte (streamed when it streams)."""
    ctx.status = upstream.status_code
    content_type = upstream.headers.get("content-type", "")
    if "text/event-stream" in content_type:
        return stream_response(
            _relay_sse(upstream, ctx, finalize),
            upstream.status_code,
            content_type,
            response_headers(upstream),
        )
    try:
        body = await upstream.aread()
    finally:
        await upstream.aclose()
    if "json" in content_type:
        _observe_json_body(body, ctx)
    ctx.meter.finish()
    finalize(ctx)
    response = HttpResponse(body, status=upstream.status_code, content_type=content_type or None)
    for key, value in response_headers(upstream).items():
        if key.lower() != "content-type":
            response[key] = value
    return response


def _observe_json_body(body: bytes, ctx: RelayContext) -> None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return
    if isinstance(parsed, dict):
        ctx.meter.mark_first_token()
        ctx.meter.observe(parsed)
        if ctx.status >= 400:
            ctx.error = upstream_error_message(parsed) or ctx.error


def upstream_error_message(parsed: Any) -> str:
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or "")
        if isinstance(error, str):
            return error
    return ""


# Only these frames need parsing: the rest carry one token each, which is all we count.
_ACCOUNTING_MARKERS = (b'"timings"', b'"usage"', b'"finish_reason":"')
_CONTENT_MARKERS = (b'"content":"', b'"text":"', b'"tool_calls"', b'"reasoning_content":"')


def account_frame(payload: bytes, meter: UsageMeter) -> None:
    """Token accounting of one SSE frame, parsing JSON only for the frames that carry totals."""
    if any(marker in payload for marker in _ACCOUNTING_MARKERS):
        parsed = parse_json_payload(payload)
        if parsed is not None:
            meter.observe(parsed)
    elif any(marker in payload for marker in _CONTENT_MARKERS):
        meter.chunks_with_content += 1
        meter.mark_first_token()


async def _relay_sse(
    upstream: httpx.Response, ctx: RelayContext, finalize: Finalizer
) -> AsyncIterator[bytes]:
    parser = SSEFrameParser()
    meter = ctx.meter
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
            for payload in parser.feed(chunk):
                account_frame(payload, meter)
    except (asyncio.CancelledError, GeneratorExit):
        ctx.error = "client disconnected"
        raise
    except httpx.HTTPError as exc:
        ctx.error = f"upstream stream broke: {exc}"
    finally:
        await upstream.aclose()
        ctx.meter.finish()
        finalize(ctx)


def stream_response(
    iterator: AsyncIterator[bytes], status: int, content_type: str, headers: dict[str, str] | None = None
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(iterator, status=status, content_type=content_type)
    # The API faces' handler sends this iterator's bytes straight to the client (see asgi.py).
    response.relay_stream = iterator
    for key, value in (headers or {}).items():
        if key.lower() != "content-type":
            response[key] = value
    for key, value in STREAM_HEADERS.items():
        response[key] = value
    return response
