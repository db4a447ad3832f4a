"""The API faces' handler answers in the request's own task; a client that goes away cancels the
answer, whether the server reports it by callback (daphne) or by `http.disconnect` (others)."""

from __future__ import annotations

import asyncio

import pytest
from django.http import HttpResponse

from llamaproxy import asgi
from llamaproxy.asgi import LeanASGIHandler


class Handler(LeanASGIHandler):
    """Its view waits for `release` (or forever) and notes how it ended."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.ended: list[str] = []
        self.response = HttpResponse(b"done")

    async def run_get_response(self, request):
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.ended.append("cancelled")
            raise
        self.ended.append("answered")
        return self.response


class Sent:
    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.messages: list[dict] = []
        self.hold = hold

    async def __call__(self, message: dict) -> None:
        if self.hold is not None and message["type"] == "http.response.body":
            await self.hold.wait()
        self.messages.append(message)


@pytest.fixture
def lost(monkeypatch) -> list:
    """The callbacks registered as daphne's would be."""
    callbacks: list = []

    def register(send, callback) -> bool:
        callbacks.append(callback)
        return True

    monkeypatch.setattr(asgi, "on_connection_lost", register)
    return callbacks


async def never() -> dict:
    await asyncio.sleep(3600)
    return {}


async def test_the_answer_is_sent_and_the_response_closed(lost) -> None:
    handler, send = Handler(), Sent()
    handler.release.set()
    await handler.answer(object(), never, send)
    assert handler.ended == ["answered"] and handler.response.closed
    assert [m["type"] for m in send.messages] == ["http.response.start", "http.response.body"]
    assert send.messages[1]["body"] == b"done"


async def test_a_lost_connection_cancels_the_answer_and_leaves_the_task_uncancelled(lost) -> None:
    handler, send = Handler(), Sent()

    async def request() -> int:
        await handler.answer(object(), never, send)
        return asyncio.current_task().cancelling()

    task = asyncio.create_task(request())
    await asyncio.sleep(0.01)
    lost[0]()
    assert await asyncio.wait_for(task, 5) == 0
    assert handler.ended == ["cancelled"] and send.messages == []


async def test_a_connection_lost_while_sending_still_closes_the_response(lost) -> None:
    handler, send = Handler(), Sent(hold=asyncio.Event())
    handler.release.set()
    task = asyncio.create_task(handler.answer(object(), never, send))
    await asyncio.sleep(0.01)
    lost[0]()
    await asyncio.wait_for(task, 5)
    assert handler.response.closed and [m["type"] for m in send.messages] == ["http.response.start"]


async def test_a_cancellation_from_elsewhere_is_not_swallowed(lost) -> None:
    handler = Handler()
    task = asyncio.create_task(handler.answer(object(), never, Sent()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_without_daphne_a_disconnect_message_cancels_the_answer() -> None:
    handler, send = Handler(), Sent()

    async def receive() -> dict:
        await asyncio.sleep(0.01)
        return {"type": "http.disconnect"}

    await asyncio.wait_for(handler.answer(object(), receive, send), 5)
    assert handler.ended == ["cancelled"] and send.messages == []
