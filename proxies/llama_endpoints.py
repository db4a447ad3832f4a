"""The rest of what llama-server answers, relayed to the runner of the model a request names,
as llama.cpp's own router mode does:

- on every API port (they all serve `/v1/*`): the Responses API (`/v1/responses`), Anthropic's
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

from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from pydantic import BaseModel

from proxies.openai_face import anthropic_error, api, relay_json_endpoint
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
