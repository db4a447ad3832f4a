"""OpenAI's `/v1/completions` with a `suffix`: code completion between the prompt and the suffix.

llama-server's own `/v1/completions` ignores `suffix` and would continue the prompt as if the
rest of the file were not there. Here such a request goes to its `/infill`, which lays the
prefix and suffix out with the model's fill-in-the-middle tokens, and the answer (whole or
streamed) comes back as OpenAI's `text_completion` objects, with `usage` and llama-server's
`timings`. A model without those tokens gets llama-server's own refusal (501), as from /infill.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from django.http import HttpRequest, HttpResponse, JsonResponse

from proxies.accounting import native_finish_reason, native_usage
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
from proxies.openai_schemas import CompletionRequest
from proxies.relay import (
    GeneratedStream,
    RelayContext,
    open_upstream,
    passthrough,
    runner_objects,
    stream_response,
    translated_stream,
)
from proxies.sse import parse_json_payload

JSON_HEADERS = {"content-type": "application/json"}
# What OpenAI's completions take that /infill has no use for (or would misread).
DROPPED_FIELDS = ("prompt", "suffix", "stream_options", "echo", "best_of", "n")


def wants_infill(request: HttpRequest) -> bool:
    """Cheap and exact enough for the hot path: only a body that mentions `suffix` is parsed
    here; one whose suffix turns out empty or null goes the ordinary way after all."""
    return b'"suffix"' in request.body


@dataclass(frozen=True)
class Head:
    """What every object of one answer repeats."""

    id: str
    created: int
    model: str


async def infill_completion(
    request: HttpRequest, fallback: Callable[[HttpRequest], Awaitable[HttpResponse]]
) -> HttpResponse:
    from proxies.openai_face import face_error_response, openai_error, parse_body

    ctx = new_context(request, "completions")
    try:
        key = await authorize(request, ctx)
        payload, parsed = parse_body(request, CompletionRequest)
        suffix = payload.get("suffix")
        if suffix is None or suffix == "":
            return await fallback(request)
        if not isinstance(suffix, str):
            raise FaceError(400, "suffix: must be a string", param="suffix")
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise FaceError(400, "prompt: with a suffix, the prompt must be one text", param="prompt")
        ctx.stream = bool(payload.get("stream"))
        model = await resolve_model(parsed.model, key)
        apply_sampling_defaults(payload, model)
        body = {name: value for name, value in payload.items() if name not in DROPPED_FIELDS}
        body.update(model=model.name, input_prefix=prompt, input_suffix=suffix, stream=ctx.stream)
        lease = await acquire_runner(model, ctx)
    except FaceError as exc:
        record_failure(ctx, exc)
        return face_error_response(exc)
    head = Head(f"cmpl-{uuid.uuid4().hex}", int(time.time()), model.name)
    finish = finalizer(lease)
    try:
        upstream = await open_upstream(
            lease.base_url, "POST", "/infill", content=json.dumps(body).encode(), headers=JSON_HEADERS
        )
        if upstream.status_code >= 400:  # llama-server's refusal, as it gave it
            return await passthrough(upstream, ctx, finish)
        ctx.status = upstream.status_code
        if ctx.stream:
            events = GeneratedStream(
                completion_events(upstream, ctx, finish, head),
                functools.partial(finish.unsent, upstream, ctx),
            )
            return stream_response(events, 200, "text/event-stream")
        try:
            raw = await upstream.aread()
        finally:
            await upstream.aclose()
        native = parse_json_payload(raw)
        if native is None:
            raise httpx.DecodingError("its /infill answer is not a JSON object")
        ctx.meter.mark_first_token()
        ctx.meter.observe(native)
        ctx.meter.finish()
        finish(ctx)
        return JsonResponse(completion_object(native, head))
    except httpx.HTTPError as exc:
        finish.failed(ctx, exc)
        return openai_error(502, ctx.error, "upstream_error")
    except asyncio.CancelledError:
        finish.abandoned(ctx)
        raise


def completion_object(native: dict[str, Any], head: Head, *, chunk: bool = False) -> dict[str, Any]:
    """One of llama-server's native answers (or stream pieces) as OpenAI's text_completion."""
    done = native_finish_reason(native)
    answer: dict[str, Any] = {
        "id": head.id,
        "object": "text_completion",
        "created": head.created,
        "model": head.model,
        "choices": [
            {
                "text": native.get("content") or "",
                "index": 0,
                "logprobs": None,
                "finish_reason": done if done or not chunk else None,
            }
        ],
    }
    if done or not chunk:
        answer["usage"] = native_usage(native)
        if isinstance(native.get("timings"), dict):
            answer["timings"] = native["timings"]
    return answer


async def completion_events(
    upstream: httpx.Response, ctx: RelayContext, finish: Any, head: Head
) -> AsyncIterator[bytes]:
    """/infill's stream as OpenAI's completion chunks, then `[DONE]`. Closing the upstream
    (in `finally`, also when the client goes away) stops the generation."""
    async with translated_stream(upstream, ctx, finish):
        async for native in runner_objects(upstream, ctx):
            if "error" in native:
                yield b"data: " + json.dumps({"error": native["error"]}).encode() + b"\n\n"
                return
            if native.get("content") or native.get("stop"):
                chunk = completion_object(native, head, chunk=True)
                yield b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
