"""SSERelay: however a relayed stream is consumed or ends, bytes pass unchanged, tokens are
counted, and the runner's lease is released exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from llamaproxy.daphne_tuning import abort, body_writer
from proxies.loopback import RunnerBody
from proxies.relay import RelayContext, SSERelay

FRAMES = [
    b'data: {"choices":[{"text":"a","finish_reason":null}]}\n\n',
    b'data: {"choices":[{"text":"b","finish_reason":null}]}\n\n',
    b'data: {"choices":[{"text":"","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
    b"data: [DONE]\n\n",
]


class Upstream(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], fail: bool = False, hang: bool = False) -> None:
        self.chunks, self.fail, self.hang, self.closed = chunks, fail, hang, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail:
            raise httpx.RemoteProtocolError("cut")

    async def aclose(self) -> None:
        self.closed += 1


def relay(upstream: Upstream) -> tuple[SSERelay, RelayContext, list[RelayContext]]:
    ctx = RelayContext(face="api", endpoint="completions")
    finished: list[RelayContext] = []
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=upstream)
    return SSERelay(response, ctx, finished.append), ctx, finished


# Frames split anywhere: the relay passes the bytes on as they come and reassembles to count.
SPLIT = [b"".join(FRAMES)[i : i + 7] for i in range(0, len(b"".join(FRAMES)), 7)]


@pytest.mark.parametrize("chunks", [FRAMES, SPLIT], ids=["frame-per-chunk", "split"])
async def test_pumped_and_iterated_relays_pass_bytes_on_and_count_the_same(chunks: list[bytes]) -> None:
    pumped, pumped_ctx, pumped_done = relay(Upstream(chunks))
    written: list[bytes] = []
    await pumped.pump(written.append)

    iterated, iterated_ctx, iterated_done = relay(Upstream(chunks))
    received = [chunk async for chunk in iterated]

    assert written == received == chunks
    for ctx, done in ((pumped_ctx, pumped_done), (iterated_ctx, iterated_done)):
        assert done == [ctx] and ctx.error == ""
        assert (ctx.meter.prompt_tokens, ctx.meter.completion_tokens) == (3, 2)
        assert ctx.meter.finish_reason == "length" and ctx.meter.first_token_at is not None


class PumpedRunnerBody(RunnerBody):
    """A runner's chunked body as its pump hands it on: every arrival one whole chunk."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads, self.closed = payloads, 0

    async def pump(self, on_data, on_chunk=None) -> None:
        for payload in self.payloads:
            chunk = b"%x\r\n%b\r\n" % (len(payload), payload)
            if on_chunk is None:
                on_data(payload)
            else:
                on_chunk(chunk, chunk.index(b"\r\n") + 2)

    async def aclose(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("chunks", [FRAMES, SPLIT], ids=["frame-per-chunk", "split"])
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked-client", "other-client"])
async def test_whole_runner_chunks_go_on_as_they_are_to_a_chunked_client(
    chunks: list[bytes], chunked: bool
) -> None:
    body = PumpedRunnerBody(chunks)
    ctx = RelayContext(face="api", endpoint="completions")
    done: list[RelayContext] = []
    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=body)
    framed: list[tuple[bytes, int]] = []
    written: list[bytes] = []

    def write_chunk(chunk: bytes, size: int) -> bool:
        if chunked:
            framed.append((chunk, size))
        return chunked

    await SSERelay(response, ctx, done.append).pump(written.append, write_chunk)

    expected = [(b"%x\r\n%b\r\n" % (len(c), c), len(c)) for c in chunks]
    assert (framed, written) == ((expected, []) if chunked else ([], chunks))
    assert done == [ctx] and ctx.error == "" and body.closed
    assert (ctx.meter.prompt_tokens, ctx.meter.completion_tokens) == (3, 2)
    assert ctx.meter.finish_reason == "length" and ctx.meter.first_token_at is not None


async def test_a_broken_upstream_is_recorded_and_still_finalized_once() -> None:
    upstream = Upstream(FRAMES[:1], fail=True)
    stream, ctx, done = relay(upstream)
    await stream.pump(lambda data: None)
    assert done == [ctx] and "upstream stream broke" in ctx.error and upstream.closed


async def test_a_cancelled_pump_is_a_client_disconnect_and_closes_the_upstream() -> None:
    upstream = Upstream(FRAMES[:1], hang=True)
    stream, ctx, done = relay(upstream)
    task = asyncio.create_task(stream.pump(lambda data: None))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == [ctx] and ctx.error == "client disconnected" and upstream.closed


async def test_a_relay_never_started_is_released_by_aclose_and_consumed_only_once() -> None:
    upstream = Upstream(FRAMES)
    stream, ctx, done = relay(upstream)
    aiter(stream)  # Django takes an iterator up front; that alone starts nothing
    await stream.aclose()
    assert done == [ctx] and upstream.closed == 1
    await stream.aclose()
    assert done == [ctx]
    with pytest.raises(RuntimeError):
        await stream.pump(lambda data: None)


async def test_other_servers_sends_get_no_direct_writer() -> None:
    async def send(message: dict) -> None: ...

    assert body_writer(send) is None and abort(send) is False


async def test_an_iterated_relay_closed_early_is_a_client_disconnect_and_closes_the_upstream() -> None:
    upstream = Upstream(FRAMES)
    stream, ctx, done = relay(upstream)
    iterator = aiter(stream)
    assert await anext(iterator) == FRAMES[0]
    await iterator.aclose()
    assert done == [ctx] and ctx.error == "client disconnected" and upstream.closed
