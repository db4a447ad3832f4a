"""The streaming relay to llama-server: one pooled transport per loop, bytes passed through unchanged.

A response generator's `finally` closes the upstream response, so a client that disconnects
cancels the generation upstream; the lease is released and usage recorded there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.http import HttpResponse, StreamingHttpResponse

from proxies.accounting import UsageMeter
from proxies.loopback import LoopbackTransport, RunnerBody
from proxies.sse import SSEFrameParser, parse_json_payload, single_frame_payload

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
    # Takes the whole answer once relayed (a Responses answer kept for previous_response_id).
    keep: Callable[[dict[str, Any]], None] | None = None


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


_NOT_PASSED_ON = HOP_HEADERS | {"server"}


def response_headers(upstream: httpx.Response) -> dict[str, str]:
    """The runner's response headers a client gets (from the raw list: httpx's `items()` decodes
    through a property call per header)."""
    passed: dict[str, str] = {}
    for name, value in upstream.headers.raw:
        key = name.decode("latin-1").lower()
        if key not in _NOT_PASSED_ON:
            text = value.decode("latin-1")  # the bytes as they came, whatever they are
            passed[key] = f"{passed[key]}, {text}" if key in passed else text  # as httpx joins them
    return passed


Finalizer = Callable[[RelayContext], None]


async def passthrough(upstream: httpx.Response, ctx: RelayContext, finalize: Finalizer) -> HttpResponse:
    """The upstream response as the client's response, byte for byte (streamed when it streams).
    A whole answer is accounted for once it has been sent (see RelayedResponse)."""
    ctx.status = upstream.status_code
    stream = upstream.stream
    if isinstance(stream, RunnerBody):  # what its head said, read off as it was parsed
        content_type, as_sent = stream.content_type, not stream.encoded
    else:
        content_type, as_sent = upstream.headers.get("content-type", ""), False
    if "text/event-stream" in content_type:
        return stream_response(
            SSERelay(upstream, ctx, finalize),
            upstream.status_code,
            content_type,
            response_headers(upstream),
        )
    try:
        body = await stream.read() if as_sent else await upstream.aread()
    finally:
        await (stream.aclose() if as_sent else upstream.aclose())
    arrived = time.perf_counter()

    def account() -> None:
        if "json" in content_type:
            _observe_json_body(body, ctx, arrived)
        ctx.meter.finish(arrived)
        finalize(ctx)

    response = RelayedResponse(
        body, after_sending=account, status=upstream.status_code, content_type=content_type or None
    )
    for key, value in response_headers(upstream).items():
        if key.lower() != "content-type":
            response[key] = value
    return response


class RelayedResponse(HttpResponse):
    """A whole answer whose accounting (parsing it for token counts, releasing the lease,
    recording usage) runs when the handler closes the response, after its bytes went out:
    the client does not wait for it. Django's handlers always close a response they sent."""

    def __init__(self, content: bytes, *, after_sending: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._after_sending: Callable[[], None] | None = after_sending

    def close(self) -> None:
        after, self._after_sending = self._after_sending, None
        if after is not None:
            try:
                after()
            except Exception:
                log.exception("accounting for a relayed answer failed")
        super().close()


def _observe_json_body(body: bytes, ctx: RelayContext, arrived: float) -> None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return
    if isinstance(parsed, dict):
        ctx.meter.mark_first_token(arrived)
        ctx.meter.observe(parsed)
        if ctx.status >= 400:
            ctx.error = upstream_error_message(parsed) or ctx.error
        elif ctx.keep is not None:
            ctx.keep(parsed)


async def runner_objects(upstream: httpx.Response, ctx: RelayContext) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of a runner's event stream as they arrive, each taken by the usage
    meter, for a face that translates them; an object with an `error` is the last one, its
    message in ctx.error."""
    parser = SSEFrameParser()
    async for raw in upstream.aiter_raw():
        for payload in parser.feed(raw):
            chunk = parse_json_payload(payload)
            if chunk is None:
                continue
            if "error" in chunk:
                ctx.error = upstream_error_message(chunk) or "the runner reported an error"
                yield chunk
                return
            ctx.meter.observe(chunk)
            yield chunk


def upstream_error_message(parsed: Any) -> str:
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or "")
        if isinstance(error, str):
            return error
    return ""


def account_frame(payload: bytes, meter: UsageMeter) -> None:
    """Token accounting of one SSE frame, parsing JSON only for the frames that carry totals;
    the rest carry one token each, which is all that is counted of them."""
    if b'"timings"' in payload or b'"usage"' in payload or b'"finish_reason":"' in payload:
        parsed = parse_json_payload(payload)
        if parsed is not None:
            meter.observe(parsed)
    elif (
        b'"content":"' in payload
        or b'"text":"' in payload
        or b'"tool_calls"' in payload
        or b'"reasoning_content":"' in payload
    ):
        meter.chunks_with_content += 1
        if meter.first_token_at is None:  # checked here too: this runs for every streamed token
            meter.mark_first_token()


def account_event_frame(payload: bytes, meter: UsageMeter) -> None:
    """`account_frame` for the typed events of the Responses API and Anthropic's Messages,
    whose token-bearing frames are the deltas (`response.output_text.delta` and the other
    `response.*.delta` events, Anthropic's `content_block_delta`); the start, stop and done
    events around them repeat or announce text, and count for nothing."""
    if b'"usage"' in payload or b'"timings"' in payload:
        parsed = parse_json_payload(payload)
        if parsed is not None:
            meter.observe(parsed)
    elif b'.delta"' in payload or b'"type":"content_block_delta"' in payload:
        meter.chunks_with_content += 1
        if meter.first_token_at is None:
            meter.mark_first_token()


def _keeping(
    account: Callable[[bytes, UsageMeter], None], keep: Callable[[dict[str, Any]], None]
) -> Callable[[bytes, UsageMeter], None]:
    """`account` that also hands a Responses stream's whole answer (its `response.completed`
    event's `response`) to `keep`."""

    def account_keeping(payload: bytes, meter: UsageMeter) -> None:
        account(payload, meter)
        if b'"response.completed"' in payload:
            parsed = parse_json_payload(payload)
            if parsed is not None and isinstance(parsed.get("response"), dict):
                keep(parsed["response"])

    return account_keeping


# The endpoints whose streams are typed events (`event: ...` lines before each frame's data).
EVENT_STREAM_ENDPOINTS = frozenset({"responses", "messages"})


class SSERelay:
    """A runner's event stream relayed to the client byte for byte, its frames reassembled only
    to count tokens. Either iterated (any ASGI server) or pumped: `pump(write)` hands each
    arrival to `write` straight from the runner connection's receive callback.

    However it ends (done, runner error, client gone), the upstream response is closed (which
    stops the generation) and `finalize` runs once: the lease is released, usage recorded.
    """

    def __init__(self, upstream: httpx.Response, ctx: RelayContext, finalize: Finalizer) -> None:
        self._upstream = upstream
        self._ctx = ctx
        self._finalize = finalize
        self._parser = SSEFrameParser()
        self._used = False
        self._account_frame = account_event_frame if ctx.endpoint in EVENT_STREAM_ENDPOINTS else account_frame
        if ctx.keep is not None:
            self._account_frame = _keeping(self._account_frame, ctx.keep)

    def _account(self, chunk: bytes) -> None:
        meter, account_one = self._ctx.meter, self._account_frame
        for payload in self._parser.feed(chunk):
            account_one(payload, meter)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()  # claimed when iteration starts (Django calls aiter() early)

    async def _iterate(self) -> AsyncIterator[bytes]:
        async with self._consuming():
            async for chunk in self._upstream.aiter_raw():
                yield chunk
                self._account(chunk)

    async def pump(
        self, write: Callable[[bytes], object], write_chunk: Callable[[bytes, int], bool] | None = None
    ) -> None:
        """`write_chunk(chunk, size)`, when given, sends one whole HTTP/1.1 chunk of `size` payload
        bytes to the client as it is (the runner's chunk framing is the client's too), or returns
        False when the response is not chunked, and the payload goes to `write` instead."""
        account, parser, meter, account_one = (
            self._account,
            self._parser,
            self._ctx.meter,
            self._account_frame,
        )

        def relay(chunk: bytes) -> None:
            write(chunk)
            # One whole `data:` line (the usual token) is counted without the frame parser.
            if not parser.pending and (payload := single_frame_payload(chunk)) is not None:
                account_one(payload, meter)
            else:
                account(chunk)

        def relay_chunk(chunk: bytes, start: int) -> None:
            # One whole chunk from the runner, its payload `chunk[start:-2]`: the usual token.
            end = len(chunk) - 2
            if not write_chunk(chunk, end - start):
                write(chunk[start:end])
            if not parser.pending and (payload := single_frame_payload(chunk, start, end)) is not None:
                account_one(payload, meter)
            else:
                account(chunk[start:end])

        async with self._consuming():
            stream = self._upstream.stream
            if isinstance(stream, RunnerBody):
                await stream.pump(relay, relay_chunk if write_chunk is not None else None)
            else:
                async for chunk in self._upstream.aiter_raw():
                    relay(chunk)

    @contextlib.asynccontextmanager
    async def _consuming(self) -> AsyncIterator[None]:
        """Once only; how it ended goes on the record, and it always ends the relay."""
        self._claim()
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            self._ctx.error = "client disconnected"
            raise
        except httpx.HTTPError as exc:
            self._ctx.error = f"upstream stream broke: {exc}"
        finally:
            await self._end()

    async def aclose(self) -> None:
        """Ends a relay nobody started (the response was never sent)."""
        if not self._used:
            self._used = True
            await self._end()

    def _claim(self) -> None:
        if self._used:
            raise RuntimeError("a relayed stream can be consumed once")
        self._used = True

    async def _end(self) -> None:
        await self._upstream.aclose()
        self._ctx.meter.finish()
        self._finalize(self._ctx)


@contextlib.asynccontextmanager
async def translated_stream(
    upstream: httpx.Response, ctx: RelayContext, finish: Finalizer
) -> AsyncIterator[None]:
    """Around a face's generator that translates a runner's stream: however it ends, the
    upstream is closed (which stops the generation) and `finish` runs. A runner stream that
    breaks off ends the block with the reason in ctx.error (what was sent stays sent); a client
    that goes away (the generator closed) is recorded so and goes on out."""
    try:
        yield
    except httpx.HTTPError as exc:
        ctx.error = f"upstream stream broke: {exc}"
    except BaseException:
        ctx.error = ctx.error or "client disconnected"
        raise
    finally:
        await upstream.aclose()
        ctx.meter.finish()
        finish(ctx)


class GeneratedStream:
    """A response body made by an async generator whose `finally` ends the request (closes the
    upstream, releases the lease, records usage).

    A generator that was never started never runs its `finally`, even when closed: a response
    dropped before its first chunk was asked for (its client gone at that moment) would hold
    its runner for good. Closed unstarted, this runs `unsent` instead."""

    def __init__(self, body: AsyncGenerator[bytes, None], unsent: Callable[[], Awaitable[None]]) -> None:
        self._body = body
        self._unsent: Callable[[], Awaitable[None]] | None = unsent

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()  # started when iteration starts (Django calls aiter() early)

    async def _iterate(self) -> AsyncIterator[bytes]:
        self._unsent = None
        async with contextlib.aclosing(self._body) as body:
            async for chunk in body:
                yield chunk

    async def aclose(self) -> None:
        unsent, self._unsent = self._unsent, None
        await self._body.aclose()
        if unsent is not None:
            await unsent()


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
