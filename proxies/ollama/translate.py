"""Ollama ⇄ OpenAI translation, as pure functions over plain dicts (no I/O, no clock).

Requests: an Ollama `/api/chat`, `/api/generate` or `/api/embed` body becomes the OpenAI body
llama-server understands, plus the runner parameters and TTL the scheduler needs.
Responses: llama-server's streamed chunks become Ollama's NDJSON objects (`OllamaStream`), and
the catalog's model views become `/api/tags`, `/api/show` and `/api/ps` entries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from models_catalog.parameters import SAMPLING_PARAMS, lora_files
from proxies.accounting import native_finish_reason, native_usage, prompt_length
from proxies.openai_schemas import first_error

# Copilot refuses servers older than 0.6.4; Open WebUI reads it too.
OLLAMA_VERSION = "0.9.6"
FOREVER_SECONDS = -1


class TranslationError(ValueError):
    """Bad input, in words a user can act on (rendered as Ollama's `{"error": ...}` 400)."""


# --- request schemas ------------------------------------------------------------------------------

JsonValue = Any


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr | None = None
    name: StrictStr | None = None  # older clients send `name`
    stream: StrictBool | None = None
    options: dict[str, Any] | None = None
    keep_alive: StrictStr | int | float | None = None

    @property
    def model_name(self) -> str:
        return (self.model or self.name or "").strip()


class _Generation(_Request):
    logprobs: StrictBool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @property
    def wanted_logprobs(self) -> int | None:
        """How many alternatives each token's log probability comes with; None: none wanted."""
        return (self.top_logprobs or 0) if self.logprobs else None


class ChatRequest(_Generation):
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    format: StrictStr | dict[str, Any] | None = None
    think: StrictBool | StrictStr | None = None


class GenerateRequest(_Generation):
    prompt: StrictStr | None = None
    suffix: StrictStr | None = None
    system: StrictStr | None = None
    template: StrictStr | None = None
    raw: StrictBool | None = None
    images: list[StrictStr] | None = None
    format: StrictStr | dict[str, Any] | None = None
    think: StrictBool | StrictStr | None = None
    context: list[int] | None = None


class EmbedRequest(_Request):
    input: StrictStr | list[StrictStr] = Field(default="")
    truncate: StrictBool | None = None
    dimensions: int | None = Field(default=None, ge=1)


class EmbeddingsRequest(_Request):
    prompt: StrictStr = ""


class ModelRequest(_Request):
    verbose: StrictBool | None = None


class CopyRequest(BaseModel):
    source: StrictStr = Field(min_length=1)
    destination: StrictStr = Field(min_length=1)


class CreateRequest(BaseModel):
    """`ollama create`: a new model from an existing one (`from`) or an uploaded GGUF (`files`),
    with its own `parameters`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: StrictStr | None = None
    name: StrictStr | None = None  # older clients send `name`
    from_: StrictStr | None = Field(None, alias="from")
    files: dict[str, StrictStr] | None = None
    parameters: dict[str, Any] | None = None
    system: StrictStr | None = None  # the Modelfile's SYSTEM: the model's default system prompt
    quantize: StrictStr | None = None  # `ollama create --quantize q4_K_M`
    stream: StrictBool | None = None

    @property
    def model_name(self) -> str:
        return (self.model or self.name or "").strip()


def create_settings(parsed: CreateRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """The runner parameters and sampling defaults `parameters` asks for (Ollama's option names,
    as in a Modelfile's PARAMETER lines); TranslationError names what cannot be kept."""
    extra = parsed.model_extra or {}
    parameters = parsed.parameters or {}
    options = split_options(parameters)
    dropped = sorted(
        name
        for name, value in parameters.items()
        if value is not None and name not in RUNNER_OPTIONS and _stored_as(name) not in SAMPLING_PARAMS
    )
    if dropped:
        raise TranslationError(f'parameters: "{dropped[0]}" is not an option llamaproxy can keep for a model')
    sampling = dict(options.sampling)
    if parsed.system and parsed.system.strip():
        sampling["system"] = parsed.system
    if extra.get("messages"):  # MESSAGE lines: checked where defaults are stored
        sampling["messages"] = extra["messages"]
    runner: dict[str, Any] = dict(options.runner_params)
    template = extra.get("template")
    if template not in (None, ""):
        if not isinstance(template, str):
            raise TranslationError("template: must be a text")
        if is_go_template(template):
            raise TranslationError(
                "template: Ollama's Go templates are not supported; llama-server takes a Jinja chat "
                "template (leave TEMPLATE out to use the one in the GGUF file)"
            )
        runner["chat_template"] = template  # the caller drops it when it is the file's own
    return runner, sampling


def pulled_settings(
    params: dict[str, Any], system: str, messages: list[dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The runner parameters and sampling defaults of a model pulled from Ollama's registry: its
    `params` layer (a Modelfile's PARAMETERs), `system` and `messages`, what llamaproxy can keep
    of them (a value it cannot take is left out, not refused: the pull goes on)."""
    keep = {
        name: value
        for name, value in params.items()
        if value is not None and (name in RUNNER_OPTIONS or _stored_as(name) in SAMPLING_PARAMS)
    }
    request = CreateRequest(parameters={}, system=system or None, messages=messages or None)
    runner, sampling = create_settings(request)
    for name, value in keep.items():
        try:
            options = split_options({name: value})
        except TranslationError:
            continue
        runner.update(options.runner_params)
        sampling.update(options.sampling)
    return runner, sampling


# `{{ .Prompt }}`, `{{ if .System }}`, `{{- range .Messages }}`, `{{ end }}`: Go's text/template,
# which Jinja never writes (its names do not start with a dot, and it closes blocks with {% %}).
_GO_TEMPLATE = re.compile(r"\{\{-?\s*(?:(?:(?:else\s+)?if|range|with)\s+)?(?:\.[A-Za-z]|\$\.|end\s*-?\}\})")


def is_go_template(template: str) -> bool:
    return _GO_TEMPLATE.search(template) is not None


def chat_template_of(model: Any) -> str:
    """The chat template the model's runner uses: its `chat_template` parameter when that is a
    template rather than a built-in template's name, else the one in the GGUF file."""
    custom = (model.parameters or {}).get("chat_template") or ""
    return custom if "{{" in custom or "{%" in custom else model.chat_template or ""


def create_notices(parsed: CreateRequest) -> list[str]:
    """What `ollama create` sent that is taken but not kept, said in its status stream."""
    if (parsed.model_extra or {}).get("license") not in (None, "", []):
        return ["license not kept: /api/show gives the GGUF file's own (general.license)"]
    return []


def create_adapters(parsed: CreateRequest) -> list[str]:
    """The digests of the LoRA adapters `adapters` names (file name → digest)."""
    adapters = (parsed.model_extra or {}).get("adapters")
    if adapters in (None, {}, []):
        return []
    if not isinstance(adapters, dict) or not all(isinstance(d, str) for d in adapters.values()):
        raise TranslationError("adapters: must be an object of file name → blob digest")
    return list(adapters.values())


def _stored_as(option: str) -> str:
    """The sampling default an Ollama option becomes (its llama-server request field)."""
    if option in SAMPLING_OPTIONS:
        return SAMPLING_OPTIONS[option][0]
    return "max_tokens" if option == "num_predict" else option


def validate(schema: type[BaseModel], payload: dict[str, Any]) -> Any:
    try:
        return schema.model_validate(payload)
    except ValidationError as exc:
        name, message = first_error(exc)
        raise TranslationError(f"{name}: {message}" if name else message) from None


# --- keep_alive and options ---------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive_seconds(value: str | float | None) -> int | None:
    """Ollama's `keep_alive` as the scheduler's TTL: None keeps the model's own, 0 unloads after
    the answer, -1 never unloads; numbers are seconds, strings Go durations ("5m", "1h30m")."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise TranslationError('keep_alive must be a duration such as "5m" or a number of seconds')
    seconds = float(value) if isinstance(value, int | float) else _parse_duration(value.strip())
    if seconds < 0:
        return FOREVER_SECONDS
    if seconds == 0:
        return 0
    return max(1, round(seconds))


def _parse_duration(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise TranslationError(f'keep_alive: "{text}" is not a duration such as "5m", "1h" or "-1"')
    return sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


# Ollama option → llama-server request field.
SAMPLING_OPTIONS: dict[str, tuple[str, type]] = {
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "min_p": ("min_p", float),
    "typical_p": ("typical_p", float),
    "repeat_penalty": ("repeat_penalty", float),
    "repeat_last_n": ("repeat_last_n", int),
    "presence_penalty": ("presence_penalty", float),
    "frequency_penalty": ("frequency_penalty", float),
    "seed": ("seed", int),
    "mirostat": ("mirostat", int),
    "mirostat_tau": ("mirostat_tau", float),
    "mirostat_eta": ("mirostat_eta", float),
    "num_keep": ("n_keep", int),
}
# llama-server sampling fields Ollama lacks, accepted in `options` as an extension (e.g. fixed lengths).
LLAMA_SERVER_OPTIONS: dict[str, type] = {
    "ignore_eos": bool,
    "top_n_sigma": float,
    "xtc_probability": float,
    "xtc_threshold": float,
    "dry_multiplier": float,
    "dry_base": float,
    "dry_allowed_length": int,
    "dry_penalty_last_n": int,
    "n_probs": int,
}
# Ollama option → the scheduler's runner parameter (a different value restarts the runner).
RUNNER_OPTIONS = {
    "num_ctx": "ctx_size",
    "num_gpu": "n_gpu_layers",
    "num_thread": "threads",
    "num_batch": "batch_size",
}


@dataclass
class Options:
    sampling: dict[str, Any] = field(default_factory=dict)
    runner_params: dict[str, int] = field(default_factory=dict)


def split_options(options: dict[str, Any] | None) -> Options:
    """Sampling fields for the request and runner parameters for the scheduler; options Ollama
    itself applies at load time (use_mmap, numa, ...) have no llama-server request field and are ignored."""
    result = Options()
    for name, value in (options or {}).items():
        if value is None:
            continue
        if name in SAMPLING_OPTIONS:
            target, kind = SAMPLING_OPTIONS[name]
            result.sampling[target] = _typed(name, value, kind)
        elif name in LLAMA_SERVER_OPTIONS:
            result.sampling[name] = _typed(name, value, LLAMA_SERVER_OPTIONS[name])
        elif name in RUNNER_OPTIONS:
            number = _typed(name, value, int)
            if number < 0 and name != "num_gpu":
                raise TranslationError(f'option "{name}" must not be negative')
            if number > 0 or name == "num_gpu":
                result.runner_params[RUNNER_OPTIONS[name]] = number
        elif name == "num_predict":
            number = _typed(name, value, int)
            if number > 0:  # -1 (unbounded) and -2 (fill the context) are llama-server's default
                result.sampling["max_tokens"] = number
        elif name == "stop":
            result.sampling["stop"] = _stop_list(value)
    return result


def requested_sampling_fields(options: dict[str, Any] | None) -> set[str]:
    """The request fields the client's `options` decide, even where the body carries none (a
    `num_predict` of -1 or -2 leaves `max_tokens` out): the model's defaults must not fill them."""
    fields: set[str] = set()
    for name, value in (options or {}).items():
        if value is None:
            continue
        if name in SAMPLING_OPTIONS:
            fields.add(SAMPLING_OPTIONS[name][0])
        elif name == "num_predict":
            fields.add("max_tokens")
        elif name in LLAMA_SERVER_OPTIONS or name == "stop":
            fields.add(name)
    return fields


def _typed(name: str, value: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise TranslationError(f'option "{name}" must be true or false')
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f'option "{name}" must be a number')
    if kind is int:
        if float(value) != int(value):
            raise TranslationError(f'option "{name}" must be a whole number')
        return int(value)
    return float(value)


def _stop_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise TranslationError('option "stop" must be a list of strings')


# --- chat and generate requests -------------------------------------------------------------------


@dataclass
class UpstreamPlan:
    """What to send to llama-server for one Ollama request."""

    path: str
    body: dict[str, Any]
    runner_params: dict[str, int]
    ttl: int | None
    # Messages to render with the model's template first (`format` with a chat: see `structured_plan`).
    render_messages: list[dict[str, Any]] | None = None


def chat_plan(request: ChatRequest) -> UpstreamPlan:
    options = split_options(request.options)
    messages = to_openai_messages(request.messages or [])
    body: dict[str, Any] = {"messages": messages, **options.sampling}
    if request.tools:
        body["tools"] = [_openai_tool(tool) for tool in request.tools]
    body.update(think_fields(request.think))
    if request.tools and request.logprobs:
        raise TranslationError(
            "logprobs: not available together with tools (llama-server streams neither so)"
        )
    plan = UpstreamPlan(
        "/v1/chat/completions", body, options.runner_params, keep_alive_seconds(request.keep_alive)
    )
    schema = format_schema(request.format)
    if schema is not None:
        plan = structured_plan(plan, schema)
    return _with_logprobs(_streaming(plan), request.wanted_logprobs)


def generate_plan(request: GenerateRequest) -> UpstreamPlan:
    options = split_options(request.options)
    ttl = keep_alive_seconds(request.keep_alive)
    schema = format_schema(request.format)
    wanted = request.wanted_logprobs
    if request.suffix:
        return _with_logprobs(_streaming(infill_plan(request, options, ttl, schema)), wanted)
    if request.raw:
        body: dict[str, Any] = {"prompt": request.prompt or "", **options.sampling}
        if schema is not None:
            body["json_schema"] = schema
        return _with_logprobs(
            _streaming(UpstreamPlan("/v1/completions", body, options.runner_params, ttl)), wanted
        )
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append(_user_message(request.prompt or "", request.images or []))
    body = {"messages": messages, **options.sampling, **think_fields(request.think)}
    plan = UpstreamPlan("/v1/chat/completions", body, options.runner_params, ttl)
    if schema is not None:
        plan = structured_plan(plan, schema)
    return _with_logprobs(_streaming(plan), wanted)


def _with_logprobs(plan: UpstreamPlan, wanted: int | None) -> UpstreamPlan:
    """Ask llama-server for each token's log probability (and `wanted` alternatives). It gives
    one only with at least one alternative, which the translation drops again (OllamaStream)."""
    if wanted is not None:
        count = max(1, wanted)
        if plan.path == "/v1/chat/completions":
            plan.body.update(logprobs=True, top_logprobs=count)
        else:  # /v1/completions and /infill take llama-server's own field
            plan.body["n_probs"] = count
    return plan


def infill_plan(
    request: GenerateRequest, options: Options, ttl: int | None, schema: dict[str, Any] | None
) -> UpstreamPlan:
    """`suffix`: fill in the middle, between the prompt and the suffix. llama-server's /infill
    lays them out with the model's own FIM tokens, as Ollama's templates do."""
    if request.raw:
        raise TranslationError("suffix cannot be used with raw: true (raw sends the prompt as it is)")
    body: dict[str, Any] = {
        "input_prefix": request.prompt or "",
        "input_suffix": request.suffix,
        **options.sampling,
    }
    if schema is not None:
        body["json_schema"] = schema
    return UpstreamPlan("/infill", body, options.runner_params, ttl)


def structured_plan(plan: UpstreamPlan, schema: dict[str, Any]) -> UpstreamPlan:
    """`format` as a JSON schema constraint.

    llama-server's chat endpoint folds the generation prompt into the grammar of a schema, which
    fails for some templates ("Failed to initialize samplers"); rendering the prompt with the model's
    template (`/apply-template`) and constraining a plain completion works for every model.
    Images need the chat endpoint, so they keep `response_format`.
    """
    body = dict(plan.body)
    messages = body.pop("messages")
    if any(isinstance(m.get("content"), list) for m in messages):
        body["messages"] = messages
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "format", "schema": schema}}
        return UpstreamPlan(plan.path, body, plan.runner_params, plan.ttl)
    body.pop("tools", None)
    body["json_schema"] = schema
    return UpstreamPlan("/v1/completions", body, plan.runner_params, plan.ttl, render_messages=messages)


def render_body(plan: UpstreamPlan) -> dict[str, Any]:
    """The `/apply-template` request of a plan that renders its messages first."""
    body: dict[str, Any] = {"messages": plan.render_messages or []}
    if "chat_template_kwargs" in plan.body:
        body["chat_template_kwargs"] = plan.body["chat_template_kwargs"]
    return body


def with_rendered_prompt(plan: UpstreamPlan, prompt: str) -> dict[str, Any]:
    body = {key: value for key, value in plan.body.items() if key != "chat_template_kwargs"}
    return {**body, "prompt": prompt}


def _streaming(plan: UpstreamPlan) -> UpstreamPlan:
    plan.body["stream"] = True
    plan.body["stream_options"] = {"include_usage": True}
    return plan


def format_schema(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """`format`: "json" → any JSON object; a JSON schema → that schema; "" or absent → free text."""
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "object"}
    if isinstance(value, dict):
        return value
    raise TranslationError(f'format must be "json" or a JSON schema object, not "{value}"')


def think_fields(think: bool | str | None) -> dict[str, Any]:
    if think is None:
        return {}
    if isinstance(think, bool):
        return {"chat_template_kwargs": {"enable_thinking": think}}
    if think not in {"low", "medium", "high"}:
        raise TranslationError(f'think must be true, false, "low", "medium" or "high", not "{think}"')
    return {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": think}}


def to_openai_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ollama messages → OpenAI messages: images as content parts, tool-call arguments as JSON text,
    and tool results linked to the call they answer (Ollama has no call ids; order links them)."""
    converted: list[dict[str, Any]] = []
    pending_calls: list[tuple[str, str]] = []  # (id, name) of calls not answered yet
    call_number = 0
    for index, message in enumerate(messages):
        role = message.get("role")
        if not isinstance(role, str) or role not in {"system", "user", "assistant", "tool"}:
            raise TranslationError(f"messages.{index}.role must be system, user, assistant or tool")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise TranslationError(f"messages.{index}.content must be text")
        images = message.get("images") or []
        if not isinstance(images, list) or not all(isinstance(image, str) for image in images):
            raise TranslationError(f"messages.{index}.images must be a list of base64 strings")
        out: dict[str, Any] = _user_message(content, images) if images else {"content": content}
        out["role"] = role
        if role == "assistant":
            if message.get("thinking"):
                out["reasoning_content"] = str(message["thinking"])
            calls = message.get("tool_calls") or []
            if calls:
                out["tool_calls"] = []
                for call in calls:
                    call_id = f"call_{call_number}"
                    call_number += 1
                    function = _tool_call_function(call, index)
                    out["tool_calls"].append({"id": call_id, "type": "function", "function": function})
                    pending_calls.append((call_id, function["name"]))
        if role == "tool":
            out["tool_call_id"] = _answered_call(pending_calls, message.get("tool_name"))
        converted.append(out)
    return converted


def _tool_call_function(call: Any, index: int) -> dict[str, str]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise TranslationError(f"messages.{index}.tool_calls needs function.name")
    arguments = function.get("arguments") or {}
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"name": function["name"], "arguments": text}


def _answered_call(pending: list[tuple[str, str]], tool_name: Any) -> str:
    for position, (call_id, name) in enumerate(pending):
        if tool_name is None or name == tool_name:
            pending.pop(position)
            return call_id
    return f"call_{tool_name or 'unknown'}"


def _user_message(text: str, images: list[str]) -> dict[str, Any]:
    if not images:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "image_url", "image_url": {"url": image_data_url(image)}} for image in images]
    return {"role": "user", "content": parts}


_IMAGE_SIGNATURES = (
    ("iVBOR", "image/png"),
    ("/9j/", "image/jpeg"),
    ("R0lG", "image/gif"),
    ("UklGR", "image/webp"),
)


def image_data_url(image: str) -> str:
    if image.startswith("data:"):
        return image
    mime = next((mime for prefix, mime in _IMAGE_SIGNATURES if image.startswith(prefix)), "image/jpeg")
    return f"data:{mime};base64,{image}"


def _openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    if not isinstance(function, dict) or not function.get("name"):
        raise TranslationError("tools: every tool needs function.name")
    return {"type": tool.get("type") or "function", "function": function}


def embed_body(request: EmbedRequest) -> dict[str, Any]:
    inputs = [request.input] if isinstance(request.input, str) else request.input
    body: dict[str, Any] = {"input": inputs}
    if request.dimensions:
        body["dimensions"] = request.dimensions
    return body


# --- responses ----------------------------------------------------------------------------------


def timestamp(epoch_seconds: float) -> str:
    """RFC 3339 with nanosecond digits and a Z, as Ollama writes `created_at`."""
    moment = datetime.fromtimestamp(epoch_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop"}


@dataclass
class OllamaStream:
    """Turns llama-server's OpenAI chunks (chat or completion) into Ollama's stream objects.

    Tool-call fragments are gathered and sent whole, as Ollama does, with `arguments` as an object.
    """

    model: str
    kind: Literal["chat", "generate"]
    show_thinking: bool = True
    top_logprobs: int | None = None  # alternatives per token's log probability; None: none asked for
    tool_calls: dict[int, dict[str, str]] = field(default_factory=dict)
    logprobs: list[dict[str, Any]] = field(default_factory=list)  # not yet sent with a piece
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, Any] = field(default_factory=dict)

    def feed(self, chunk: dict[str, Any], now: float) -> list[dict[str, Any]]:
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), dict):
            self.timings = chunk["timings"]
        objects: list[dict[str, Any]] = []
        if "choices" not in chunk and isinstance(chunk.get("content"), str):
            if self.top_logprobs is not None:
                self._take_logprobs(chunk.get("completion_probabilities"))
            return self._feed_native(chunk, now)
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if self.top_logprobs is not None and isinstance(choice.get("logprobs"), dict):
                self._take_logprobs(choice["logprobs"].get("content"))
            delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
            text = delta.get("content") or choice.get("text") or ""
            thinking = (delta.get("reasoning_content") or "") if self.show_thinking else ""
            for call in delta.get("tool_calls") or ():
                self._gather(call)
            if text or thinking:
                objects.append(self._piece(text, thinking, now))
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                if self.tool_calls:
                    objects.append(self._tool_call_piece(now))
        return objects

    def _feed_native(self, chunk: dict[str, Any], now: float) -> list[dict[str, Any]]:
        """llama-server's own stream (/infill's): `content` pieces, then one with `stop`."""
        if chunk.get("stop"):
            self.finish_reason = native_finish_reason(chunk)
            self.usage = native_usage(chunk)
        return [self._piece(chunk["content"], "", now)] if chunk["content"] else []

    def _take_logprobs(self, entries: Any) -> None:
        """llama-server's per-token probabilities in Ollama's shape (token, logprob, bytes, and
        `top_logprobs` as many as were asked for), held until a piece goes out with them."""
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict) or "logprob" not in entry:
                continue
            item = _token_logprob(entry)
            if self.top_logprobs:
                item["top_logprobs"] = [_token_logprob(alt) for alt in (entry.get("top_logprobs") or [])][
                    : self.top_logprobs
                ]
            self.logprobs.append(item)

    def _gather(self, call: dict[str, Any]) -> None:
        slot = self.tool_calls.setdefault(
            int(call.get("index", len(self.tool_calls))), {"name": "", "arguments": ""}
        )
        function = call.get("function") or {}
        slot["name"] += function.get("name") or ""
        slot["arguments"] += function.get("arguments") or ""
        if call.get("id"):
            slot["id"] = call["id"]

    def _base(self, now: float) -> dict[str, Any]:
        base: dict[str, Any] = {"model": self.model, "created_at": timestamp(now)}
        if self.logprobs:
            base["logprobs"], self.logprobs = self.logprobs, []
        return base

    def _piece(self, text: str, thinking: str, now: float) -> dict[str, Any]:
        piece = self._base(now)
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            piece["message"] = message
        else:
            piece["response"] = text
            if thinking:
                piece["thinking"] = thinking
        piece["done"] = False
        return piece

    def _tool_call_piece(self, now: float) -> dict[str, Any]:
        piece = self._base(now)
        piece["message"] = {
            "role": "assistant",
            "content": "",
            "tool_calls": ollama_tool_calls(self.tool_calls),
        }
        piece["done"] = False
        self.tool_calls = {}
        return piece

    def final(self, now: float, total_ns: int, load_ns: int) -> dict[str, Any]:
        if self.tool_calls:  # a stream that ended without a finish_reason
            self.finish_reason = self.finish_reason or "tool_calls"
        final = self._base(now)
        if self.kind == "chat":
            final["message"] = {"role": "assistant", "content": ""}
        else:
            final["response"] = ""
        final["done"] = True
        final["done_reason"] = DONE_REASONS.get(self.finish_reason or "stop", "stop")
        final.update(durations(self.usage, self.timings, total_ns, load_ns))
        return final


def _token_logprob(entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"token": str(entry.get("token", "")), "logprob": entry.get("logprob")}
    if isinstance(entry.get("bytes"), list):
        item["bytes"] = entry["bytes"]
    return item


def ollama_tool_calls(gathered: dict[int, dict[str, str]]) -> list[dict[str, Any]]:
    calls = []
    for index in sorted(gathered):
        call = gathered[index]
        calls.append(
            {
                "function": {
                    "index": index,
                    "name": call["name"],
                    "arguments": tool_arguments(call["arguments"]),
                }
            }
        )
    return calls


def tool_arguments(text: str) -> dict[str, Any]:
    """Ollama clients expect an object; llama-server's grammar makes the text JSON, but a model
    without one may write anything: keep it under `raw` rather than lose it."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {"raw": text}
    return value if isinstance(value, dict) else {"value": value}


def durations(usage: dict[str, Any], timings: dict[str, Any], total_ns: int, load_ns: int) -> dict[str, int]:
    """Ollama's final counters: token counts as numbers, durations in nanoseconds."""
    prompt_tokens = _number(usage.get("prompt_tokens"))
    if prompt_tokens is None:
        prompt_tokens = prompt_length(timings, 0)
    eval_tokens = _number(usage.get("completion_tokens"))
    if eval_tokens is None:
        eval_tokens = _number(timings.get("predicted_n")) or 0
    return {
        "total_duration": int(total_ns),
        "load_duration": int(load_ns),
        "prompt_eval_count": int(prompt_tokens),
        "prompt_eval_duration": int((_number(timings.get("prompt_ms")) or 0) * 1_000_000),
        "eval_count": int(eval_tokens),
        "eval_duration": int((_number(timings.get("predicted_ms")) or 0) * 1_000_000),
    }


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def merge_objects(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The one object of `stream: false`: the final object with every piece's text joined."""
    final = dict(objects[-1])
    pieces = objects[:-1]
    logprobs = [entry for obj in objects for entry in obj.get("logprobs", ())]
    if logprobs:
        final["logprobs"] = logprobs
    if "message" in final:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(p["message"].get("content", "") for p in pieces),
        }
        thinking = "".join(p["message"].get("thinking", "") for p in pieces)
        if thinking:
            message["thinking"] = thinking
        calls = [call for p in pieces for call in p["message"].get("tool_calls", [])]
        if calls:
            message["tool_calls"] = calls
        final["message"] = message
    else:
        final["response"] = "".join(p.get("response", "") for p in pieces)
        thinking = "".join(p.get("thinking", "") for p in pieces)
        if thinking:
            final["thinking"] = thinking
    return final


def load_object(model: str, kind: Literal["chat", "generate"], now: float, unloaded: bool) -> dict[str, Any]:
    """The answer to an empty prompt: the model was loaded (or, with keep_alive 0, unloaded)."""
    obj: dict[str, Any] = {"model": model, "created_at": timestamp(now)}
    if kind == "chat":
        obj["message"] = {"role": "assistant", "content": ""}
    else:
        obj["response"] = ""
    obj["done"] = True
    obj["done_reason"] = "unload" if unloaded else "load"
    return obj


def embed_response(model: str, openai_body: dict[str, Any], total_ns: int, load_ns: int) -> dict[str, Any]:
    data = sorted(openai_body.get("data") or [], key=lambda item: item.get("index", 0))
    usage = openai_body.get("usage") or {}
    return {
        "model": model,
        "embeddings": [item.get("embedding") or [] for item in data],
        "total_duration": int(total_ns),
        "load_duration": int(load_ns),
        "prompt_eval_count": int(_number(usage.get("prompt_tokens")) or 0),
    }


# --- models -------------------------------------------------------------------------------------


def tagged(name: str) -> str:
    """Ollama names carry a tag; clients append ":latest" themselves and expect it back."""
    base, sep, tag = name.rpartition(":")
    return name if sep and base and "/" not in tag else f"{name}:latest"


def parameter_size(count: int | None, label: str = "") -> str:
    if not count:
        return label
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def details(model: Any) -> dict[str, Any]:
    family = model.architecture or ""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": parameter_size(model.parameter_count, model.size_label),
        "quantization_level": model.quantization or "",
    }


def modified_at(model: Any) -> str:
    return timestamp(model.mtime if model.mtime else model.created)


def tags_entry(model: Any, name: str, digest: str) -> dict[str, Any]:
    return {
        "name": tagged(name),
        "model": tagged(name),
        "modified_at": modified_at(model),
        "size": model.size_bytes,
        "digest": digest,
        "details": details(model),
    }


def model_info(model: Any) -> dict[str, Any]:
    """GGUF keys as Ollama's `model_info` names them; clients read `<arch>.context_length`."""
    arch = model.architecture or "unknown"
    info: dict[str, Any] = {
        key: value
        for key, value in (model.metadata or {}).items()
        if not key.startswith("tokenizer.chat_template")
    }
    info["general.architecture"] = arch
    known = {
        "general.parameter_count": model.parameter_count,
        "general.file_type": model.file_type,
        "general.name": model.display_name or None,
        "general.size_label": model.size_label or None,
        f"{arch}.context_length": model.context_length,
        f"{arch}.embedding_length": model.embedding_length,
        f"{arch}.block_count": model.block_count,
        f"{arch}.attention.head_count": model.head_count,
        f"{arch}.attention.head_count_kv": model.head_count_kv,
    }
    info.update({key: value for key, value in known.items() if value is not None})
    return dict(sorted(info.items()))


# Sampling defaults whose Ollama option has another name (num_predict → max_tokens, num_keep → n_keep).
OLLAMA_NAMES = {
    _stored_as(option): option
    for option in (*SAMPLING_OPTIONS, "num_predict")
    if _stored_as(option) != option
}


def parameters_text(model: Any) -> str:
    """Ollama's `parameters`: one "name value" line per default, in Modelfile syntax."""
    settings = {
        option: value
        for option, name in RUNNER_OPTIONS.items()
        if (value := (model.parameters or {}).get(name))
    }
    settings.update(
        (OLLAMA_NAMES.get(key, key), value)
        for key, value in (model.sampling or {}).items()
        if key not in ("system", "messages")  # a Modelfile's SYSTEM and MESSAGE lines (see `modelfile`)
    )
    lines = []
    for key, value in sorted(settings.items()):
        for item in value if isinstance(value, list) else [value]:
            text = (
                json.dumps(item)
                if isinstance(item, str)
                else str(item).lower()
                if isinstance(item, bool)
                else str(item)
            )
            lines.append(f"{key:<30} {text}")
    return "\n".join(lines)


def modelfile(model: Any) -> str:
    lines = [f"# Modelfile generated by llamaproxy for {model.name}", f"FROM {model.path}"]
    if template := chat_template_of(model):
        lines.append(f'TEMPLATE """{template}"""')
    lines += [f"ADAPTER {file}" for file in lora_files(model.extra_args)]
    if system := (model.sampling or {}).get("system"):
        lines.append(f'SYSTEM """{system}"""')
    lines += [f"PARAMETER {line}" for line in parameters_text(model).splitlines()]
    lines += [
        f'MESSAGE {m["role"]} """{m["content"]}"""' for m in (model.sampling or {}).get("messages") or ()
    ]
    return "\n".join(lines) + "\n"


def show_response(model: Any) -> dict[str, Any]:
    return {
        "license": str((model.metadata or {}).get("general.license") or ""),
        "modelfile": modelfile(model),
        "parameters": parameters_text(model),
        "template": chat_template_of(model),
        **({"system": system} if (system := (model.sampling or {}).get("system")) else {}),
        **({"messages": presets} if (presets := (model.sampling or {}).get("messages")) else {}),
        "details": details(model),
        "model_info": model_info(model),
        "capabilities": list(model.capabilities),
        "modified_at": modified_at(model),
    }


def ps_entry(model: Any, name: str, digest: str, runner: dict[str, Any], now: float) -> dict[str, Any]:
    size = int(runner.get("memory_estimate") or model.size_bytes or 0)
    return {
        "name": tagged(name),
        "model": tagged(name),
        "size": size,
        "digest": digest,
        "details": details(model),
        "expires_at": expires_at(runner, now),
        "size_vram": int(runner.get("size_vram") or 0),
        "context_length": int(runner.get("context_length") or model.context_length or 0),
    }


# What Ollama shows for a model kept forever (its "never" is the largest duration from now).
NEVER_EXPIRES_SECONDS = 292 * 365 * 86400


def expires_at(runner: dict[str, Any], now: float) -> str:
    value = runner.get("expires_at")
    if isinstance(value, datetime):
        return timestamp(value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timestamp(float(value))
    if isinstance(value, str) and value:
        try:
            return timestamp(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            pass
    ttl = runner.get("ttl_seconds")
    if isinstance(ttl, int | float) and not isinstance(ttl, bool) and ttl > 0:
        return timestamp(now + ttl)  # busy right now: the idle clock starts when it is done
    return timestamp(min(now + NEVER_EXPIRES_SECONDS, 253402300799.0))
