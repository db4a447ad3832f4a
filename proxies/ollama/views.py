"""The Ollama face (11434): Ollama's `/api/*` backed by llama-server runners.

Chat and generate always stream from llama-server; the NDJSON writer turns each SSE chunk into
Ollama objects as it arrives (`stream: false` gathers them into one). Errors are `{"error": "..."}`
with Ollama's statuses.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from ninja import NinjaAPI
from ninja.errors import ValidationError as NinjaValidationError

from llamaproxy.http_errors import bad_request_with, method_not_allowed_with
from models_catalog import blobs
from proxies.catalog_view import ModelView, catalog_view
from proxies.gateway import (
    FaceError,
    acquire_runner,
    apply_preset_messages,
    apply_sampling_defaults,
    apply_system_default,
    authorize,
    context_size,
    finalizer,
    new_context,
    record,
    record_failure,
    resolve_model,
    runner_did_not_answer,
)
from proxies.keys import KeyInfo
from proxies.ollama import translate as t
from proxies.ollama.digest import digest_of
from proxies.relay import (
    GeneratedStream,
    RelayContext,
    open_upstream,
    runner_objects,
    stream_response,
    upstream_error_message,
)

NDJSON = "application/x-ndjson"
JSON_HEADERS = {"content-type": "application/json"}
Kind = Literal["chat", "generate"]

api = NinjaAPI(
    title="llamaproxy Ollama-compatible API",
    version="1",
    urls_namespace="ollama",
    docs_url=None,
    openapi_url=None,
)


def ollama_error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def face_error_response(exc: FaceError) -> JsonResponse:
    if exc.code == "model_not_found":
        name = exc.message.split("'")[1] if exc.message.count("'") >= 2 else ""
        return ollama_error(404, f'model "{name}" not found, try pulling it first')
    return ollama_error(exc.status, exc.message)


@api.exception_handler(NinjaValidationError)
def _ninja_validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    return ollama_error(400, "invalid request")


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """handler404 of port 11434 (Django calls it synchronously)."""
    return ollama_error(404, f"unknown endpoint {request.method} {request.path}")


def server_error(request: HttpRequest) -> JsonResponse:
    return ollama_error(500, "internal error in llamaproxy; see logs/gateway.log")


def _refusal(request: HttpRequest, status: int, message: str) -> JsonResponse:
    return ollama_error(status, message)


bad_request = bad_request_with(_refusal)  # handler400 of port 11434
method_not_allowed = method_not_allowed_with(_refusal)  # its handler405 (see llamaproxy/http_errors.py)


def root(request: HttpRequest) -> HttpResponse:
    """`GET|HEAD /`: what Ollama answers, and what clients probe for."""
    if request.method not in {"GET", "HEAD"}:
        return ollama_error(405, "method not allowed")
    body = b"" if request.method == "HEAD" else b"Ollama is running"
    response = HttpResponse(body, content_type="text/plain; charset=utf-8")
    response["Content-Length"] = str(len(b"Ollama is running"))
    return response


def read_json(request: HttpRequest) -> dict[str, Any]:
    if not request.body:
        raise FaceError(400, "missing request body")
    try:
        payload = json.loads(request.body)
    except ValueError as exc:
        raise FaceError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise FaceError(400, "the request body must be a JSON object")
    return payload


def parse(request: HttpRequest, schema: type) -> Any:
    try:
        return t.validate(schema, read_json(request))
    except t.TranslationError as exc:
        raise FaceError(400, str(exc)) from None


async def resolve(name: str, key: KeyInfo | None) -> ModelView:
    if not name:
        raise FaceError(400, "model is required")
    return await resolve_model(name, key)


# --- information -------------------------------------------------------------------------------


@api.get("/api/version", include_in_schema=False)
async def version(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"version": t.OLLAMA_VERSION})


def _listable(model: ModelView, key: KeyInfo | None) -> bool:
    return model.kind != "whisper" and (key is None or key.allows(model.name))


@api.get("/api/tags", include_in_schema=False)
async def tags(request: HttpRequest) -> HttpResponse:
    ctx = new_context(request, "tags")
    try:
        key = await authorize(request, ctx)
    except FaceError as exc:
        return face_error_response(exc)
    entries = []
    for model in await catalog_view.listed():
        if not _listable(model, key):
            continue
        digest = await digest_of(model)
        # Copies (`/api/copy`) are aliases: Ollama lists them as models of their own.
        entries += [t.tags_entry(model, name, digest) for name in (model.name, *model.aliases)]
    return JsonResponse({"models": entries})


@api.post("/api/show", include_in_schema=False)
async def show(request: HttpRequest) -> HttpResponse:
    ctx = new_context(request, "show")
    try:
        key = await authorize(request, ctx)
        parsed = parse(request, t.ModelRequest)
        model = await resolve(parsed.model_name, key)
    except FaceError as exc:
        return face_error_response(exc)
    return JsonResponse(t.show_response(model))


@api.get("/api/ps", include_in_schema=False)
async def ps(request: HttpRequest) -> HttpResponse:
    ctx = new_context(request, "ps")
    try:
        key = await authorize(request, ctx)
    except FaceError as exc:
        return face_error_response(exc)
    now = time.time()
    entries = []
    for runner in await scheduler_status():
        if runner.get("state") != "ready":
            continue
        model = await catalog_view.resolve(str(runner.get("model", "")))
        if model is None or not _listable(model, key):
            continue
        entries.append(t.ps_entry(model, model.name, await digest_of(model), runner, now))
    return JsonResponse({"models": entries})


async def scheduler_status() -> list[dict[str, Any]]:
    from runners import scheduler

    return list(await scheduler.status_async())


async def scheduler_unload(name: str) -> bool:
    from runners.scheduler import unload

    result = unload(name)
    return bool(await result if inspect.isawaitable(result) else result)


# --- chat and generate -------------------------------------------------------------------------


@api.post("/api/chat", include_in_schema=False)
async def chat(request: HttpRequest) -> HttpResponse:
    return await generate_like(request, "chat")


@api.post("/api/generate", include_in_schema=False)
async def generate(request: HttpRequest) -> HttpResponse:
    return await generate_like(request, "generate")


async def generate_like(request: HttpRequest, kind: Kind) -> HttpResponse:
    ctx = new_context(request, kind)
    try:
        key = await authorize(request, ctx)
        parsed = parse(request, t.ChatRequest if kind == "chat" else t.GenerateRequest)
        ctx.stream = parsed.stream is not False  # Ollama streams unless told not to
        model = await resolve(parsed.model_name, key)
        if "completion" not in model.capabilities:
            raise FaceError(400, f'"{parsed.model_name}" does not support {kind}')
        if kind == "generate" and parsed.suffix and "insert" not in model.capabilities:
            raise FaceError(400, f'"{parsed.model_name}" does not support insert')
        plan = t.chat_plan(parsed) if kind == "chat" else t.generate_plan(parsed)
        if _is_load_request(parsed, kind):
            return await load_or_unload(model, ctx, parsed.model_name, kind, plan)
        plan.body["model"] = model.name
        apply_sampling_defaults(
            plan.body, model, explicit=t.requested_sampling_fields(parsed.options), path=plan.path
        )
        if plan.render_messages is not None:
            # (rendered with the chat template into a raw prompt: the defaults go in first)
            rendered = {"messages": plan.render_messages}
            if presets := model.sampling.get("messages"):
                apply_preset_messages(rendered, presets, "/v1/chat/completions")
            if system := model.sampling.get("system"):
                apply_system_default(rendered, system, "/v1/chat/completions")
        if isinstance(plan.body.get("repeat_last_n"), int) and plan.body["repeat_last_n"] < 0:
            # Ollama's "-1 = the whole context"; llama-server's request field takes no -1.
            ctx_size = (plan.runner_params or {}).get("ctx_size") or context_size(model)
            plan.body["repeat_last_n"] = ctx_size or 64
        lease = await acquire_runner(model, ctx, ttl=plan.ttl, runner_params=plan.runner_params or None)
    except t.TranslationError as exc:
        return _refuse(ctx, FaceError(400, str(exc)))
    except FaceError as exc:
        return _refuse(ctx, exc)
    stream = t.OllamaStream(
        model=parsed.model_name,
        kind=kind,
        show_thinking=parsed.think is not False,
        top_logprobs=parsed.wanted_logprobs,
    )
    return await relay_ndjson(lease, ctx, plan, stream)


def _refuse(ctx: RelayContext, exc: FaceError) -> JsonResponse:
    record_failure(ctx, exc)
    return face_error_response(exc)


def _is_load_request(parsed: Any, kind: Kind) -> bool:
    if kind == "chat":
        return not parsed.messages
    return not parsed.prompt and not parsed.images


async def load_or_unload(
    model: ModelView, ctx: RelayContext, requested: str, kind: Kind, plan: t.UpstreamPlan
) -> HttpResponse:
    """An empty prompt loads the model; with keep_alive 0 it unloads it."""
    ctx.model = model.name
    if plan.ttl == 0:
        await scheduler_unload(model.name)
        ctx.status = 200
        record(ctx)
        return JsonResponse(t.load_object(requested, kind, time.time(), unloaded=True))
    lease = await acquire_runner(model, ctx, ttl=plan.ttl, runner_params=plan.runner_params or None)
    ctx.status = 200
    finalizer(lease)(ctx)
    return JsonResponse(t.load_object(requested, kind, time.time(), unloaded=False))


class UpstreamRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def open_plan(lease: Any, plan: t.UpstreamPlan) -> httpx.Response:
    """Send the plan, rendering its messages with the model's template first when it says so."""
    body = plan.body
    if plan.render_messages is not None:
        rendered = await _post_json(lease.base_url, "/apply-template", t.render_body(plan))
        body = t.with_rendered_prompt(plan, str(rendered.get("prompt", "")))
    upstream = await open_upstream(
        lease.base_url, "POST", plan.path, content=json.dumps(body).encode(), headers=JSON_HEADERS
    )
    if upstream.status_code >= 400:
        try:
            raw = await upstream.aread()
        finally:
            await upstream.aclose()
        raise UpstreamRefused(upstream.status_code, _error_text(raw))
    return upstream


async def _post_json(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    upstream = await open_upstream(
        base_url, "POST", path, content=json.dumps(body).encode(), headers=JSON_HEADERS
    )
    try:
        raw = await upstream.aread()
    finally:
        await upstream.aclose()
    if upstream.status_code >= 400:
        raise UpstreamRefused(upstream.status_code, _error_text(raw))
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise UpstreamRefused(502, f"the runner answered {path} with something that is not JSON") from None
    return parsed if isinstance(parsed, dict) else {}


def _error_text(raw: bytes) -> str:
    try:
        return upstream_error_message(json.loads(raw)) or raw.decode(errors="replace")
    except ValueError:
        return raw.decode(errors="replace")[:500]


def _client_status(upstream_status: int) -> int:
    """llama-server's 4xx are the client's fault; anything else is ours (Ollama says 500)."""
    return upstream_status if 400 <= upstream_status < 500 else 500


async def relay_ndjson(
    lease: Any, ctx: RelayContext, plan: t.UpstreamPlan, stream: t.OllamaStream
) -> HttpResponse:
    finish = finalizer(lease)
    try:
        upstream = await open_plan(lease, plan)
    except (httpx.HTTPError, UpstreamRefused) as exc:
        return _upstream_failed(exc, lease, ctx, finish)
    except asyncio.CancelledError:
        finish.abandoned(ctx)
        raise
    ctx.status = 200
    objects = translated_objects(upstream, ctx, stream, lease.load_seconds, finish)
    if ctx.stream:
        body = GeneratedStream(ndjson_lines(objects), functools.partial(finish.unsent, upstream, ctx))
        return stream_response(body, 200, NDJSON)
    collected = [obj async for obj in objects]
    if "error" in collected[-1]:
        return ollama_error(500, collected[-1]["error"])
    return JsonResponse(t.merge_objects(collected))


def _upstream_failed(exc: Exception, lease: Any, ctx: RelayContext, finish: Any) -> HttpResponse:
    """The runner refused the request or did not answer: recorded, the lease released, and
    the client told in Ollama's shape."""
    if isinstance(exc, UpstreamRefused):
        status, message = _client_status(exc.status), exc.message
    else:
        status, message = 502, runner_did_not_answer(lease.model, exc)
    ctx.status, ctx.error = status, message
    ctx.meter.finish()
    finish(ctx)
    return ollama_error(status, message)


async def translated_objects(
    upstream: httpx.Response, ctx: RelayContext, stream: t.OllamaStream, load_seconds: float, finish: Any
) -> AsyncIterator[dict[str, Any]]:
    """Ollama objects as llama-server's chunks arrive; the final `done` object last.

    `finally` closes the upstream response (a disconnected client cancels the generation) and
    releases the lease with the usage recorded.
    """
    try:
        async for chunk in runner_objects(upstream, ctx):
            if "error" in chunk:
                yield {"error": ctx.error}
                return
            for obj in stream.feed(chunk, time.time()):
                yield obj
        total_ns = int(ctx.meter.duration_ms * 1_000_000)
        yield stream.final(time.time(), total_ns, int(load_seconds * 1_000_000_000))
    except httpx.HTTPError as exc:
        ctx.error = f"upstream stream broke: {exc}"
        yield {"error": ctx.error}
    except BaseException:
        ctx.error = ctx.error or "client disconnected"
        if not ctx.stream:  # a whole answer: nothing of it was sent
            ctx.status = 499
        raise
    finally:
        await upstream.aclose()
        ctx.meter.finish()
        finish(ctx)


async def ndjson_lines(objects: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    async with aclosing(objects) as source:
        async for obj in source:
            yield json.dumps(obj, ensure_ascii=False).encode() + b"\n"


# --- embeddings --------------------------------------------------------------------------------


@api.post("/api/embed", include_in_schema=False)
async def embed(request: HttpRequest) -> HttpResponse:
    return await embed_like(request, legacy=False)


@api.post("/api/embeddings", include_in_schema=False)
async def embeddings(request: HttpRequest) -> HttpResponse:
    return await embed_like(request, legacy=True)


async def embed_like(request: HttpRequest, legacy: bool) -> HttpResponse:
    ctx = new_context(request, "embeddings" if legacy else "embed")
    try:
        key = await authorize(request, ctx)
        parsed = parse(request, t.EmbeddingsRequest if legacy else t.EmbedRequest)
        model = await resolve(parsed.model_name, key)
        if not supports_embeddings(model):
            raise FaceError(
                400,
                f'"{parsed.model_name}" does not support embeddings: '
                "turn on its `embeddings` parameter in the dashboard",
            )
        ttl = t.keep_alive_seconds(parsed.keep_alive)
        runner_params = t.split_options(parsed.options).runner_params or None
        body = {"input": [parsed.prompt]} if legacy else t.embed_body(parsed)
        lease = await acquire_runner(model, ctx, ttl=ttl, runner_params=runner_params, accepts="embedding")
    except t.TranslationError as exc:
        return _refuse(ctx, FaceError(400, str(exc)))
    except FaceError as exc:
        return _refuse(ctx, exc)
    inputs = body["input"]
    if not any(inputs):  # nothing to embed: the model is loaded, as Ollama does
        ctx.status = 200
        finalizer(lease)(ctx)
        return JsonResponse({"embedding": []} if legacy else {"model": parsed.model_name, "embeddings": []})
    result = await embed_call(lease, ctx, {**body, "model": model.name})
    if isinstance(result, HttpResponse):
        return result
    if legacy:
        data = result.get("data") or [{}]
        return JsonResponse({"embedding": data[0].get("embedding") or []})
    total_ns = int(ctx.meter.duration_ms * 1_000_000)
    return JsonResponse(
        t.embed_response(parsed.model_name, result, total_ns, int(lease.load_seconds * 1_000_000_000))
    )


def supports_embeddings(model: ModelView) -> bool:
    """llama-server serves embeddings only when started with --embeddings."""
    return (
        model.kind == "embedding"
        or "embedding" in model.capabilities
        or bool(model.parameters.get("embeddings"))
    )


async def embed_call(lease: Any, ctx: RelayContext, body: dict[str, Any]) -> dict[str, Any] | HttpResponse:
    finish = finalizer(lease)
    try:
        result = await _post_json(lease.base_url, "/v1/embeddings", body)
    except (httpx.HTTPError, UpstreamRefused) as exc:
        return _upstream_failed(exc, lease, ctx, finish)
    except asyncio.CancelledError:
        finish.abandoned(ctx)
        raise
    ctx.status = 200
    ctx.meter.mark_first_token()
    ctx.meter.observe(result)
    ctx.meter.finish()
    finish(ctx)
    return result


# --- model management --------------------------------------------------------------------------


def _untagged(name: str) -> str:
    return name.strip().removesuffix(":latest")


def catalog_refusal(exc: Any) -> FaceError:
    """A CatalogError as Ollama answers it: a name in use is a 400 there, not a 409."""
    return FaceError(400 if exc.status == 409 else exc.status, exc.message)


async def catalog_service(function_name: str, *args: Any) -> Any:
    """Call a `models_catalog.services` function; its CatalogError becomes an Ollama error."""
    from models_catalog import services
    from models_catalog.errors import CatalogError

    try:
        return await sync_to_async(getattr(services, function_name), thread_sensitive=False)(*args)
    except CatalogError as exc:
        raise catalog_refusal(exc) from None


@api.post("/api/copy", include_in_schema=False)
async def copy(request: HttpRequest) -> HttpResponse:
    """`ollama cp`: the destination becomes an alias of the source's catalog entry."""
    ctx = new_context(request, "copy")
    try:
        key = await authorize(request, ctx)
        parsed = parse(request, t.CopyRequest)
        source = await resolve(parsed.source, key)
        await catalog_service("add_alias", source.name, _untagged(parsed.destination))
    except FaceError as exc:
        return face_error_response(exc)
    return HttpResponse(status=200)


@api.delete("/api/delete", include_in_schema=False)
async def delete(request: HttpRequest) -> HttpResponse:
    """`ollama rm`: removes an alias, or the catalog entry; the model's file stays where it is
    (unless llamaproxy made it: a created model's blob, a download, once no entry uses it). The
    last alias of a downloaded model (the `hf.co/...` name it was pulled by) removes the model."""
    from models_catalog.downloads import is_download

    ctx = new_context(request, "delete")
    try:
        key = await authorize(request, ctx)
        parsed = parse(request, t.ModelRequest)
        model = await resolve(parsed.model_name, key)
        name = _untagged(parsed.model_name)
        alias = next(
            (a for a in model.aliases if a.lower() in (name.lower(), parsed.model_name.lower())), None
        )
        if alias is not None and not (list(model.aliases) == [alias] and is_download(model.path)):
            await catalog_service("remove_alias", model.name, alias)
        else:
            await scheduler_unload(model.name)
            await catalog_service("delete_model", model.name)
    except FaceError as exc:
        return face_error_response(exc)
    return HttpResponse(status=200)


NOT_BUILT = {
    "push": "pushing models is not supported by llamaproxy",
}


@api.post("/api/pull", include_in_schema=False)
async def pull(request: HttpRequest) -> HttpResponse:
    """`ollama pull`: a model in the catalog is there already (tools pull before use); a Hugging
    Face model (`hf.co/<user>/<repo>[:quantization]`) or one of Ollama's registry (`llama3.2:1b`)
    is downloaded by a job that this request follows, streaming Ollama's progress lines (see
    models_catalog/downloads.py)."""
    from models_catalog import downloads, hub, registry

    ctx = new_context(request, "pull")
    try:
        key = await authorize(request, ctx)
        parsed = parse(request, t.ModelRequest)
        requested = parsed.model_name
        if not requested:
            raise FaceError(400, "model is required")
        ref = hub.parse_reference(requested)
        reg = registry.parse_name(requested) if ref is None else None
        names = [requested, _untagged(requested)] + ([reg.name, reg.entry_name] if reg else [])
        here = None if ref is not None else await _pulled_already(names)
        if here is not None:
            await resolve(here, key)  # (a key limited to other models may not have it either)
            started: downloads.Job | str = here
        elif ref is None and reg is None:
            raise FaceError(400, f'invalid model name "{requested}"')
        elif key is not None and key.allowed_models:
            raise FaceError(403, "this API key is limited to some models: it may not pull others")
        elif ref is not None:
            started = await _hub_call(downloads.begin(ref, detached=False))
        else:
            assert reg is not None
            manifest, contents = await _hub_call(downloads.registry_manifest(reg))
            params, system, messages = registry.settings_from_layers(contents)
            runner_params, sampling = t.pulled_settings(params, system, messages)
            plan = downloads.registry_plan(reg, manifest, runner_params, sampling)
            started = await _hub_call(downloads.begin_plan(plan, detached=False))
    except FaceError as exc:
        return face_error_response(exc)
    steps = _pull_steps(started) if isinstance(started, downloads.Job) else _pulled()
    return await _create_response(steps, stream=parsed.stream is not False)


async def _pulled_already(names: list[str]) -> str | None:
    """The catalog entry one of `names` is (exactly, in any case), if its file is here."""
    from models_catalog.downloads import aliased_entry

    for name in dict.fromkeys(n for n in names if n):
        found = await sync_to_async(aliased_entry, thread_sensitive=False)(name)
        if found is not None:
            return found
    return None


async def _hub_call(call: Any) -> Any:
    """Await a models_catalog.downloads call; its HubError or CatalogError becomes an Ollama error."""
    from models_catalog.errors import CatalogError
    from models_catalog.hub import HubError

    try:
        return await call
    except HubError as exc:
        raise FaceError(exc.status, exc.message) from None
    except CatalogError as exc:
        raise catalog_refusal(exc) from None


async def _pulled() -> AsyncIterator[dict[str, Any]]:
    yield {"status": "pulling manifest"}
    yield {"status": "success"}


PULL_LINE_SECONDS = 0.25  # progress lines, at most this often


async def _pull_steps(job: Any) -> AsyncIterator[dict[str, Any]]:
    """Ollama's pull lines for a download job: one per file ("layer") with `digest`, `total` and
    `completed` as it moves, then the closing statuses; a failure is raised as its FaceError."""
    from models_catalog import downloads

    yield {"status": "pulling manifest"}
    sent: dict[int, int] = {}
    async with downloads.following(job):
        while True:
            for index, progress in enumerate(job.files):
                if sent.get(index) != progress.done and (progress.done or index not in sent):
                    sent[index] = progress.done
                    digest = progress.file.sha256 or hashlib.sha256(progress.file.path.encode()).hexdigest()
                    yield {
                        "status": f"pulling {digest[:12]}",
                        "digest": f"sha256:{digest}",
                        "total": progress.file.size,
                        "completed": progress.done,
                    }
            if job.finished:
                break
            await job.changed(timeout=5)
            await asyncio.sleep(PULL_LINE_SECONDS)
    if job.status != "completed":
        raise FaceError(job.error_status or 500, job.error or job.status)
    yield {"status": "verifying sha256 digest"}
    yield {"status": "writing manifest"}
    yield {"status": "success"}


@api.post("/api/push", include_in_schema=False)
async def push(request: HttpRequest) -> HttpResponse:
    return ollama_error(501, NOT_BUILT["push"])


@api.api_operation(["HEAD"], "/api/blobs/{digest}", include_in_schema=False)
async def blob_exists(request: HttpRequest, digest: str) -> HttpResponse:
    """200 when the blob was uploaded (or a model created from it still has it) or a model file
    in the catalog has that digest, else 404."""
    ctx = new_context(request, "blobs")
    try:
        await authorize(request, ctx)
        path = await _blob_call(blobs.find_blob, digest)
    except FaceError as exc:
        return face_error_response(exc)
    return HttpResponse(status=200 if path is not None else 404)


@api.post("/api/blobs/{digest}", include_in_schema=False)
async def blob_upload(request: HttpRequest, digest: str) -> HttpResponse:
    """Take an upload whose sha256 is `digest` (201); another content is a 400 and is not kept."""
    ctx = new_context(request, "blobs")
    try:
        await authorize(request, ctx)
        await _blob_call(blobs.store_blob, request, digest)
    except FaceError as exc:
        return face_error_response(exc)
    return HttpResponse(status=201)


async def _blob_call(function: Callable[..., Any], *args: Any) -> Any:
    """A models_catalog.blobs function (file and database work: in a thread); its BlobError
    becomes the Ollama error it describes."""
    try:
        return await sync_to_async(function, thread_sensitive=False)(*args)
    except blobs.BlobError as exc:
        raise FaceError(exc.status, exc.message) from None


@api.post("/api/create", include_in_schema=False)
async def create(request: HttpRequest) -> HttpResponse:
    """`ollama create`. From an existing model (`from`): a variant of its catalog entry (the same
    file) with the Modelfile's parameters (and SYSTEM) over the entry's own runner settings and
    sampling defaults. From an uploaded GGUF (`files`, see models_catalog/blobs.py): an entry
    whose file is the blob. With `quantize`, either file is quantized first (see
    models_catalog/quantize.py) and the entry's file is the result. Creating over a model made
    so replaces it, as Ollama does."""
    ctx = new_context(request, "create")
    try:
        key = await authorize(request, ctx)
        parsed = parse(request, t.CreateRequest)
        name = _untagged(parsed.model_name)
        if not name:
            raise FaceError(400, "model is required")
        if bool(parsed.from_) == bool(parsed.files):
            raise FaceError(400, "from: give the model to create from, or the GGUF file's blob in files")
        try:
            runner_params, sampling = t.create_settings(parsed)
            adapter_digests = t.create_adapters(parsed)
        except t.TranslationError as exc:
            raise FaceError(400, str(exc)) from None
        adapters = [str(await _blob_call(blobs.adapter_file, digest)) for digest in adapter_digests]
        if parsed.quantize not in (None, ""):
            plan = await _quantize_plan(parsed, name, key)
            made = _create_quantized(plan, runner_params, sampling, adapters)
            steps = _create_steps(parsed, made, adapters)
            return await _create_response(steps, stream=parsed.stream is not False)
        if parsed.files:
            file_name, blob = await _blob_call(blobs.gguf_file, parsed.files)
            uploaded = blobs.is_blob(blob)
            source = f"the uploaded {file_name}" if uploaded else f"{blob}, already here"
            digest = "sha256:" + blob.name.removeprefix("sha256-") if uploaded else ""
            created = await catalog_service(
                "create_from_file", name, str(blob), runner_params, sampling, digest, adapters
            )
        else:
            base = await resolve(parsed.from_, key)
            if base.kind == "whisper":
                raise FaceError(400, f'"{parsed.from_}" is a speech-to-text model')
            source = f"the file of {base.name}"
            created = await catalog_service(
                "create_variant", base.name, name, runner_params, sampling, adapters
            )
        replaced = created[1]
        if replaced is not None:
            await scheduler_unload(name)  # its runner ran with what was replaced
    except FaceError as exc:
        return face_error_response(exc)
    return await _create_response(
        _create_steps(parsed, _made(source), adapters), stream=parsed.stream is not False
    )


async def _made(source: str) -> AsyncIterator[dict[str, Any]]:
    yield {"status": f"using {source}"}


def _create_steps(
    parsed: t.CreateRequest, made: AsyncIterator[dict[str, Any]], adapters: list[str]
) -> AsyncIterator[dict[str, Any]]:
    """`ollama create`'s status lines: notices, how the model's file was made, its adapters, success."""

    async def steps() -> AsyncIterator[dict[str, Any]]:
        for notice in t.create_notices(parsed):
            yield {"status": notice}
        async with aclosing(made) as making:
            async for step in making:
                yield step
        for adapter in adapters:
            yield {"status": f"using the LoRA adapter {Path(adapter).name}"}
        yield {"status": "writing runner settings"}
        yield {"status": "success"}

    return steps()


async def _create_response(steps: AsyncIterator[dict[str, Any]], *, stream: bool) -> HttpResponse:
    """Streamed: each status line as it comes (a failure midway is an `error` line, as Ollama
    sends); not streamed: the last one, or the failure with its status."""
    if not stream:
        last: dict[str, Any] = {}
        try:
            async with aclosing(steps) as running:
                async for step in running:
                    last = step
        except FaceError as exc:
            return face_error_response(exc)
        return JsonResponse(last)

    async def lines() -> AsyncIterator[bytes]:
        try:
            async with aclosing(steps) as running:
                async for step in running:
                    yield json.dumps(step).encode() + b"\n"
        except FaceError as exc:
            yield json.dumps({"error": exc.message}).encode() + b"\n"

    return StreamingHttpResponse(lines(), content_type=NDJSON)


@dataclass(frozen=True)
class QuantizePlan:
    name: str
    wanted: str  # the type, as llama-quantize names it
    source: Path
    source_type: str  # F32, F16 or BF16
    settings_from: str | None  # the model it is made from, whose settings it starts with


async def _quantize_plan(parsed: t.CreateRequest, name: str, key: KeyInfo | None) -> QuantizePlan:
    """What `quantize` asks for, checked before any work: the type, a source file that is not
    quantized yet, a name the new model may take."""
    from models_catalog.quantize import QuantizeError, check_source, file_type_of, quantize_type

    try:
        wanted = quantize_type(parsed.quantize or "")
        if parsed.files:
            file_name, source = await _blob_call(blobs.gguf_file, parsed.files)
            file_type = await sync_to_async(file_type_of, thread_sensitive=False)(source)
            source_type, settings_from = check_source(file_name, file_type), None
        else:
            base = await resolve(parsed.from_ or "", key)
            if base.kind == "whisper":
                raise FaceError(400, f'"{parsed.from_}" is a speech-to-text model')
            source, source_type, settings_from = (
                Path(base.path),
                check_source(base.name, base.file_type),
                base.name,
            )
    except QuantizeError as exc:
        raise FaceError(exc.status, exc.message) from None
    await catalog_service("check_creatable_name", name)
    return QuantizePlan(name, wanted, source, source_type, settings_from)


async def _create_quantized(
    plan: QuantizePlan, runner_params: dict[str, Any], sampling: dict[str, Any], adapters: list[str]
) -> AsyncIterator[dict[str, Any]]:
    """Quantize, reporting progress per tensor as Ollama's CLI shows it, then make the entry."""
    from models_catalog.errors import CatalogError
    from models_catalog.quantize import Made, QuantizeError, quantized_model

    status = f"quantizing {plan.source_type} model to {plan.wanted}"
    yield {"status": status}
    making = quantized_model(
        plan.name,
        plan.source,
        plan.wanted,
        parameters=runner_params,
        sampling=sampling,
        adapters=adapters,
        settings_from=plan.settings_from,
    )
    try:
        async with aclosing(making) as running:
            async for event in running:
                if not isinstance(event, Made):
                    yield {"status": status, "digest": "0", "total": event.total, "completed": event.done}
                    continue
                if event.replaced:
                    await scheduler_unload(plan.name)  # its runner ran with what was replaced
                yield {"status": f"using the quantized file {event.digest}"}
    except QuantizeError as exc:
        raise FaceError(exc.status, exc.message) from None
    except CatalogError as exc:
        raise catalog_refusal(exc) from None
