"""LM Studio's REST shapes from catalog views, runner states and llama-server responses.

Pure functions: `/api/v0/*` model objects and the `stats` / `model_info` / `runtime` that LM Studio
adds to OpenAI responses, `/api/v1/models` entries, and the load request's config as runner
parameters.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from proxies.openai_schemas import first_error

RUNTIME = {"name": "llama.cpp-llamaproxy", "version": "1.0.0", "supported_formats": ["gguf"]}

# llama-server's finish_reason → LM Studio's stop_reason.
STOP_REASONS = {
    "stop": "eosFound",
    "length": "maxPredictedTokensReached",
    "tool_calls": "toolCalls",
    "content_filter": "userStopped",
}


class TranslationError(ValueError):
    """Bad input, in words a user can act on (rendered as an OpenAI-style 400)."""


def validate(schema: type[BaseModel], payload: dict[str, Any]) -> Any:
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        name, message = first_error(exc)
        raise TranslationError(f"{name}: {message}" if name else message) from None


# --- models -------------------------------------------------------------------------------------


def model_type_v0(model: Any) -> str:
    if model.kind == "embedding" or "embedding" in model.capabilities:
        return "embeddings"
    return "vlm" if "vision" in model.capabilities else "llm"


def publisher(model: Any) -> str:
    metadata = model.metadata or {}
    for key in ("general.organization", "general.author", "general.quantized_by"):
        value = metadata.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return "local"


def is_loaded(runner: dict[str, Any]) -> bool:
    return runner.get("state") == "ready"


def context_length(model: Any, runner: dict[str, Any]) -> int | None:
    return runner.get("context_length") or model.context_length


def model_v0(model: Any, runner: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": model.name,
        "object": "model",
        "type": model_type_v0(model),
        "publisher": publisher(model),
        "arch": model.architecture or "unknown",
        "compatibility_type": "gguf",
        "quantization": model.quantization or "unknown",
        "state": "loaded" if is_loaded(runner) else "not-loaded",
        "max_context_length": model.context_length or 0,
    }
    if is_loaded(runner):
        entry["loaded_context_length"] = context_length(model, runner)
    return entry


_BITS = re.compile(r"(\d+)")


def bits_per_weight(model: Any) -> float | None:
    """From the quantization name (Q4_K_M → 4, F16 → 16), else measured from the file."""
    match = _BITS.search(model.quantization or "")
    if match:
        return int(match.group(1))
    if model.parameter_count and model.size_bytes:
        return round(model.size_bytes * 8 / model.parameter_count, 2)
    return None


def params_string(model: Any) -> str | None:
    if model.size_label:
        return model.size_label
    count = model.parameter_count
    if not count:
        return None
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g}{unit}"
    return str(count)


def model_v1(model: Any, runner: dict[str, Any]) -> dict[str, Any]:
    embedding = model_type_v0(model) == "embeddings"
    entry: dict[str, Any] = {
        "type": "embedding" if embedding else "llm",
        "publisher": publisher(model),
        "key": model.name,
        "display_name": model.display_name or model.name,
        "architecture": model.architecture or None,
        "quantization": {"name": model.quantization or None, "bits_per_weight": bits_per_weight(model)},
        "size_bytes": model.size_bytes,
        "params_string": params_string(model),
        "loaded_instances": [instance(model, runner)] if is_loaded(runner) else [],
        "max_context_length": model.context_length or 0,
        "format": "gguf",
    }
    if not embedding:
        entry["capabilities"] = {
            "vision": "vision" in model.capabilities,
            "trained_for_tool_use": "tools" in model.capabilities,
        }
        entry["description"] = None
    return entry


def instance(model: Any, runner: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"context_length": context_length(model, runner)}
    parameters = runner.get("parameters") or {}
    if "batch_size" in parameters:
        config["eval_batch_size"] = parameters["batch_size"]
    return {"id": model.name, "config": config}


# --- responses ------------------------------------------------------------------------------------


def stats(timings: dict[str, Any], finish_reason: str | None, ttft_seconds: float | None) -> dict[str, Any]:
    predicted_ms = _number(timings.get("predicted_ms"))
    prompt_ms = _number(timings.get("prompt_ms"))
    first_token = (
        ttft_seconds if ttft_seconds is not None else (prompt_ms / 1000 if prompt_ms is not None else 0.0)
    )
    return {
        "tokens_per_second": _number(timings.get("predicted_per_second")) or 0.0,
        "time_to_first_token": round(first_token, 4),
        "generation_time": round((predicted_ms or 0.0) / 1000, 4),
        "stop_reason": STOP_REASONS.get(finish_reason or "stop", "eosFound"),
    }


def model_info(model: Any, runner: dict[str, Any]) -> dict[str, Any]:
    return {
        "arch": model.architecture or "unknown",
        "quant": model.quantization or "unknown",
        "format": "gguf",
        "context_length": context_length(model, runner) or 0,
    }


def finish_reason_of(body: dict[str, Any]) -> str | None:
    for choice in body.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return str(choice["finish_reason"])
    return None


def enrich(
    body: dict[str, Any],
    model: Any,
    runner: dict[str, Any],
    ttft_seconds: float | None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """An OpenAI response (or a stream's last chunk) as LM Studio's v0 API answers it."""
    enriched = {key: value for key, value in body.items() if key != "timings"}
    timings = body.get("timings") if isinstance(body.get("timings"), dict) else {}
    enriched["stats"] = stats(timings, finish_reason or finish_reason_of(body), ttft_seconds)
    enriched["model_info"] = model_info(model, runner)
    enriched["runtime"] = RUNTIME
    return enriched


# --- requests -----------------------------------------------------------------------------------


def pop_ttl(payload: dict[str, Any]) -> int | None:
    """LM Studio's request-level `ttl` (idle seconds before unload); -1 keeps it loaded."""
    if "ttl" not in payload:
        return None
    value = payload.pop("ttl")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
        raise TranslationError("ttl must be a whole number of seconds")
    seconds = int(value)
    return -1 if seconds < 0 else seconds


class LoadConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    context_length: int | None = Field(default=None, ge=1)
    eval_batch_size: int | None = Field(default=None, ge=1)
    flash_attention: StrictBool | None = None
    num_experts: int | None = Field(default=None, ge=0)
    offload_kv_cache_to_gpu: StrictBool | None = None
    gpu_layers: int | None = None
    threads: int | None = Field(default=None, ge=1)


class LoadRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1)
    config: LoadConfig | None = None
    ttl: int | None = None
    # Older docs and some clients put the config fields at the top level.
    context_length: int | None = Field(default=None, ge=1)


class DownloadRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1)
    quantization: StrictStr | None = None


class UnloadRequest(BaseModel):
    instance_id: StrictStr = Field(min_length=1)


def runner_params(request: LoadRequest) -> dict[str, int]:
    """LM Studio load config → the scheduler's runner parameters (a different value restarts)."""
    config = request.config or LoadConfig()
    params: dict[str, int] = {}
    context = config.context_length or request.context_length
    if context:
        params["ctx_size"] = context
    if config.eval_batch_size:
        params["batch_size"] = config.eval_batch_size
    if config.gpu_layers is not None:
        params["n_gpu_layers"] = config.gpu_layers
    if config.threads:
        params["threads"] = config.threads
    return params


def load_response(
    model: Any, runner: dict[str, Any], load_seconds: float, params: dict[str, int]
) -> dict[str, Any]:
    config: dict[str, Any] = {"context_length": params.get("ctx_size") or context_length(model, runner)}
    if "batch_size" in params:
        config["eval_batch_size"] = params["batch_size"]
    return {
        "type": "embedding" if model_type_v0(model) == "embeddings" else "llm",
        "instance_id": model.name,
        "model_instance_id": model.name,  # the name LM Studio 0.3 clients read
        "load_time_seconds": round(load_seconds, 3),
        "status": "loaded",
        "load_config": config,
        "config": config,
    }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- LM Studio 0.4's /api/v1/chat ---------------------------------------------------------------

REASONING_EFFORTS = ("low", "medium", "high")


class ChatRequest(BaseModel):
    """`POST /api/v1/chat`: one user turn (`input`), optionally going on from a stored answer."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1)
    input: StrictStr | list[dict[str, Any]]
    system_prompt: StrictStr | None = None
    integrations: list[Any] | None = None
    stream: StrictBool | None = None
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, ge=1)
    reasoning: Literal["off", "low", "medium", "high", "on"] | None = None
    context_length: int | None = Field(default=None, ge=1)
    store: StrictBool | None = None
    previous_response_id: StrictStr | None = None


def user_message(value: str | list[dict[str, Any]]) -> dict[str, Any]:
    """`input` as the chat's user message: a text, or items of text and images (data URLs)."""
    if isinstance(value, str):
        return {"role": "user", "content": value}
    parts: list[dict[str, Any]] = []
    for item in value:
        kind = item.get("type")
        text = item.get("content", item.get("text"))
        image = item.get("data_url") or item.get("image_url")
        if kind in ("text", "message") and isinstance(text, str):
            parts.append({"type": "text", "text": text})
        elif kind == "image" and isinstance(image, str) and image.startswith("data:image/"):
            parts.append({"type": "image_url", "image_url": {"url": image}})
        else:
            raise TranslationError(
                'input: each item is {"type": "text", "content": ...} or {"type": "image", "data_url": "data:image/..."}'
            )
    if not parts:
        raise TranslationError("input: nothing to send")
    return {"role": "user", "content": parts}


def chat_body(request: ChatRequest, history: list[dict[str, Any]], system_prompt: str) -> dict[str, Any]:
    """The OpenAI chat request for llama-server, streamed (with its usage) whether the client
    streams or not: the answer is put together from the stream either way."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages += [*history, user_message(request.input)]
    body: dict[str, Any] = {"messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.reasoning is not None:
        kwargs: dict[str, Any] = {"enable_thinking": request.reasoning != "off"}
        if request.reasoning in REASONING_EFFORTS:
            kwargs["reasoning_effort"] = request.reasoning
        body["chat_template_kwargs"] = kwargs
    return body


Event = tuple[str, dict[str, Any]]


@dataclass
class ChatEvents:
    """llama-server's chat stream as `/api/v1/chat`'s named events (`chat.start`, the model load,
    `prompt_processing.*`, `reasoning.*`, `message.*`, `chat.end` with the whole result), and the
    result itself for a client that does not stream."""

    model_instance_id: str
    reasoning: str = ""
    message: str = ""
    reasoning_tokens: int = 0
    _open: str | None = None  # "reasoning" or "message", while its deltas go on
    _prompt_done: bool = False

    def opening(self, load_seconds: float) -> list[Event]:
        events = [self._event("chat.start", model_instance_id=self.model_instance_id)]
        if load_seconds > 0:  # the runner was started for this request
            events += [
                self._event("model_load.start", model_instance_id=self.model_instance_id),
                self._event(
                    "model_load.end",
                    model_instance_id=self.model_instance_id,
                    load_time_seconds=round(load_seconds, 3),
                ),
            ]
        return [*events, self._event("prompt_processing.start")]

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            thinking, text = delta.get("reasoning_content") or "", delta.get("content") or ""
            if thinking:
                events += self._switch("reasoning")
                self.reasoning += thinking
                self.reasoning_tokens += 1
                events.append(self._event("reasoning.delta", content=thinking))
            if text:
                events += self._switch("message")
                self.message += text
                events.append(self._event("message.delta", content=text))
        return events

    def closing(self) -> list[Event]:
        return self._switch(None)

    def result(self, meter: Any) -> dict[str, Any]:
        output = [{"type": "reasoning", "content": self.reasoning}] if self.reasoning else []
        output.append({"type": "message", "content": self.message})
        ttft = meter.ttft_ms
        return {
            "model_instance_id": self.model_instance_id,
            "output": output,
            "stats": {
                "input_tokens": meter.prompt_tokens or 0,
                "total_output_tokens": meter.completion_tokens or 0,
                "reasoning_output_tokens": self.reasoning_tokens,
                "tokens_per_second": meter.decode_tps or 0,
                "time_to_first_token_seconds": round(ttft / 1000, 3) if ttft is not None else 0,
            },
        }

    def _switch(self, part: str | None) -> list[Event]:
        events: list[Event] = []
        if not self._prompt_done and part is not None:
            self._prompt_done = True
            events.append(self._event("prompt_processing.end"))
        if self._open != part:
            if self._open is not None:
                events.append(self._event(f"{self._open}.end"))
            if part is not None:
                events.append(self._event(f"{part}.start"))
            self._open = part
        return events

    @staticmethod
    def _event(kind: str, **data: Any) -> Event:
        return kind, {"type": kind, **data}


def sse_event(event: Event) -> bytes:
    kind, data = event
    return f"event: {kind}\ndata: ".encode() + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"
