"""A model's sampling defaults reach llama-server on every face, through the real stack; and a
model whose file is gone is refused as missing, not as disabled."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from models_catalog.tiny_model import write_tiny_model

pytestmark = pytest.mark.integration

DEFAULT_MAX_TOKENS = 5
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("sampling-stack")
    env, ports = stack_env(root, llama_server_binary)
    stack = Stack(root=root, env=env, ports=ports)
    write_tiny_model(stack.models_dir / "tiny-chat.gguf", name="tiny-chat", seed=1)
    write_tiny_model(stack.models_dir / "tiny-gone.gguf", name="tiny-gone", seed=3)
    stack.manage("migrate", "--noinput")
    stack.manage("scan_models")
    (stack.models_dir / "tiny-gone.gguf").unlink()
    stack.manage("scan_models")
    stack.start()
    response = httpx.patch(
        stack.url("dashboard") + "/api/manage/models/tiny-chat",
        json={"sampling": {"max_tokens": DEFAULT_MAX_TOKENS, "temperature": 0}},
        headers=stack.admin_headers(),
    )
    assert response.status_code == 200, response.text
    yield stack
    stack.stop()


def post(stack, face: str, path: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = httpx.post(stack.url(face) + path, json=body, timeout=60, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("face", ["api", "ollama", "lmstudio"])
def test_an_openai_chat_without_max_tokens_gets_the_models_default(stack, face: str) -> None:
    body = {"model": "tiny-chat", "messages": MESSAGES, "ignore_eos": True}
    answer = post(stack, face, "/v1/chat/completions", body)
    assert answer["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS
    assert answer["choices"][0]["finish_reason"] == "length"


def test_an_openai_completion_without_max_tokens_gets_the_models_default(stack) -> None:
    body = {"model": "tiny-chat", "prompt": "once upon a time", "ignore_eos": True}
    answer = post(stack, "api", "/v1/completions", body)
    assert answer["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_an_explicit_openai_length_wins_over_the_default(stack, field: str) -> None:
    body = {"model": "tiny-chat", "messages": MESSAGES, "ignore_eos": True, field: 9}
    answer = post(stack, "api", "/v1/chat/completions", body)
    assert answer["usage"]["completion_tokens"] == 9


def test_a_streamed_openai_chat_gets_the_default_too(stack) -> None:
    body = {
        "model": "tiny-chat",
        "messages": MESSAGES,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    usage = None
    with httpx.stream("POST", stack.url("api") + "/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {") and '"usage":{' in line.replace(" ", ""):
                usage = httpx.Response(200, content=line[6:]).json()["usage"]
    assert usage is not None and usage["completion_tokens"] == DEFAULT_MAX_TOKENS


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"messages": MESSAGES}),
        ("/api/generate", {"prompt": "hello"}),
        ("/api/generate", {"prompt": "hello", "raw": True}),
    ],
)
def test_an_ollama_request_without_num_predict_gets_the_models_default(stack, path: str, body: dict) -> None:
    request = {"model": "tiny-chat", "stream": False, "options": {"ignore_eos": True}, **body}
    answer = post(stack, "ollama", path, request)
    assert answer["eval_count"] == DEFAULT_MAX_TOKENS
    assert answer["done_reason"] == "length"


def test_an_ollama_num_predict_wins_over_the_default(stack) -> None:
    request = {
        "model": "tiny-chat",
        "messages": MESSAGES,
        "stream": False,
        "options": {"ignore_eos": True, "num_predict": 8},
    }
    assert post(stack, "ollama", "/api/chat", request)["eval_count"] == 8


def test_an_lm_studio_completion_without_max_tokens_gets_the_models_default(stack) -> None:
    body = {"model": "tiny-chat", "messages": MESSAGES, "ignore_eos": True}
    answer = post(stack, "lmstudio", "/api/v0/chat/completions", body)
    assert answer["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS
    body = {"model": "tiny-chat", "prompt": "once", "ignore_eos": True, "max_tokens": 7}
    assert post(stack, "lmstudio", "/api/v0/completions", body)["usage"]["completion_tokens"] == 7


def test_the_playground_applies_the_models_default(stack) -> None:
    with httpx.Client(base_url=stack.url("dashboard"), timeout=60) as client:
        client.get("/api/manage/auth/me")
        token = client.cookies["csrftoken"]
        setup = client.post(
            "/api/manage/auth/setup",
            json={"username": "boss", "password": "long-enough-pw"},
            headers={"X-CSRFToken": token},
        )
        assert setup.status_code == 200, setup.text
        token = client.cookies.get("csrftoken") or token
        response = client.post(
            "/api/playground/v1/chat/completions",
            json={"model": "tiny-chat", "messages": MESSAGES, "ignore_eos": True},
            headers={"X-CSRFToken": token},
        )
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS


def test_a_model_whose_file_is_missing_is_refused_as_missing_on_the_faces_and_by_load(stack) -> None:
    chat = httpx.post(
        stack.url("api") + "/v1/chat/completions",
        json={"model": "tiny-gone", "messages": MESSAGES},
        timeout=30,
    )
    assert chat.status_code == 503
    assert chat.json()["error"]["message"] == "model 'tiny-gone' is not available: its file is missing"

    load = httpx.post(
        stack.url("dashboard") + "/api/manage/runners/tiny-gone/load",
        headers=stack.admin_headers(),
        timeout=30,
    )
    assert load.status_code == 503, load.text
    assert "its file is missing" in load.text and "disabled" not in load.text
