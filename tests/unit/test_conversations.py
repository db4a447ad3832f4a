"""Conversations kept for `previous_response_id` (the Responses API's): kept off the request path,
found at once, per API key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from proxies import conversations
from proxies.models import StoredChat

pytestmark = pytest.mark.django_db(transaction=True)  # (written from another thread)


async def settle() -> None:
    for task in list(conversations._writing):
        await task
    await asyncio.sleep(0)


async def test_a_kept_conversation_is_found_before_and_after_it_is_written() -> None:
    conversations.keep("responses", "resp_1", "m", [{"role": "user", "content": "hi"}], None)
    assert await conversations.find("responses", "resp_1", None) == [{"role": "user", "content": "hi"}]
    assert await conversations.find("lmstudio", "resp_1", None) is None  # another API's ids
    await settle()
    assert await StoredChat.objects.filter(pk="resp_1", kind="responses").aexists()
    assert await conversations.find("responses", "resp_1", None) == [{"role": "user", "content": "hi"}]


async def test_a_conversation_kept_for_a_key_is_not_there_for_another() -> None:
    conversations.keep("responses", "resp_k", "m", [], 7)
    assert await conversations.find("responses", "resp_k", 7) == []
    assert await conversations.find("responses", "resp_k", 8) is None
    assert await conversations.find("responses", "resp_k", None) is None
    await settle()


async def test_a_request_goes_on_from_its_previous_response_and_keeps_its_answer() -> None:
    conversations.keep("responses", "resp_a", "m", [{"role": "user", "content": "one"}], None)
    payload: dict[str, Any] = {"input": "two", "previous_response_id": "resp_a"}
    keep = await conversations.prepare_responses(payload, "m", None)
    assert payload == {"input": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]}
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "three"}]}
    keep({"id": "resp_b", "status": "completed", "output": [answer]})
    assert await conversations.find("responses", "resp_b", None) == [*payload["input"], answer]
    keep({"id": "resp_c", "status": "failed", "output": []})
    assert await conversations.find("responses", "resp_c", None) is None
    assert await conversations.prepare_responses({"input": "x", "store": False}, "m", None) is None
    with pytest.raises(LookupError):
        await conversations.prepare_responses({"input": "x", "previous_response_id": "resp_none"}, "m", None)
    with pytest.raises(TypeError):
        await conversations.prepare_responses({"input": "x", "previous_response_id": 5}, "m", None)
    await settle()
