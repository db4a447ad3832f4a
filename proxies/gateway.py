"""What every face does around the relay: authenticate, resolve the model, lease a runner,
and, when the response ends, release the lease and record usage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from django.http import HttpRequest

from models_catalog.parameters import SAMPLING_PARAMS
from proxies.catalog_view import ModelView, catalog_view, default_model_name
from proxies.keys import KeyInfo, KeyRejected, authenticate, check_model_allowed
from proxies.relay import RelayContext
from proxies.usage import usage_writer
from runners.errors import SchedulerError, file_problem

if TYPE_CHECKING:
    from runners.scheduler import Lease


@dataclass
class FaceError(Exception):
    """A client-facing failure; each face renders it in its own shape."""

    status: int
    message: str
    code: str = "invalid_request_error"
    param: str | None = None

    def __str__(self) -> str:
        return self.message


def client_address(request: HttpRequest) -> str:
    return request.META.get("REMOTE_ADDR", "") or ""


def new_context(request: HttpRequest, endpoint: str) -> RelayContext:
    return RelayContext(
        face=getattr(request, "face", "api"), endpoint=endpoint, client_address=client_address(request)
    )


def key_headers(request: HttpRequest) -> dict[str, str]:
    """The two headers a key may come in, read from META (Django's `request.headers` would build
    a mapping of every header, for each request)."""
    meta = request.META
    return {"authorization": meta.get("HTTP_AUTHORIZATION", ""), "x-api-key": meta.get("HTTP_X_API_KEY", "")}


async def authorize(request: HttpRequest, ctx: RelayContext) -> KeyInfo | None:
    try:
        info = await authenticate(key_headers(request))
    except KeyRejected as exc:
        raise FaceError(
            exc.status, exc.message, "invalid_api_key" if exc.status == 401 else "permission_denied"
        ) from None
    ctx.api_key_id = info.id if info else None
    return info


async def resolve_model(requested: str | None, key: KeyInfo | None) -> ModelView:
    name = requested or default_model_name()
    if not name:
        raise FaceError(400, "you must provide a model parameter", param="model")
    model = await catalog_view.resolve(name)
    if model is None:
        raise FaceError(404, f"model '{name}' not found", "model_not_found", "model")
    try:
        check_model_allowed(key, model.name)
    except KeyRejected as exc:
        raise FaceError(exc.status, exc.message, "permission_denied", "model") from None
    if not model.enabled:
        raise FaceError(403, f"model '{model.name}' is disabled", "model_disabled", "model")
    if model.state != "available":
        raise FaceError(
            503,
            f"model '{model.name}' is not available: {file_problem(model.state, model.error)}",
            "model_unavailable",
            "model",
        )
    return model


# The request fields a sampling default fills, first the one it is written to; a request that sets
# any of them keeps its own value. llama-server reads `max_tokens`, `max_completion_tokens` and
# `n_predict` as one field on both /v1/chat/completions and /v1/completions; the Responses API's
# `max_output_tokens` becomes `max_tokens` there.
SAMPLING_FIELDS: dict[str, tuple[str, ...]] = {
    "max_tokens": ("max_tokens", "max_completion_tokens", "n_predict", "max_output_tokens"),
    "stop": ("stop", "stop_sequences"),
}
# Counts where llama.cpp's command line reads -1 as "the context size", which requests cannot say.
CONTEXT_WHEN_NEGATIVE = frozenset({"repeat_last_n", "dry_penalty_last_n"})


def apply_sampling_defaults(
    payload: dict[str, Any], model: ModelView, *, explicit: Iterable[str] = (), path: str = ""
) -> bool:
    """Fill the model's sampling defaults (its RunnerSettings.sampling) into an OpenAI-style
    generation request (chat/completions or completions) wherever the request leaves them unset
    (absent or null). `explicit` names fields the client did set although the body lacks them
    (Ollama's `num_predict: -1`). `path`, the runner's endpoint, says where a default system
    prompt goes (see `apply_system_default`). True when the payload changed."""
    explicit = set(explicit)
    changed = False
    for name, value in model.sampling.items():
        if name not in SAMPLING_PARAMS or value is None:
            continue
        if name == "system":
            changed = apply_system_default(payload, value, path) or changed
            continue
        if name == "messages":
            changed = apply_preset_messages(payload, value, path) or changed
            continue
        fields = SAMPLING_FIELDS.get(name, (name,))
        if any(payload.get(field) is not None or field in explicit for field in fields):
            continue
        if name in CONTEXT_WHEN_NEGATIVE and value < 0:
            value = context_size(model)  # llama.cpp's "-1 = the context", which requests cannot say
            if value is None:
                continue
        if name == "stop":  # a list: the request gets its own copy
            payload["stop_sequences" if conversation_shape(path) == "messages" else "stop"] = list(value)
        else:
            payload[fields[0]] = value
        changed = True
    return changed


def conversation_shape(path: str) -> str | None:
    """How the runner's endpoint `path` (or its token count, `.../input_tokens`,
    `/v1/messages/count_tokens`) holds a conversation: "chat" (OpenAI's `messages`), "messages"
    (Anthropic's, with `system` apart and `stop_sequences`), "responses" (the Responses API's
    `input` and `instructions`); None for raw completions and infill, which have none."""
    path = path.removesuffix("/input_tokens").removesuffix("/count_tokens")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/v1/messages"):
        return "messages"
    if path.endswith("/v1/responses"):
        return "responses"
    return None


SYSTEM_ROLES = ("system", "developer")


def apply_system_default(payload: dict[str, Any], system: str, path: str) -> bool:
    """Give a request that brings no system prompt of its own the model's default (Ollama's
    Modelfile SYSTEM), in the shape of the runner's endpoint `path`: a first `system` message
    of a chat, Anthropic's `system`, the Responses API's `instructions`; their token counts
    (`.../input_tokens`, `/v1/messages/count_tokens`) count it as well. Raw completions have no
    place for one. True when the payload changed."""
    shape = conversation_shape(path)

    def has_system(items: Any) -> bool:
        return not isinstance(items, list) or any(
            isinstance(item, dict) and item.get("role") in SYSTEM_ROLES for item in items
        )

    if shape == "chat":
        if has_system(payload.get("messages")):
            return False
        payload["messages"].insert(0, {"role": "system", "content": system})
        return True
    if shape == "messages":
        if payload.get("system"):
            return False
        payload["system"] = system
        return True
    if shape == "responses":
        items = payload.get("input")
        if payload.get("instructions") or (isinstance(items, list) and has_system(items)):
            return False
        payload["instructions"] = system
        return True
    return False


def apply_preset_messages(payload: dict[str, Any], presets: list[dict[str, str]], path: str) -> bool:
    """Begin a conversation with the model's preset messages (Ollama's Modelfile MESSAGE lines),
    after the request's own leading system messages, in the shape of the runner's endpoint `path`:
    chat messages, Anthropic's `messages` (its user and assistant turns: a system prompt is not a
    message there), the Responses API's `input`. True when the payload changed."""
    shape = conversation_shape(path)
    if shape == "messages":
        presets = [m for m in presets if m["role"] != "system"]
    if not presets or shape is None:  # (raw completions and infill: no conversation)
        return False
    key = "input" if shape == "responses" else "messages"
    if shape == "responses" and isinstance(payload.get(key), str):
        payload[key] = [{"role": "user", "content": payload[key]}]
    items = payload.get(key)
    if not isinstance(items, list):
        return False
    start = 0
    while start < len(items) and isinstance(items[start], dict) and items[start].get("role") in SYSTEM_ROLES:
        start += 1
    items[start:start] = [dict(m) for m in presets]
    return True


def context_size(model: ModelView) -> int | None:
    """The context the model's runner runs with (its ctx_size setting, else the model's own)."""
    ctx_size = model.parameters.get("ctx_size")
    return int(ctx_size) if ctx_size else model.context_length


async def acquire_runner(
    model: ModelView,
    ctx: RelayContext,
    *,
    ttl: int | None = None,
    runner_params: dict | None = None,
    accepts: str = "text",
) -> Lease:
    """A lease on the model's runner; `accepts` says which kinds fit the endpoint
    ("text" for chat/completions, "embedding" for a face's embeddings, "audio" for
    transcriptions, "any" for raw access)."""
    from runners.arguments import pools_by_rank
    from runners.scheduler import acquire

    ctx.model = model.name
    is_whisper = model.kind == "whisper"
    if accepts in ("text", "embedding") and is_whisper:
        raise FaceError(
            400,
            f"model '{model.name}' is a whisper (speech-to-text) model; use /v1/audio/transcriptions",
            "model_not_supported",
            "model",
        )
    if accepts == "audio" and not is_whisper:
        raise FaceError(
            400, f"model '{model.name}' is not a speech-to-text model", "model_not_supported", "model"
        )
    if accepts == "embedding" and pools_by_rank(
        model, {**model.parameters, **(runner_params or {})}, model.extra_args
    ):
        raise FaceError(
            400,
            f"model '{model.name}' is a reranker: it scores documents on /v1/rerank and has no "
            "embeddings (set its `pooling` parameter to use it as an embedding model)",
            "model_not_supported",
            "model",
        )
    try:
        return await acquire(model.name, ttl=ttl, runner_params=runner_params)
    except SchedulerError as exc:
        ctx.status = exc.status
        ctx.error = exc.message
        record(ctx)
        raise FaceError(exc.status, exc.message, exc.code) from None
    except asyncio.CancelledError:  # the client gave up waiting for the model
        mark_abandoned(ctx, "client disconnected while waiting for the model")
        record(ctx)
        raise


def record(ctx: RelayContext, load_seconds: float = 0.0) -> None:
    """Usage row and metrics (made a batch at a time, off the request path: see proxies/usage.py)."""
    usage_writer.record(ctx, load_seconds)


def mark_abandoned(ctx: RelayContext, error: str = "client disconnected") -> None:
    """The client went away before anything of its answer was sent (its request was cancelled)."""
    ctx.status, ctx.error = 499, error
    ctx.meter.finish()


def runner_did_not_answer(model: str, exc: Exception) -> str:
    return f"the runner for '{model}' did not answer: {exc or type(exc).__name__}"


class Finish:
    """Ends a leased request, once: releases the lease and records the request's usage."""

    __slots__ = ("_lease", "done")

    def __init__(self, lease: Lease) -> None:
        self._lease = lease
        self.done = False

    def __call__(self, ctx: RelayContext) -> None:
        if self.done:
            return
        self.done = True
        self._lease.release()
        record(ctx, self._lease.load_seconds)

    def abandoned(self, ctx: RelayContext) -> None:
        """The client went away before its answer was relayed (its request task was cancelled)."""
        if self.done:
            return
        mark_abandoned(ctx)
        self(ctx)

    async def unsent(self, upstream: httpx.Response, ctx: RelayContext) -> None:
        """A streamed answer dropped before any of it was sent (see relay.GeneratedStream):
        the upstream is closed, which ends the generation, and the request is abandoned."""
        await upstream.aclose()
        self.abandoned(ctx)

    def failed(self, ctx: RelayContext, exc: Exception) -> None:
        """The runner did not answer (or broke off its answer): 502."""
        ctx.status, ctx.error = 502, runner_did_not_answer(self._lease.model, exc)
        self(ctx)


def finalizer(lease: Lease) -> Finish:
    return Finish(lease)


def record_failure(ctx: RelayContext, error: FaceError) -> None:
    """Requests refused before reaching a runner are part of the history too."""
    if ctx.status:  # already recorded (acquire failures)
        return
    ctx.status = error.status
    ctx.error = error.message
    record(ctx)
