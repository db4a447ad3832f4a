"""Conversations kept for `previous_response_id` (llama-server keeps none): the OpenAI Responses
API's and LM Studio's `/api/v1/chat`'s, each under its own `kind`.

A kept Responses conversation is the request's input items followed by the answer's output items,
under the answer's `id`; a request naming it as `previous_response_id` gets them before its own
input (llama-server takes output items back as input). The response object is kept with it, for
`GET /v1/responses/{id}` and its `input_items`. LM Studio's is its chat messages, its system
prompt first. Either is written off the request path and found at once even before that write (a
client may go on the moment its answer arrives).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial
from typing import Any

from django.db import IntegrityError, close_old_connections, transaction

log = logging.getLogger(__name__)

_pending: dict[tuple[str, str], dict[str, Any]] = {}
_lock = threading.Lock()
_writing: set[asyncio.Task[int]] = set()


def keep(
    kind: str,
    response_id: str,
    model: str,
    messages: list[Any],
    api_key_id: int | None,
    response: dict[str, Any] | None = None,
) -> None:
    """Keep a conversation under `response_id`; from any thread, the write comes soon after."""
    row = {
        "kind": kind,
        "response_id": response_id,
        "model": model,
        "messages": messages,
        "api_key_id": api_key_id,
        "response": response,
    }
    with _lock:
        _pending[(kind, response_id)] = row
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        store()  # a worker thread (or no loop at all): write now
        return
    task = loop.create_task(asyncio.to_thread(store))
    _writing.add(task)  # (held until done: the loop keeps only a weak reference)
    task.add_done_callback(_writing.discard)


def store() -> int:
    """Write what is waiting; what cannot be written now (the database busy) waits for the next
    call. Returns how many were written."""
    with _lock:
        rows = list(_pending.values())
    if not rows:
        return 0
    try:
        written = _write(rows)
    except Exception:
        log.exception("could not keep %d conversations; trying again with the next one", len(rows))
        return 0
    finally:
        close_old_connections()
    with _lock:
        for row in rows:  # written, or never writable
            _pending.pop((row["kind"], row["response_id"]), None)
    return written


def _write(rows: list[dict[str, Any]]) -> int:
    from proxies.models import StoredChat

    try:
        with transaction.atomic():
            StoredChat.objects.bulk_create([StoredChat(**row) for row in rows], ignore_conflicts=True)
        return len(rows)
    except IntegrityError:  # an API key deleted meanwhile: the others are written one by one
        written = 0
        for row in rows:
            try:
                with transaction.atomic():
                    StoredChat.objects.bulk_create([StoredChat(**row)], ignore_conflicts=True)
                written += 1
            except IntegrityError:
                log.warning("conversation %s not kept: its API key is gone", row["response_id"])
        return written


async def _kept(kind: str, response_id: str, api_key_id: int | None) -> dict[str, Any] | None:
    """What is kept under `response_id` (messages, response), or None (also when kept for
    another key)."""
    from proxies.models import StoredChat

    with _lock:
        row = _pending.get((kind, response_id))
    if row is None:
        stored = await StoredChat.objects.filter(pk=response_id, kind=kind).afirst()
        if stored is None:
            return None
        row = {"messages": stored.messages, "response": stored.response, "api_key_id": stored.api_key_id}
    if row["api_key_id"] is not None and row["api_key_id"] != api_key_id:
        return None
    return row


async def find(kind: str, response_id: str, api_key_id: int | None) -> list[Any] | None:
    """The conversation kept under `response_id`, or None (also for one kept for another key)."""
    row = await _kept(kind, response_id, api_key_id)
    return None if row is None else list(row["messages"])


async def forget(kind: str, response_id: str, api_key_id: int | None) -> bool:
    """Delete what is kept under `response_id`; False when nothing is (for this key)."""
    from proxies.models import StoredChat

    if await _kept(kind, response_id, api_key_id) is None:
        return False
    with _lock:
        _pending.pop((kind, response_id), None)
    await StoredChat.objects.filter(pk=response_id, kind=kind).adelete()
    return True


# --- the Responses API ---------------------------------------------------------------------------


def input_items(value: Any) -> list[Any]:
    """A Responses request's `input` as a list of items (a text is one user message)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value) if isinstance(value, list) else []


async def prepare_responses(payload: dict[str, Any], model: str, api_key_id: int | None) -> Any:
    """Go on from `previous_response_id` (its conversation before the request's input) and, unless
    `store` is false, return what keeps the answer's conversation once it is relayed (a callable
    taking the response object). Raises LookupError for a conversation that is not kept."""
    previous = payload.get("previous_response_id")
    if previous is not None:
        if not isinstance(previous, str):
            raise TypeError("previous_response_id must be a text")
        history = await find("responses", previous, api_key_id)
        if history is None:
            raise LookupError(previous)
        payload["input"] = [*history, *input_items(payload.get("input"))]
        del payload["previous_response_id"]
    if payload.get("store") is False:
        return None
    return partial(_keep_response, input_items(payload.get("input")), model, api_key_id)


def _keep_response(items: list[Any], model: str, api_key_id: int | None, response: dict[str, Any]) -> None:
    response_id, output = response.get("id"), response.get("output")
    if isinstance(response_id, str) and isinstance(output, list) and response.get("status") != "failed":
        keep("responses", response_id, model, [*items, *output], api_key_id, response)


async def stored_response(response_id: str, api_key_id: int | None) -> dict[str, Any] | None:
    """The response object kept under `response_id` (`GET /v1/responses/{id}`), or None."""
    row = await _kept("responses", response_id, api_key_id)
    return None if row is None or not isinstance(row["response"], dict) else row["response"]


async def response_input_items(response_id: str, api_key_id: int | None) -> list[dict[str, Any]] | None:
    """The items the model read to give the response kept under `response_id` (what came before
    its output: an earlier conversation's too), oldest first, each an item of the Responses API's
    shape with an `id`; None when no response is kept under it."""
    row = await _kept("responses", response_id, api_key_id)
    if row is None or not isinstance(row["response"], dict):
        return None
    output = row["response"].get("output")
    messages = list(row["messages"])
    read = messages[: len(messages) - len(output)] if isinstance(output, list) else messages
    return [_as_item(item, f"{response_id}_{index}") for index, item in enumerate(read)]


def _as_item(item: Any, item_id: str) -> dict[str, Any]:
    """An input item as the Responses API lists it: a message has `type`, a list of content
    parts (a text is an input or output text part) and a status; every item an `id`."""
    if not isinstance(item, dict):
        return {
            "id": "item_" + item_id,
            "type": "message",
            "role": "user",
            "content": [],
            "status": "completed",
        }
    item = dict(item)
    if "role" in item and item.get("type", "message") == "message":
        item["type"] = "message"
        content = item.get("content")
        if isinstance(content, str):
            part = "output_text" if item["role"] == "assistant" else "input_text"
            text_part: dict[str, Any] = {"type": part, "text": content}
            if part == "output_text":
                text_part["annotations"] = []
            item["content"] = [text_part]
        item.setdefault("status", "completed")
        item.setdefault("id", "msg_" + item_id)
    item.setdefault("id", "item_" + item_id)
    return item
