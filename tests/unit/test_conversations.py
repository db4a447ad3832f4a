"""Conversations kept for `previous_response_id` (the Responses API's): found at once, written
off the request path (here, with no event loop running, at once), per API key."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import async_to_sync

from proxies import conversations
from proxies.models import ApiKey, StoredChat

pytestmark = pytest.mark.django_db(transaction=True)  # (read back through other threads)

find = async_to_sync(conversations.find)
prepare = async_to_sync(conversations.prepare_responses)


def test_a_kept_conversation_is_written_and_found_for_its_api_only() -> None:
    conversations.keep("responses", "resp_1", "m", [{"role": "user", "content": "hi"}], None)
    assert StoredChat.objects.filter(pk="resp_1", kind="responses").exists()
    assert find("responses", "resp_1", None) == [{"role": "user", "content": "hi"}]
    assert find("lmstudio", "resp_1", None) is None  # another API's ids


def test_one_not_written_yet_is_found_all_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conversations, "store", lambda: 0)  # as if its write had not come yet
    conversations.keep("responses", "resp_soon", "m", [], None)
    assert find("responses", "resp_soon", None) == []
    assert not StoredChat.objects.filter(pk="resp_soon").exists()
    monkeypatch.undo()
    assert conversations.store() == 1 and StoredChat.objects.filter(pk="resp_soon").exists()


def test_a_conversation_kept_for_a_key_is_not_there_for_another() -> None:
    key = ApiKey.objects.create(name="k", prefix="sk-k", key_hash="0" * 64)
    conversations.keep("responses", "resp_k", "m", [], key.pk)
    assert find("responses", "resp_k", key.pk) == []
    assert find("responses", "resp_k", key.pk + 1) is None
    assert find("responses", "resp_k", None) is None


def test_a_request_goes_on_from_its_previous_response_and_keeps_its_answer() -> None:
    conversations.keep("responses", "resp_a", "m", [{"role": "user", "content": "one"}], None)
    payload: dict[str, Any] = {"input": "two", "previous_response_id": "resp_a"}
    keep = prepare(payload, "m", None)
    assert payload == {"input": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]}
    answer = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "three"}]}
    keep({"id": "resp_b", "status": "completed", "output": [answer]})
    assert find("responses", "resp_b", None) == [*payload["input"], answer]
    keep({"id": "resp_c", "status": "failed", "output": []})
    assert find("responses", "resp_c", None) is None
    assert prepare({"input": "x", "store": False}, "m", None) is None
    with pytest.raises(LookupError):
        prepare({"input": "x", "previous_response_id": "resp_none"}, "m", None)
    with pytest.raises(TypeError):
        prepare({"input": "x", "previous_response_id": 5}, "m", None)


def test_a_conversation_that_can_never_be_written_is_dropped_not_retried_forever() -> None:
    conversations.keep("responses", "resp_orphan", "m", [], 999_999)  # no such key (revoked and gone)
    assert not StoredChat.objects.filter(pk="resp_orphan").exists()
    assert conversations.store() == 0 and find("responses", "resp_orphan", 999_999) is None


retrieve = async_to_sync(conversations.stored_response)
input_items = async_to_sync(conversations.response_input_items)
forget = async_to_sync(conversations.forget)


def test_a_kept_response_is_read_back_with_its_input_items_then_forgotten_for_its_key_only() -> None:
    key = ApiKey.objects.create(name="k", prefix="sk-k", key_hash="1" * 64)
    answer = {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "b"}],
    }
    keep = prepare({"input": "a", "instructions": "x"}, "m", key.pk)
    keep({"id": "resp_r", "object": "response", "status": "completed", "output": [answer]})
    assert retrieve("resp_r", key.pk)["output"] == [answer]
    assert retrieve("resp_r", None) is None and input_items("resp_r", key.pk + 1) is None
    assert input_items("resp_r", key.pk) == [
        {
            "id": "msg_resp_r_0",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "a"}],
            "status": "completed",
        }
    ]
    assert not forget("responses", "resp_r", None)  # another key's
    assert forget("responses", "resp_r", key.pk)
    assert retrieve("resp_r", key.pk) is None and not StoredChat.objects.filter(pk="resp_r").exists()
    assert not forget("responses", "resp_r", key.pk)
