"""The OpenAI face (8585, and /v1/* on 11434 and 1234): llama-server's own API, every model.

Requests are validated only where llamaproxy reads them or where clients commonly go wrong,
then relayed byte for byte; errors are always `{"error": {"message", "type", "code", "param"}}`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import ValidationError as NinjaValidationError
from pydantic import BaseModel, ValidationError

from llamaproxy.http_errors import bad_request_with, method_not_allowed_with
from proxies import metrics
from proxies.catalog_view import ModelView, catalog_view
from proxies.gateway import (
    FaceError,
    acquire_runner,
    apply_sampling_defaults,
    apply_system_default,
    authorize,
    finalizer,
    new_context,
    record_failure,
    resolve_model,
)
from proxies.infill import infill_completion, wants_infill
from proxies.keys import KeyInfo
from proxies.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    RerankRequest,
    first_error,
)
from proxies.relay import RelayContext, forward_headers, open_upstream, passthrough
from proxies.usage import usage_writer

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
}


def openai_error(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> JsonResponse:
    error_type = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    if status == 429:
        error_type = "rate_limit_error"
    return JsonResponse(
        {"error": {"message": message, "type": error_type, "code": code, "param": param}}, status=status
    )


def face_error_response(exc: FaceError) -> JsonResponse:
    return openai_error(exc.status, exc.message, exc.code, exc.param)


ANTHROPIC_MAX_PAGE = 1000
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error(exc: FaceError) -> JsonResponse:
    """An error as Anthropic's API writes one (its SDKs read `error.type` and `error.message`)."""
    error_type = ANTHROPIC_ERROR_TYPES.get(exc.status, "api_error")
    return JsonResponse(
        {"type": "error", "error": {"type": error_type, "message": exc.message}}, status=exc.status
    )


api = NinjaAPI(title="llamaproxy OpenAI-compatible API", version="1", urls_namespace="openai", docs_url=None)


@api.exception_handler(NinjaValidationError)
def _ninja_validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    return openai_error(
        400, str(exc.errors[0].get("msg", "invalid request")) if exc.errors else "invalid request"
    )


def parse_body(request: HttpRequest, schema: type[BaseModel]) -> tuple[dict[str, Any], BaseModel]:
    """The JSON object of the request and its validated view; FaceError(400) naming the field."""
    if not request.body:
        raise FaceError(400, "the request body is empty; send a JSON object")
    try:
        payload = json.loads(request.body)
    except ValueError as exc:
        raise FaceError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise FaceError(400, "the request body must be a JSON object")
    try:
        return payload, schema.model_validate(payload)
    except ValidationError as exc:
        field, message = first_error(exc)
        raise FaceError(400, f"{field}: {message}" if field else message, param=field or None) from None


async def relay_json_endpoint(
    request: HttpRequest,
    endpoint: str,
    upstream_path: str,
    schema: type[BaseModel],
    *,
    generation: bool = False,
    accepts: str = "text",
    errors: Callable[[FaceError], HttpResponse] = face_error_response,
) -> HttpResponse:
    """Relay one JSON request; `generation` requests get the model's sampling defaults.
    The client's bytes go upstream unchanged unless a field had to be filled in. llamaproxy's
    own refusals are rendered by `errors` (OpenAI's shape unless the endpoint has another)."""
    ctx = new_context(request, endpoint)
    try:
        key = await authorize(request, ctx)
        payload, parsed = parse_body(request, schema)
        ctx.stream = bool(getattr(parsed, "stream", False))
        model = await resolve_model(parsed.model, key)
        if generation:
            changed = apply_sampling_defaults(payload, model, path=upstream_path)
        else:  # a token count counts the default system prompt the generation would get
            system = model.sampling.get("system")
            changed = bool(system) and apply_system_default(payload, system, upstream_path)
        if endpoint == "responses":
            changed = await _conversation(payload, ctx, model, key) or changed
        if parsed.model != model.name:
            # The runner gets the catalog's name for an alias or for no name (the default model):
            # llama-server answers with its `--alias`, the catalog's name, whatever the request
            # said, and builds that echo the request's `model` then say the same.
            payload["model"] = model.name
            changed = True
        body = json.dumps(payload).encode() if changed else request.body
        lease = await acquire_runner(model, ctx, accepts=accepts)
    except FaceError as exc:
        record_failure(ctx, exc)
        return errors(exc)
    return await send_to_runner(
        lease, ctx, "POST", upstream_path, body, {"content-type": "application/json"}, errors=errors
    )


async def _conversation(
    payload: dict[str, Any], ctx: RelayContext, model: ModelView, key: KeyInfo | None
) -> bool:
    """The Responses API's state (llama-server keeps none): `previous_response_id` goes on from a
    kept conversation, and the answer is kept unless `store` is false. True when the payload
    changed."""
    from proxies import conversations

    had_previous = "previous_response_id" in payload
    try:
        ctx.keep = await conversations.prepare_responses(payload, model.name, key.id if key else None)
    except TypeError as exc:
        raise FaceError(400, str(exc), param="previous_response_id") from None
    except LookupError as exc:
        raise FaceError(
            404, f"no stored response '{exc.args[0]}'", "not_found", "previous_response_id"
        ) from None
    return had_previous


async def send_to_runner(
    lease: Any,
    ctx: RelayContext,
    method: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    errors: Callable[[FaceError], HttpResponse] = face_error_response,
) -> HttpResponse:
    finish = finalizer(lease)
    try:
        upstream = await open_upstream(lease.base_url, method, path, content=body, headers=headers)
        return await passthrough(upstream, ctx, finish)
    except httpx.HTTPError as exc:
        finish.failed(ctx, exc)
        return errors(FaceError(502, ctx.error, "upstream_error"))
    except asyncio.CancelledError:
        finish.abandoned(ctx)
        raise


@api.post("/v1/chat/completions", include_in_schema=False)
async def chat_completions(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(
        request, "chat/completions", "/v1/chat/completions", ChatCompletionRequest, generation=True
    )


@api.post("/v1/completions", include_in_schema=False)
async def completions(request: HttpRequest) -> HttpResponse:
    if wants_infill(request):
        return await infill_completion(request, _completions)
    return await _completions(request)


async def _completions(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(
        request, "completions", "/v1/completions", CompletionRequest, generation=True
    )


@api.post("/v1/embeddings", include_in_schema=False)
async def embeddings(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(
        request, "embeddings", "/v1/embeddings", EmbeddingRequest, accepts="embedding"
    )


@api.post("/v1/rerank", include_in_schema=False)
async def rerank(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(request, "rerank", "/v1/rerank", RerankRequest)


@api.post("/v1/reranking", include_in_schema=False)
async def reranking(request: HttpRequest) -> HttpResponse:
    return await relay_json_endpoint(request, "rerank", "/v1/rerank", RerankRequest)


@api.get("/v1/models", include_in_schema=False)
async def list_models(request: HttpRequest) -> HttpResponse:
    ctx = new_context(request, "models")
    anthropic = speaks_anthropic(request)
    try:
        key = await authorize(request, ctx)
    except FaceError as exc:
        return anthropic_error(exc) if anthropic else face_error_response(exc)
    models = [m for m in await catalog_view.listed() if key is None or key.allows(m.name)]
    if anthropic:
        try:
            return JsonResponse(anthropic_model_page(models, request.GET))
        except FaceError as exc:
            return anthropic_error(exc)
    loaded = runner_states()
    data = [model_object(model, loaded.get(model.name, {})) for model in models]
    return JsonResponse({"object": "list", "data": data})


@api.get("/v1/models/{model_id}", include_in_schema=False)
async def get_model(request: HttpRequest, model_id: str) -> HttpResponse:
    ctx = new_context(request, "models")
    anthropic = speaks_anthropic(request)
    try:
        key = await authorize(request, ctx)
        model = await resolve_model(model_id, key)
    except FaceError as exc:
        return anthropic_error(exc) if anthropic else face_error_response(exc)
    if anthropic:
        return JsonResponse(anthropic_model(model))
    return JsonResponse(model_object(model, runner_states().get(model.name, {})))


def speaks_anthropic(request: HttpRequest) -> bool:
    """Anthropic's SDKs (and Claude Code) send `anthropic-version` with every request; their
    model list is another shape than OpenAI's, on the same path."""
    return "anthropic-version" in request.headers


def anthropic_model(model: Any) -> dict[str, Any]:
    created = datetime.fromtimestamp(model.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": model.name,
        "display_name": model.display_name or model.name,
        "created_at": created,
    }


def anthropic_model_page(models: list[Any], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of Anthropic's model list: `limit` (1-1000, 20 unless given) models after
    `after_id` or before `before_id`, with `has_more`, `first_id` and `last_id`."""
    raw_limit = query.get("limit") or "20"
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= ANTHROPIC_MAX_PAGE:
        raise FaceError(400, f"limit: must be an integer from 1 to {ANTHROPIC_MAX_PAGE}", param="limit")
    limit = int(raw_limit)
    ids = [model.name for model in models]
    for name in ("after_id", "before_id"):
        if query.get(name) and query[name] not in ids:
            raise FaceError(400, f"{name}: no model '{query[name]}' in the list", param=name)
    if query.get("before_id"):
        end = ids.index(query["before_id"])
        start = max(0, end - limit)
        has_more = start > 0
    else:
        start = ids.index(query["after_id"]) + 1 if query.get("after_id") else 0
        end = min(len(ids), start + limit)
        has_more = end < len(ids)
    page = [anthropic_model(model) for model in models[start:end]]
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def model_object(model: Any, runner: dict) -> dict[str, Any]:
    return {
        "id": model.name,
        "object": "model",
        "created": model.created,
        "owned_by": "llamaproxy",
        "loaded": runner.get("state") == "ready",
        "state": runner.get("state", "stopped"),
        "context_length": model.context_length,
        "aliases": list(model.aliases),
        "capabilities": list(model.capabilities),
        "meta": {
            "architecture": model.architecture,
            "quantization": model.quantization,
            "size": model.size_bytes,
            "n_params": model.parameter_count,
            "n_ctx_train": model.context_length,
            "n_embd": model.embedding_length,
        },
    }


def runner_states() -> dict[str, dict]:
    from runners.scheduler import status

    return {runner["model"]: runner for runner in status()}


async def upstream_passthrough(request: HttpRequest, model: str, path: str) -> HttpResponse:
    """`/upstream/<model>/<path>`: the model's own llama-server, raw (its web UI, /slots, /props ...)."""
    ctx = new_context(request, "upstream")
    try:
        key = await authorize(request, ctx)
        view = await resolve_model(model, key)
        lease = await acquire_runner(view, ctx, accepts="any")
    except FaceError as exc:
        record_failure(ctx, exc)
        return face_error_response(exc)
    query = request.META.get("QUERY_STRING", "")
    upstream_path = "/" + path + (f"?{query}" if query else "")
    return await send_to_runner(
        lease, ctx, request.method or "GET", upstream_path, request.body, forward_headers(request.headers)
    )


async def metrics_view(request: HttpRequest) -> HttpResponse:
    from runners.scheduler import status

    usage_writer.settle()  # the requests that finished since the last flush count already
    body, content_type = metrics.render(status())
    return HttpResponse(body, content_type=content_type)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404 of the API faces (Django calls it synchronously)."""
    return openai_error(404, f"unknown endpoint {request.method} {request.path}", "not_found")


def server_error(request: HttpRequest) -> JsonResponse:
    return openai_error(500, "internal error in llamaproxy; see logs/gateway.log", "internal_error")


REFUSAL_CODES = {405: "method_not_allowed", 413: "request_too_large"}


def _refusal(request: HttpRequest, status: int, message: str) -> JsonResponse:
    return openai_error(status, message, REFUSAL_CODES.get(status, "invalid_request_error"))


bad_request = bad_request_with(_refusal)  # handler400 of the OpenAI and LM Studio ports
method_not_allowed = method_not_allowed_with(_refusal)  # handler405 (see llamaproxy/http_errors.py)


# The audio endpoints (/v1/audio/transcriptions, /v1/audio/translations) register on `api` there,
# the Responses and Messages APIs and the token counts in llama_endpoints.
from proxies import audio, llama_endpoints  # noqa: E402, F401
