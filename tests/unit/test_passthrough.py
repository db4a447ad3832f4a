"""How a relayed request ends: a whole answer sent as it came and accounted for once sent; a
lease released and usage recorded once, also when the client goes away."""

from __future__ import annotations

import asyncio
import functools
import logging

import httpx
import pytest

from proxies.gateway import Finish
from proxies.relay import GeneratedStream, RelayContext, passthrough

ANSWER = (
    b'{"choices":[{"text":"hi","finish_reason":"length"}],"usage":{"prompt_tokens":4,"completion_tokens":1}}'
)


def upstream(body: bytes = ANSWER, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, headers={"content-type": "application/json", "x-runner": "1", "server": "llama"}, content=body
    )


async def test_the_answer_is_passed_on_and_accounted_for_when_the_response_is_closed() -> None:
    ctx = RelayContext(face="api", endpoint="completions")
    finished: list[RelayContext] = []
    response = await passthrough(upstream(), ctx, finished.append)
    assert response.status_code == 200 and response.content == ANSWER
    assert response["Content-Type"] == "application/json" and response["x-runner"] == "1"
    assert not response.has_header("server")
    assert finished == [] and ctx.meter.prompt_tokens is None  # nothing yet: the client has not been answered

    await asyncio.sleep(0.01)
    response.close()
    assert finished == [ctx]
    meter = ctx.meter
    assert (meter.prompt_tokens, meter.completion_tokens) == (4, 1)
    # The times are those of the answer's arrival, not of the close.
    assert meter.first_token_at == meter.ended and meter.duration_ms < 10
    response.close()
    assert finished == [ctx]  # once only


async def test_an_upstream_error_is_recorded_with_its_message() -> None:
    ctx = RelayContext(face="api", endpoint="completions")
    finished: list[RelayContext] = []
    body = b'{"error":{"code":400,"message":"the prompt is too long","type":"invalid_request_error"}}'
    response = await passthrough(upstream(body, 400), ctx, finished.append)
    assert response.status_code == 400 and response.content == body
    response.close()
    assert finished == [ctx] and ctx.status == 400 and ctx.error == "the prompt is too long"


async def test_a_failing_account_is_logged_and_the_response_still_closes(caplog) -> None:
    def broken(ctx: RelayContext) -> None:
        raise RuntimeError("boom")

    response = await passthrough(upstream(), RelayContext(face="api", endpoint="completions"), broken)
    with caplog.at_level(logging.ERROR, logger="proxies.relay"):
        response.close()
    assert response.closed and "accounting for a relayed answer failed" in caplog.text


class Lease:
    def __init__(self) -> None:
        self.released = 0
        self.load_seconds = 0.0

    def release(self) -> None:
        self.released += 1


@pytest.fixture
def recorded(monkeypatch) -> list[RelayContext]:
    rows: list[RelayContext] = []
    monkeypatch.setattr("proxies.gateway.record", lambda ctx, load_seconds=0.0: rows.append(ctx))
    return rows


def test_finish_releases_and_records_once(recorded) -> None:
    lease = Lease()
    finish = Finish(lease)
    ctx = RelayContext(face="api", endpoint="completions", status=200)
    finish(ctx)
    finish(ctx)
    finish.abandoned(ctx)
    assert lease.released == 1 and recorded == [ctx] and ctx.status == 200 and not ctx.error


def test_an_abandoned_request_is_recorded_as_the_client_disconnecting(recorded) -> None:
    lease = Lease()
    finish = Finish(lease)
    ctx = RelayContext(face="ollama", endpoint="generate")
    finish.abandoned(ctx)
    finish(ctx)
    assert lease.released == 1 and recorded == [ctx]
    assert (ctx.status, ctx.error) == (499, "client disconnected") and ctx.meter.ended is not None


async def test_a_request_abandoned_while_its_model_loads_is_recorded(recorded, monkeypatch) -> None:
    from types import SimpleNamespace

    from proxies.gateway import acquire_runner

    async def loading(model: str, **kwargs) -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr("runners.scheduler.acquire", loading)
    ctx = RelayContext(face="api", endpoint="chat/completions")
    model = SimpleNamespace(name="big", kind="llm")
    task = asyncio.create_task(acquire_runner(model, ctx))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorded == [ctx] and ctx.status == 499 and ctx.model == "big"
    assert ctx.error == "client disconnected while waiting for the model"


class Upstream(httpx.AsyncByteStream):
    def __init__(self) -> None:
        self.closed = 0

    async def __aiter__(self):
        yield b"x"

    async def aclose(self) -> None:
        self.closed += 1


def generated(ended: list[str]) -> GeneratedStream:
    """A streamed answer as the Ollama and LM Studio faces make them: a generator whose
    `finally` ends the request, and Finish.unsent for a response dropped before it started."""
    lease, upstream = Lease(), httpx.Response(200, stream=Upstream())
    finish, ctx = Finish(lease), RelayContext(face="ollama", endpoint="chat", status=200)

    async def body():
        try:
            for index in range(3):
                yield b"line %d\n" % index
        finally:
            ended.append("finally")
            await upstream.aclose()
            finish(ctx)

    stream = GeneratedStream(body(), functools.partial(finish.unsent, upstream, ctx))
    stream.test_parts = (lease, upstream.stream, ctx)  # type: ignore[attr-defined]
    return stream


async def test_a_stream_dropped_before_it_started_still_ends_its_request(recorded) -> None:
    ended: list[str] = []
    stream = generated(ended)
    lease, upstream, ctx = stream.test_parts
    aiter(stream)  # Django takes an iterator up front; that alone starts nothing
    await stream.aclose()
    await stream.aclose()
    assert ended == []  # the generator's own `finally` never runs: it never started
    assert lease.released == 1 and upstream.closed == 1 and recorded == [ctx]
    assert (ctx.status, ctx.error) == (499, "client disconnected")


@pytest.mark.parametrize("taken", [1, 3])
async def test_a_started_stream_ends_its_request_through_its_own_finally(recorded, taken: int) -> None:
    ended: list[str] = []
    stream = generated(ended)
    lease, upstream, ctx = stream.test_parts
    iterator = aiter(stream)
    assert [await anext(iterator) for _ in range(taken)] == [b"line %d\n" % i for i in range(taken)]
    await iterator.aclose()
    await stream.aclose()
    assert ended == ["finally"] and lease.released == 1 and upstream.closed == 1
    assert recorded == [ctx] and ctx.status == 200


def test_a_runners_headers_reach_the_client_less_hop_and_server_headers() -> None:
    from proxies.relay import response_headers

    upstream = httpx.Response(
        200,
        headers=[
            (b"Content-Type", b"application/json"),
            (b"Server", b"llama.cpp"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Trace", b"a"),
            (b"x-trace", b"b"),
            (b"X-Note", "café".encode()),
        ],
    )
    assert response_headers(upstream) == {
        "content-type": "application/json",
        "x-trace": "a, b",
        "x-note": "café".encode().decode("latin-1"),  # the bytes as they came, sent back as such
    }


def test_metrics_keep_one_series_per_model_face_endpoint_and_status() -> None:
    from proxies import metrics

    def requests(status: str) -> float:
        value = metrics.registry.get_sample_value(
            "llamaproxy_requests_total",
            {"model": "series-test", "face": "api", "endpoint": "completions", "status": status},
        )
        return value or 0.0

    for status in (200, 200, 404):
        ctx = RelayContext(face="api", endpoint="completions", model="series-test", status=status)
        ctx.meter.completion_tokens = 5
        ctx.meter.finish()
        metrics.observe(ctx)
    assert (requests("200"), requests("404")) == (2.0, 1.0)
    tokens = metrics.registry.get_sample_value("llamaproxy_completion_tokens_total", {"model": "series-test"})
    assert tokens == 15.0
