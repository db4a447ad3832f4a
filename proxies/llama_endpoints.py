"""The rest of what llama-server answers, relayed to the runner of the model a request names,
as llama.cpp's own router mode does:

- on every API port (they all serve `/v1/*`): the Responses API (`/v1/responses`; a stored
  response is read back, listed by its input items and deleted here, as llama-server keeps none), Anthropic's
  Messages API (`/v1/messages`, whose own errors are in Anthropic's shape), and the token counts
  (`/v1/responses/input_tokens`, `/v1/chat/completions/input_tokens`,
  `/v1/messages/count_tokens`);
- on the OpenAI port only, llama-server's native routes (`/completion`, `/infill`, `/tokenize`,
  `/detokenize`, `/apply-template`, `/embedding`, ...), for clients written against a bare
  llama-server (llama.vscode's code completion through `/infill`, for one).

Bodies are checked only where llamaproxy reads them (`model`, `stream`) or where llama-server
would answer a malformed request with a 500; usage is recorded as for the other endpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from pydantic import BaseModel

from proxies import conversations
from proxies.gateway import FaceError, authorize, new_context
from proxies.openai_face import anthropic_error, api, face_error_response, relay_json_endpoint
from proxies.openai_schemas import (
    ChatCompletionRequest,
    ChatTokensRequest,
    CountTokensRequest,
    MessagesRequest,
    NativeRequest,
    ResponsesRequest,
)

# --- /v1 (every API port) -------------------------------------------------------------------


@api.post("/v1/responses", include_in_schema=False)
async def responses(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(request, "responses", "/v1/responses", ResponsesRequest, generation=True)


@api.post("/v1/responses/input_tokens", include_in_schema=False)
async def responses_input_tokens(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(
        request, "responses/input_tokens", "/v1/responses/input_tokens", ResponsesRequest
    )


async def _key_id(request: HttpRequest) -> int | None:
    """The caller's key id, once the key is checked (a response stored for another key is not
    there for this one)."""
    key = await authorize(request, new_context(request, "responses/stored"))
    return key.id if key else None


def _no_stored_response(response_id: str) -> FaceError:
    return FaceError(404, f"no stored response '{response_id}'", "not_found", "response_id")


@api.get("/v1/responses/{response_id}", include_in_schema=False)
async def stored_response(request: HttpRequest, response_id: str) -> HttpResponse:
    """A response kept when it was made (`store` not false), as it was returned."""
    try:
        key_id = await _key_id(request)
        if request.GET.get("stream", "").lower() == "true":
            raise FaceError(400, "a stored response cannot be streamed again", param="stream")
        response = await conversations.stored_response(response_id, key_id)
        if response is None:
            raise _no_stored_response(response_id)
    except FaceError as exc:
        return face_error_response(exc)
    return JsonResponse(response)


@api.delete("/v1/responses/{response_id}", include_in_schema=False)
async def delete_stored_response(request: HttpRequest, response_id: str) -> HttpResponse:
    try:
        key_id = await _key_id(request)
        if not await conversations.forget("responses", response_id, key_id):
            raise _no_stored_response(response_id)
    except FaceError as exc:
        return face_error_response(exc)
    return JsonResponse({"id": response_id, "object": "response.deleted", "deleted": True})


@api.get("/v1/responses/{response_id}/input_items", include_in_schema=False)
async def stored_input_items(request: HttpRequest, response_id: str) -> HttpResponse:
    """The items the model read for a stored response, a page at a time (OpenAI's list shape)."""
    try:
        key_id = await _key_id(request)
        items = await conversations.response_input_items(response_id, key_id)
        if items is None:
            raise _no_stored_response(response_id)
        page = item_page(items, request.GET)
    except FaceError as exc:
        return face_error_response(exc)
    return JsonResponse(page)


def item_page(items: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of a list: `limit` (1-100, 20 unless given) items in `order` (`desc` unless
    given) after the item `after` or before the item `before`."""
    raw_limit = query.get("limit") or "20"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise FaceError(400, "limit must be a whole number from 1 to 100", param="limit")
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise FaceError(400, "order must be 'asc' or 'desc'", param="order")
    ordered = items if order == "asc" else items[::-1]
    ids = [item["id"] for item in ordered]
    start, end = 0, len(ordered)
    for param in ("after", "before"):
        cursor = query.get(param)
        if cursor is None:
            continue
        if cursor not in ids:
            raise FaceError(400, f"{param}: no item '{cursor}' in this list", param=param)
        if param == "after":
            start = ids.index(cursor) + 1
        else:
            end = ids.index(cursor)
    limit = int(raw_limit)
    if query.get("before") is not None and query.get("after") is None:
        data, has_more = ordered[max(start, end - limit) : end], end - start > limit  # the page before it
    else:
        data, has_more = ordered[start : min(start + limit, end)], end - start > limit
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


@api.post("/v1/chat/completions/input_tokens", include_in_schema=False)
async def chat_input_tokens(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(
        request, "chat/completions/input_tokens", "/v1/chat/completions/input_tokens", ChatTokensRequest
    )


@api.post("/v1/messages", include_in_schema=False)
async def messages(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(
        request, "messages", "/v1/messages", MessagesRequest, generation=True, errors=anthropic_error
    )


@api.post("/v1/messages/count_tokens", include_in_schema=False)
async def count_tokens(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(
        request,
        "messages/count_tokens",
        "/v1/messages/count_tokens",
        CountTokensRequest,
        errors=anthropic_error,
    )


# --- llama-server's native routes (the OpenAI port) ------------------------------------------

native_api = NinjaAPI(
    title="llamaproxy: llama-server's native routes",
    version="1",
    urls_namespace="llama-native",
    docs_url=None,
)

# path → (the usage history's endpoint, schema, generation: sampling defaults apply)
NATIVE_ROUTES: dict[str, tuple[str, type[BaseModel], bool]] = {
    "/completion": ("completion", NativeRequest, True),
    "/completions": ("completion", NativeRequest, True),
    "/chat/completions": ("chat/completions", ChatCompletionRequest, True),
    "/chat/completions/input_tokens": ("chat/completions/input_tokens", ChatTokensRequest, False),
    "/responses": ("responses", ResponsesRequest, True),
    "/responses/input_tokens": ("responses/input_tokens", ResponsesRequest, False),
    "/infill": ("infill", NativeRequest, True),
    "/embedding": ("embeddings", NativeRequest, False),
    "/embeddings": ("embeddings", NativeRequest, False),
    "/rerank": ("rerank", NativeRequest, False),
    "/reranking": ("rerank", NativeRequest, False),
    "/tokenize": ("tokenize", NativeRequest, False),
    "/detokenize": ("detokenize", NativeRequest, False),
    "/apply-template": ("apply-template", ChatTokensRequest, False),
}


def _native_view(path: str, endpoint: str, schema: type[BaseModel], generation: bool):
    async def view(request: HttpRequest) -> HttpResponse:
        return await relay_json_endpoint(request, endpoint, path, schema, generation=generation)

    view.__name__ = "native_" + path.strip("/").replace("/", "_").replace("-", "_")
    return view


for _path, (_endpoint, _schema, _generation) in NATIVE_ROUTES.items():
    native_api.post(_path, include_in_schema=False)(_native_view(_path, _endpoint, _schema, _generation))
