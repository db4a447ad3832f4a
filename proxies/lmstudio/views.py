"""The LM Studio face (1234): `/api/v0/*` (models, chat, completions, embeddings with `stats`)
and LM Studio 0.4's `/api/v1/models` with load, unload and download, and its stateful
`/api/v1/chat`. Errors are OpenAI-shaped, as LM Studio's own are; streams are SSE, with `stats`
added to the chunk that finishes the answer (`/api/v1/chat` streams LM Studio's named events)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

import httpx
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import ValidationError as NinjaValidationError
from pydantic import BaseModel, ConfigDict

from proxies import conversations
from proxies.catalog_view import ModelView, catalog_view
from proxies.gateway import (
    FaceError,
    acquire_runner,
    apply_sampling_defaults,
    authorize,
    finalizer,
    new_context,
    record_failure,
    resolve_model,
)
from proxies.keys import KeyInfo
from proxies.lmstudio import translate as t
from proxies.openai_face import face_error_response, openai_error, parse_body, send_to_runner
from proxies.openai_schemas import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from proxies.relay import (
    GeneratedStream,
    RelayContext,
    open_upstream,
    response_headers,
    runner_objects,
    stream_response,
    translated_stream,
)
from proxies.sse import SSEFrameParser, parse_json_payload

JSON_HEADERS = {"content-type": "application/json"}

api = NinjaAPI(
    title="llamaproxy LM Studio-compatible API",
    version="1",
    urls_namespace="lmstudio",
    docs_url=None,
    openapi_url=None,
)


@api.exception_handler(NinjaValidationError)
def _ninja_validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    return openai_error(400, "invalid request")


async def resolve(name: str | None, key: KeyInfo | None) -> ModelView:
    """LM Studio ids may carry a publisher ("lmstudio-community/x") or a quantization ("x@q4_k_m")."""
    try:
        return await resolve_model(name, key)
    except FaceError as exc:
        if exc.status != 404 or not name:
            raise
        for candidate in _candidates(name):
            if await catalog_view.resolve(candidate) is not None:
                return await resolve_model(candidate, key)
        raise


def _candidates(name: str) -> list[str]:
    found = []
    base = name.split("@", 1)[0]
    if base != name:
        found.append(base)
    if "/" in base:
        found.append(base.rsplit("/", 1)[1])
    return found


async def runners() -> dict[str, dict[str, Any]]:
    from runners import scheduler

    return {runner["model"]: runner for runner in await scheduler.status_async()}


async def scheduler_unload(name: str) -> bool:
    from runners.scheduler import unload

    result = unload(name)
    return bool(await result if inspect.isawaitable(result) else result)


def _visible(model: ModelView, key: KeyInfo | None) -> bool:
    return model.kind != "whisper" and (key is None or key.allows(model.name))


# --- models -------------------------------------------------------------------------------------


@api.get("/api/v0/models", include_in_schema=False)
async def list_v0(request: HttpRequest) -> HttpResponse:
    return await _listing(
        request,
        lambda models, states: {
            "object": "list",
            "data": [t.model_v0(m, states.get(m.name, {})) for m in models],
        },
    )


@api.get("/api/v1/models", include_in_schema=False)
async def list_v1(request: HttpRequest) -> HttpResponse:
    return await _listing(
        request, lambda models, states: {"models": [t.model_v1(m, states.get(m.name, {})) for m in models]}
    )


async def _listing(request: HttpRequest, render: Any) -> HttpResponse:
    ctx = new_context(request, "models")
    try:
        key = await authorize(request, ctx)
    except FaceError as exc:
        return face_error_response(exc)
    models = [m for m in await catalog_view.listed() if _visible(m, key)]
    return JsonResponse(render(models, await runners()))


@api.get("/api/v0/models/{path:model_id}", include_in_schema=False)
async def get_v0(request: HttpRequest, model_id: str) -> HttpResponse:
    ctx = new_context(request, "models")
    try:
        key = await authorize(request, ctx)
        model = await resolve(model_id, key)
    except FaceError as exc:
        return face_error_response(exc)
    return JsonResponse(t.model_v0(model, (await runners()).get(model.name, {})))


@api.post("/api/v1/models/load", include_in_schema=False)
async def load(request: HttpRequest) -> HttpResponse:
    ctx = new_context(request, "load")
    try:
        key = await authorize(request, ctx)
        _, parsed = _parse(request, t.LoadRequest)
        model = await resolve(parsed.model, key)
        params = t.runner_params(parsed)
        ttl = None if parsed.ttl is None else (-1 if parsed.ttl < 0 else parsed.ttl)
        began = time.perf_counter()
        lease = await acquire_runner(model, ctx, ttl=ttl, runner_params=params or None)
    except FaceError as exc:
        record_failure(ctx, exc)
        return face_error_response(exc)
    elapsed = time.perf_counter() - began
    ctx.status = 200
    finalizer(lease)(ctx)
    runner = (await runners()).get(model.name, {})
    return JsonResponse(t.load_response(model, runner, lease.load_seconds or elapsed, params))


@api.post("/api/v1/models/unload", include_in_schema=False)
async def unload(request: HttpRequest) -> HttpResponse:
    ctx = new_context(request, "unload")
    try:
        key = await authorize(request, ctx)
        _, parsed = _parse(request, t.UnloadRequest)
        model = await resolve(parsed.instance_id, key)
        if not await scheduler_unload(model.name):
            raise FaceError(
                404, f"no loaded instance '{parsed.instance_id}'", "model_not_loaded", "instance_id"
            )
    except FaceError as exc:
        return face_error_response(exc)
    return JsonResponse({"instance_id": parsed.instance_id})


NOT_DOWNLOADABLE = (
    "llamaproxy downloads from Hugging Face (https://huggingface.co/<owner>/<repo> or <owner>/<repo>, "
    "with a quantization); or put the GGUF file in a models folder and rescan"
)


@api.post("/api/v1/models/download", include_in_schema=False)
async def download(request: HttpRequest) -> HttpResponse:
    """LM Studio's model download: a model already here is "already_downloaded"; a Hugging Face
    repository (`https://huggingface.co/<owner>/<repo>`, `hf.co/...` or `<owner>/<repo>`, with
    `quantization`) is downloaded by a job (models_catalog/downloads.py) whose state the answer
    and `download/status/{job_id}` give."""
    from models_catalog import downloads, hub
    from models_catalog.errors import CatalogError

    ctx = new_context(request, "download")
    try:
        key = await authorize(request, ctx)
        _, parsed = _parse(request, t.DownloadRequest)
        ref = hub.parse_reference(parsed.model, quantization=parsed.quantization)
        if ref is None:  # a model here (a publisher may lead its name), else a repository's id
            try:
                await resolve(parsed.model, key)
                return JsonResponse({"status": "already_downloaded"})
            except FaceError as exc:
                ref = hub.parse_reference(parsed.model, bare=True, quantization=parsed.quantization)
                if exc.status != 404 or ref is None:
                    message = f"{exc.message}: {NOT_DOWNLOADABLE}" if exc.status == 404 else exc.message
                    raise FaceError(exc.status, message, exc.code, exc.param) from None
        if key is not None and key.allowed_models:
            raise FaceError(
                403,
                "this API key is limited to some models: it may not download others",
                "permission_denied",
                "model",
            )
        try:
            started = await downloads.begin(ref, detached=True)
        except hub.HubError as exc:
            raise FaceError(exc.status, exc.message, _hub_error_type(exc.status), exc.field) from None
        except CatalogError as exc:
            raise FaceError(exc.status, exc.message, "invalid_request_error", "model") from None
    except FaceError as exc:
        return face_error_response(exc)
    if isinstance(started, str):
        return JsonResponse({"status": "already_downloaded"})
    return JsonResponse(_job_status(started))


def _hub_error_type(status: int) -> str:
    return {403: "permission_denied", 404: "model_not_found", 507: "insufficient_storage"}.get(
        status, "download_failed"
    )


def _job_status(job: Any) -> dict[str, Any]:
    """A job in LM Studio's shape (its fields, and a cancelled job as a failed one)."""
    data = job.as_dict()
    status = {"cancelled": "failed"}.get(data["status"], data["status"])
    keep = ("job_id", "total_size_bytes", "downloaded_bytes", "started_at", "completed_at")
    keep += ("bytes_per_second", "estimated_completion", "error")
    return {"status": status, **{k: data[k] for k in keep if k in data}}


@api.get("/api/v1/models/download/status/{job_id}", include_in_schema=False)
async def download_status(request: HttpRequest, job_id: str) -> HttpResponse:
    from models_catalog import downloads

    ctx = new_context(request, "download")
    try:
        await authorize(request, ctx)
    except FaceError as exc:
        return face_error_response(exc)
    job = downloads.get_job(job_id)
    if job is None:
        return openai_error(404, f"no download job '{job_id}'", "not_found", "job_id")
    return JsonResponse(_job_status(job))


class _AnyObject(BaseModel):
    model_config = ConfigDict(extra="allow")


def _parse(request: HttpRequest, schema: type[BaseModel]) -> tuple[dict[str, Any], Any]:
    payload, _ = parse_body(request, _AnyObject)  # JSON-object checks, in OpenAI's words
    try:
        return payload, t.validate(schema, payload)
    except t.TranslationError as exc:
        raise FaceError(400, str(exc)) from None


# --- generation ---------------------------------------------------------------------------------


@api.post("/api/v0/chat/completions", include_in_schema=False)
async def chat_completions(request: HttpRequest) -> HttpResponse:
    return await generation(request, "chat/completions", "/v1/chat/completions", ChatCompletionRequest)


@api.post("/api/v0/completions", include_in_schema=False)
async def completions(request: HttpRequest) -> HttpResponse:
    return await generation(request, "completions", "/v1/completions", CompletionRequest)


@api.post("/api/v0/embeddings", include_in_schema=False)
async def embeddings(request: HttpRequest) -> HttpResponse:
    ctx = new_context(request, "embeddings")
    try:
        lease, _model, payload = await _prepare(request, ctx, EmbeddingRequest, accepts="embedding")
    except FaceError as exc:
        record_failure(ctx, exc)
        return face_error_response(exc)
    body = json.dumps(payload).encode()
    return await send_to_runner(lease, ctx, "POST", "/v1/embeddings", body, JSON_HEADERS)


async def _prepare(
    request: HttpRequest, ctx: RelayContext, schema: type[BaseModel], accepts: str = "text"
) -> tuple[Any, ModelView, dict]:
    key = await authorize(request, ctx)
    payload, parsed = parse_body(request, schema)
    try:
        ttl = t.pop_ttl(payload)
    except t.TranslationError as exc:
        raise FaceError(400, str(exc), param="ttl") from None
    ctx.stream = bool(getattr(parsed, "stream", False))
    model = await resolve(parsed.model, key)
    payload["model"] = parsed.model or model.name
    lease = await acquire_runner(model, ctx, ttl=ttl, accepts=accepts)
    return lease, model, payload


async def generation(
    request: HttpRequest, endpoint: str, upstream_path: str, schema: type[BaseModel]
) -> HttpResponse:
    ctx = new_context(request, endpoint)
    try:
        lease, model, payload = await _prepare(request, ctx, schema)
    except FaceError as exc:
        record_failure(ctx, exc)
        return face_error_response(exc)
    apply_sampling_defaults(payload, model, path=upstream_path)
    finish = finalizer(lease)
    try:
        runner = (await runners()).get(model.name, {})
        upstream = await open_upstream(
            lease.base_url, "POST", upstream_path, content=json.dumps(payload).encode(), headers=JSON_HEADERS
        )
        ctx.status = upstream.status_code
        if upstream.status_code < 400 and "text/event-stream" in upstream.headers.get("content-type", ""):
            events = GeneratedStream(
                sse_with_stats(upstream, ctx, model, runner, finish),
                functools.partial(finish.unsent, upstream, ctx),
            )
            return stream_response(events, 200, "text/event-stream", response_headers(upstream))
        return await whole_response(upstream, ctx, model, runner, finish)
    except httpx.HTTPError as exc:
        finish.failed(ctx, exc)
        return openai_error(502, ctx.error, "upstream_error")
    except asyncio.CancelledError:
        finish.abandoned(ctx)
        raise


async def whole_response(
    upstream: httpx.Response, ctx: RelayContext, model: ModelView, runner: dict, finish: Any
) -> HttpResponse:
    try:
        raw = await upstream.aread()
    finally:
        await upstream.aclose()
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict):
        ctx.meter.mark_first_token()
        ctx.meter.observe(body)
    ctx.meter.finish()
    if upstream.status_code >= 400 or not isinstance(body, dict):
        ctx.error = raw.decode(errors="replace")[:500]
        finish(ctx)
        return HttpResponse(
            raw, status=upstream.status_code, content_type=upstream.headers.get("content-type")
        )
    finish(ctx)
    return JsonResponse(t.enrich(body, model, runner, ttft_seconds=None))


async def sse_with_stats(
    upstream: httpx.Response, ctx: RelayContext, model: ModelView, runner: dict, finish: Any
) -> AsyncIterator[bytes]:
    """llama-server's SSE, frame by frame, with LM Studio's `stats` on the chunk that finishes."""
    parser = SSEFrameParser()
    async with translated_stream(upstream, ctx, finish):
        async for raw in upstream.aiter_raw():
            for payload in parser.feed(raw):
                chunk = parse_json_payload(payload)
                if chunk is None:
                    yield b"data: " + payload + b"\n\n"
                    continue
                ctx.meter.observe(chunk)
                finish_reason = t.finish_reason_of(chunk)
                if finish_reason:
                    ttft = ctx.meter.ttft_ms / 1000 if ctx.meter.ttft_ms is not None else None
                    chunk = t.enrich(chunk, model, runner, ttft, finish_reason)
                yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"


# --- LM Studio 0.4's native chat -----------------------------------------------------------------


@api.post("/api/v1/chat", include_in_schema=False)
async def chat(request: HttpRequest) -> HttpResponse:
    """`POST /api/v1/chat`: one user turn, answered as `output` items with `stats`, or streamed as
    LM Studio's named SSE events. Stateful by default: the conversation up to the answer is kept
    under the answer's `response_id`, and `previous_response_id` goes on from any such point."""
    ctx = new_context(request, "chat")
    try:
        key = await authorize(request, ctx)
        _, parsed = _parse(request, t.ChatRequest)
        if parsed.integrations:
            raise FaceError(
                400,
                "integrations: MCP servers and plugins are not supported by llamaproxy",
                param="integrations",
            )
        ctx.stream = bool(parsed.stream)
        model = await resolve(parsed.model, key)
        stored_system, history = await _stored_chat(parsed.previous_response_id, key)
        system = parsed.system_prompt if parsed.system_prompt is not None else stored_system
        try:
            body = t.chat_body(parsed, history, system)
        except t.TranslationError as exc:
            raise FaceError(400, str(exc), param="input") from None
        body["model"] = model.name
        apply_sampling_defaults(body, model, path="/v1/chat/completions")
        params = {"ctx_size": parsed.context_length} if parsed.context_length else None
        lease = await acquire_runner(model, ctx, runner_params=params)
    except FaceError as exc:
        record_failure(ctx, exc)
        return face_error_response(exc)
    finish = finalizer(lease)
    try:
        upstream = await open_upstream(
            lease.base_url,
            "POST",
            "/v1/chat/completions",
            content=json.dumps(body).encode(),
            headers=JSON_HEADERS,
        )
    except httpx.HTTPError as exc:
        finish.failed(ctx, exc)
        return openai_error(502, ctx.error, "upstream_error")
    except asyncio.CancelledError:
        finish.abandoned(ctx)
        raise
    if upstream.status_code >= 400:
        return await whole_response(upstream, ctx, model, {}, finish)  # llama-server's error, as it is
    ctx.status = 200
    turn = _Turn(
        model.name,
        # The system prompt leads what is kept; the user's message is the body's last (a model's
        # defaults go before it, and are the model's to add again).
        [*([{"role": "system", "content": system}] if system else []), *history, body["messages"][-1]],
        key.id if key is not None else None,
        parsed.store is not False,
    )
    events = _chat_events(upstream, ctx, t.ChatEvents(parsed.model), lease.load_seconds, turn, finish)
    if ctx.stream:
        sse = GeneratedStream(
            (t.sse_event(event) async for event in events), functools.partial(finish.unsent, upstream, ctx)
        )
        return stream_response(sse, 200, "text/event-stream")
    result: dict[str, Any] = {}
    async for kind, data in events:
        if kind == "error":
            await events.aclose()
            return openai_error(502, data["error"]["message"], "upstream_error")
        if kind == "chat.end":
            result = data["result"]
    return JsonResponse(result)


async def _stored_chat(response_id: str | None, key: KeyInfo | None) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt and the messages of the conversation a `previous_response_id` names."""
    if not response_id:
        return "", []
    messages = await conversations.find("lmstudio", response_id, key.id if key else None)
    if messages is None:
        raise FaceError(404, f"no stored response '{response_id}'", "not_found", "previous_response_id")
    if messages and messages[0].get("role") == "system":
        return messages[0]["content"], messages[1:]
    return "", messages


class _Turn(NamedTuple):
    model: str
    messages: list[dict[str, Any]]  # up to this turn's user message, its system prompt first
    api_key_id: int | None
    store: bool


async def _chat_events(
    upstream: httpx.Response,
    ctx: RelayContext,
    chat: t.ChatEvents,
    load_seconds: float,
    turn: _Turn,
    finish: Any,
) -> AsyncIterator[t.Event]:
    """The runner's stream as `/api/v1/chat` events, the last one `chat.end` with the result (and
    its `response_id` once the conversation is kept). However it ends, the upstream is closed
    (which stops the generation) and the request is recorded; a stream that broke off ends with
    an `error` event and what was generated."""
    async with translated_stream(upstream, ctx, finish):
        for event in chat.opening(load_seconds):
            yield event
        async for chunk in runner_objects(upstream, ctx):
            if "error" in chunk:
                break
            for event in chat.feed(chunk):
                yield event
    for event in chat.closing():
        yield event
    if ctx.error:
        yield "error", {"type": "error", "error": {"type": "unknown", "message": ctx.error}}
    result = chat.result(ctx.meter)
    if turn.store and not ctx.error:
        result["response_id"] = response_id = "resp_" + secrets.token_hex(24)
        answer = {"role": "assistant", "content": chat.message}
        conversations.keep("lmstudio", response_id, turn.model, [*turn.messages, answer], turn.api_key_id)
    yield "chat.end", {"type": "chat.end", "result": result}
