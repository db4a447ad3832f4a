"""SSERelay: however a relayed stream is consumed or ends, bytes pass unchanged, tokens are
counted, and the runner's lease is released exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from llamaproxy.daphne_tuning import abort, body_writer
from proxies.loopback import RunnerBody
from proxies.relay import RelayContext, SSERelay, translated_stream

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


def relay(
    upstream: Upstream, endpoint: str = "completions"
) -> tuple[SSERelay, RelayContext, list[RelayContext]]:
    ctx = RelayContext(face="api", endpoint=endpoint)
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


def event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


# As llama-server streams the Responses API and Anthropic's Messages (typed events, `event:`
# lines): the token-bearing frames are the deltas; the others announce or repeat text.
RESPONSES = [
    event("response.created", '{"type":"response.created","response":{"id":"r","status":"in_progress"}}'),
    event("response.content_part.added", '{"type":"response.content_part.added","part":{"text":""}}'),
    event("response.output_text.delta", '{"type":"response.output_text.delta","delta":"J"}'),
    event("response.output_text.delta", '{"type":"response.output_text.delta","delta":" can"}'),
    event("response.output_text.done", '{"type":"response.output_text.done","text":"J can"}'),
]
RESPONSES_END = event(
    "response.completed",
    '{"type":"response.completed","response":{"output":[{"content":[{"text":"J can"}]}],'
    '"usage":{"input_tokens":19,"output_tokens":2,"input_tokens_details":{"cached_tokens":18}}},'
    '"timings":{"cache_n":18,"prompt_n":1,"predicted_n":2,"predicted_per_second":4444.4}}',
)
MESSAGES = [
    event(
        "message_start",
        '{"type":"message_start","message":{"content":[],'
        '"usage":{"cache_read_input_tokens":18,"input_tokens":1,"output_tokens":0}}}',
    ),
    event("content_block_start", '{"type":"content_block_start","content_block":{"type":"text","text":""}}'),
    event("content_block_delta", '{"type":"content_block_delta","delta":{"type":"text_delta","text":" M"}}'),
    event("content_block_delta", '{"type":"content_block_delta","delta":{"type":"text_delta","text":"&"}}'),
    event("content_block_stop", '{"type":"content_block_stop","index":0}'),
]
MESSAGES_END = event(
    "message_delta",
    '{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":2}}',
) + event("message_stop", '{"type":"message_stop"}')


@pytest.mark.parametrize(
    ("endpoint", "frames", "end", "totals"),
    [("responses", RESPONSES, RESPONSES_END, (19, 18, 2)), ("messages", MESSAGES, MESSAGES_END, (19, 18, 2))],
)
@pytest.mark.parametrize("split", [False, True], ids=["frame-per-chunk", "split"])
async def test_typed_event_streams_are_counted_by_their_deltas(
    endpoint: str, frames: list[bytes], end: bytes, totals: tuple[int, int, int], split: bool
) -> None:
    whole = b"".join([*frames, end])
    chunks = [whole[i : i + 11] for i in range(0, len(whole), 11)] if split else [*frames, end]
    pumped, ctx, done = relay(Upstream(chunks), endpoint)
    written: list[bytes] = []
    await pumped.pump(written.append)
    assert b"".join(written) == whole and done == [ctx]
    meter = ctx.meter
    assert (meter.prompt_tokens, meter.cached_tokens, meter.completion_tokens) == totals
    assert meter.chunks_with_content == 2 and meter.first_token_at is not None


@pytest.mark.parametrize(("endpoint", "frames"), [("responses", RESPONSES), ("messages", MESSAGES)])
async def test_a_typed_event_stream_cut_short_counts_the_deltas_it_relayed(
    endpoint: str, frames: list[bytes]
) -> None:
    iterated, ctx, done = relay(Upstream(frames, fail=True), endpoint)
    assert [chunk async for chunk in iterated] == frames
    assert done == [ctx] and ctx.error.startswith("upstream stream broke")
    assert ctx.meter.completion_tokens == 2  # the two deltas, not the events around them


async def _translating(upstream: httpx.Response, ctx: RelayContext, finished: list) -> AsyncIterator[bytes]:
    async with translated_stream(upstream, ctx, finished.append):
        async for chunk in upstream.aiter_raw():
            yield chunk.upper()
    yield b"after"


async def test_a_translated_stream_that_breaks_off_ends_with_the_reason_and_is_recorded_once() -> None:
    stream = Upstream([b"a", b"b"], fail=True)
    upstream = httpx.Response(200, stream=stream)
    ctx, finished = RelayContext(face="lmstudio", endpoint="chat"), []
    received = [chunk async for chunk in _translating(upstream, ctx, finished)]
    assert received == [b"A", b"B", b"after"]  # the generator goes on after the block
    assert ctx.error.startswith("upstream stream broke") and finished == [ctx] and stream.closed
    assert ctx.meter.ended is not None


async def test_a_translated_stream_whose_client_goes_away_is_recorded_so() -> None:
    stream = Upstream([b"a", b"b"], hang=True)
    ctx, finished = RelayContext(face="lmstudio", endpoint="chat"), []
    generator = _translating(httpx.Response(200, stream=stream), ctx, finished)
    assert await generator.__anext__() == b"A"
    await generator.aclose()
    assert ctx.error == "client disconnected" and finished == [ctx] and stream.closed
