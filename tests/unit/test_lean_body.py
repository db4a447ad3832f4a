"""The API faces' handler reads request bodies like Django does, without a temporary file for the
usual one-message JSON body."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import RequestAborted
from django.test import override_settings

from llamaproxy.asgi import LeanASGIHandler


def receiver(*messages: dict):
    queue = list(messages)

    async def receive() -> dict:
        return queue.pop(0)

    return receive


async def test_a_whole_small_body_is_wrapped_in_memory() -> None:
    body = await LeanASGIHandler().read_body(receiver({"type": "http.request", "body": b'{"a": 1}'}))
    assert isinstance(body, io.BytesIO)
    assert body.read() == b'{"a": 1}'


async def test_a_body_in_several_messages_is_read_whole_in_order() -> None:
    body = await LeanASGIHandler().read_body(
        receiver(
            {"type": "http.request", "body": b"one ", "more_body": True},
            {"type": "http.request", "body": b"two ", "more_body": True},
            {"type": "http.request", "body": b"three"},
        )
    )
    assert body.read() == b"one two three"


@override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=4)
async def test_a_body_over_the_memory_limit_is_spooled_as_django_does() -> None:
    body = await LeanASGIHandler().read_body(receiver({"type": "http.request", "body": b"0123456789"}))
    assert not isinstance(body, io.BytesIO)
    assert body.read() == b"0123456789"


@pytest.mark.parametrize("first", [True, False])
async def test_a_disconnect_while_reading_aborts_the_request(first: bool) -> None:
    messages = [{"type": "http.disconnect"}]
    if not first:
        messages.insert(0, {"type": "http.request", "body": b"part", "more_body": True})
    with pytest.raises(RequestAborted):
        await LeanASGIHandler().read_body(receiver(*messages))
