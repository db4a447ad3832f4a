"""Input schemas of the OpenAI face: the fields llamaproxy must read or that clients get wrong.

Everything else in a request is passed to llama-server untouched (extra="allow").
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

Number = StrictInt | StrictFloat


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: StrictStr | None = None
    stream: StrictBool | None = None


class ChatCompletionRequest(_Request):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0)
    top_p: Number | None = None
    n: StrictInt | None = Field(default=None, ge=1)
    stop: StrictStr | list[StrictStr] | None = None
    tools: list[dict[str, Any]] | None = None


class CompletionRequest(_Request):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0)
    stop: StrictStr | list[StrictStr] | None = None


class EmbeddingRequest(_Request):
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]


class RerankRequest(_Request):
    """Jina's and Cohere's shape (`documents`), or TEI's (`texts`), as llama-server takes both."""

    query: StrictStr
    documents: list[StrictStr] | None = Field(default=None, min_length=1)
    texts: list[StrictStr] | None = Field(default=None, min_length=1)
    top_n: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _has_documents(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("documents") is None and data.get("texts") is None:
            raise ValidationError.from_exception_data(
                cls.__name__, [{"type": "missing", "loc": ("documents",), "input": data}]
            )
        return data


class ResponsesRequest(_Request):
    """The Responses API (`/v1/responses`, and `/v1/responses/input_tokens` for a count)."""

    input: StrictStr | list[Any]
    instructions: StrictStr | None = None
    max_output_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0)
    tools: list[dict[str, Any]] | None = None


class ChatTokensRequest(_Request):
    """`/v1/chat/completions/input_tokens`: the prompt a chat request would make, counted."""

    messages: list[dict[str, Any]] = Field(min_length=1)


class MessagesRequest(_Request):
    """Anthropic's Messages API (`/v1/messages`). `max_tokens`, which Anthropic requires, may be
    left out as llama-server allows."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    system: StrictStr | list[dict[str, Any]] | None = None
    temperature: Number | None = Field(default=None, ge=0)
    stop_sequences: list[StrictStr] | None = None
    tools: list[dict[str, Any]] | None = None


class CountTokensRequest(_Request):
    """Anthropic's `/v1/messages/count_tokens`."""

    messages: list[dict[str, Any]] = Field(min_length=1)
    system: StrictStr | list[dict[str, Any]] | None = None


class NativeRequest(_Request):
    """llama-server's own endpoints (`/completion`, `/infill`, `/tokenize`, ...): llamaproxy
    reads only `model` (which picks the runner) and `stream`; llama-server checks the rest."""


def first_error(exc: ValidationError) -> tuple[str, str]:
    """(field, message) of the first problem, e.g. ("messages.0", "Input should be a valid dictionary")."""
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ()) if not _is_type_tag(part)]
    field = ".".join(location)
    message = error.get("msg", "invalid value")
    if error.get("type") == "missing":
        message = "is required"
    return field, message


def _is_type_tag(part: object) -> bool:
    # Union members show up in locations as type names ("str", "list[int]"); they mean nothing to users.
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool"} or part.startswith(("list[", "dict["))
    )
