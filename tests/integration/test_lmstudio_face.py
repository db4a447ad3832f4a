"""The LM Studio face over raw HTTP on the real stack: every REST shape, SSE with stats, load/unload."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from models_catalog.tiny_model import write_tiny_model
from tests.integration.test_ollama_face import EMBEDDINGS_ON, prepare_catalog

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

V0_MODEL_FIELDS = {
    "id",
    "object",
    "type",
    "publisher",
    "arch",
    "compatibility_type",
    "quantization",
    "state",
    "max_context_length",
}
V1_MODEL_FIELDS = {
    "type",
    "publisher",
    "key",
    "display_name",
    "architecture",
    "quantization",
    "size_bytes",
    "params_string",
    "loaded_instances",
    "max_context_length",
    "format",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("lmstudio-stack")
    env, ports = stack_env(root, llama_server_binary, LLAMAPROXY_MAX_LOADED_MODELS="2")
    stack = Stack(root=root, env=env, ports=ports)
    write_tiny_model(stack.models_dir / "tiny-chat.gguf", name="tiny-chat", seed=1)
    write_tiny_model(stack.models_dir / "tiny-embed.gguf", name="tiny-embed", seed=2)
    prepare_catalog(stack)
    stack.manage("shell", "-c", EMBEDDINGS_ON)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def lms(stack) -> httpx.Client:
    with httpx.Client(base_url=stack.url("lmstudio"), timeout=50) as client:
        yield client


def v0_state(lms: httpx.Client, model: str) -> str:
    return lms.get(f"/api/v0/models/{model}").json()["state"]


def test_v0_lists_models_with_lm_studios_fields(lms: httpx.Client) -> None:
    listing = lms.get("/api/v0/models")
    assert listing.status_code == 200
    body = listing.json()
    assert body["object"] == "list"
    models = {m["id"]: m for m in body["data"]}
    chat = models["tiny-chat"]
    assert set(chat) >= V0_MODEL_FIELDS
    assert chat["object"] == "model" and chat["type"] == "llm"
    assert chat["compatibility_type"] == "gguf" and chat["arch"] == "llama"
    assert chat["state"] in {"loaded", "not-loaded"} and chat["max_context_length"] == 4096
    one = lms.get("/api/v0/models/tiny-chat")
    assert one.status_code == 200 and one.json()["id"] == "tiny-chat"


def test_a_v0_chat_completion_carries_stats_model_info_and_runtime(lms: httpx.Client) -> None:
    response = lms.post(
        "/api/v0/chat/completions",
        json={
            "model": "tiny-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "ignore_eos": True,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] == 5
    stats = body["stats"]
    assert stats["stop_reason"] == "maxPredictedTokensReached"
    assert (
        stats["tokens_per_second"] > 0 and stats["generation_time"] >= 0 and stats["time_to_first_token"] >= 0
    )
    assert body["model_info"] == {
        "arch": "llama",
        "quant": body["model_info"]["quant"],
        "format": "gguf",
        "context_length": 4096,
    }
    assert body["runtime"]["supported_formats"] == ["gguf"]
    assert v0_state(lms, "tiny-chat") == "loaded"


def test_a_v0_stream_is_sse_with_stats_on_the_finishing_chunk(lms: httpx.Client) -> None:
    body = {"model": "tiny-chat", "prompt": "Once", "max_tokens": 4, "ignore_eos": True, "stream": True}
    with lms.stream("POST", "/api/v0/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        payloads = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    finishing = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason")]
    assert len(finishing) == 1
    assert finishing[0]["stats"]["stop_reason"] == "maxPredictedTokensReached"
    assert finishing[0]["model_info"]["format"] == "gguf"
    assert "".join(c["choices"][0].get("text", "") for c in chunks if c["choices"])


def test_v0_embeddings_answer_in_openai_shape(lms: httpx.Client) -> None:
    response = lms.post("/api/v0/embeddings", json={"model": "tiny-embed", "input": ["a", "b"]})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [item["index"] for item in data] == [0, 1] and len(data[0]["embedding"]) > 0


def test_v1_models_load_and_unload(lms: httpx.Client) -> None:
    lms.post("/api/v1/models/unload", json={"instance_id": "tiny-chat"})
    loaded = lms.post("/api/v1/models/load", json={"model": "tiny-chat", "config": {"context_length": 2048}})
    assert loaded.status_code == 200, loaded.text
    answer = loaded.json()
    assert answer["instance_id"] == "tiny-chat" and answer["load_time_seconds"] >= 0
    assert answer["load_config"]["context_length"] == 2048
    models = {m["key"]: m for m in lms.get("/api/v1/models").json()["models"]}
    chat = models["tiny-chat"]
    assert set(chat) >= V1_MODEL_FIELDS
    assert chat["format"] == "gguf" and chat["type"] == "llm"
    assert chat["quantization"]["name"] and chat["capabilities"] == {
        "vision": False,
        "trained_for_tool_use": False,
    }
    assert chat["loaded_instances"] == [{"id": "tiny-chat", "config": {"context_length": 2048}}]
    assert models["tiny-embed"]["type"] == "llm"  # a chat model with embeddings switched on
    unloaded = lms.post("/api/v1/models/unload", json={"instance_id": "tiny-chat"})
    assert unloaded.status_code == 200 and unloaded.json() == {"instance_id": "tiny-chat"}
    assert v0_state(lms, "tiny-chat") == "not-loaded"
    again = lms.post("/api/v1/models/unload", json={"instance_id": "tiny-chat"})
    assert again.status_code == 404 and again.json()["error"]["message"]


def test_a_request_ttl_unloads_the_model_when_idle(lms: httpx.Client) -> None:
    response = lms.post(
        "/api/v0/completions", json={"model": "tiny-chat", "prompt": "x", "max_tokens": 2, "ttl": 1}
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 10
    while v0_state(lms, "tiny-chat") == "loaded" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert v0_state(lms, "tiny-chat") == "not-loaded"


def test_bad_input_gets_openai_shaped_errors(lms: httpx.Client) -> None:
    cases = [
        ("POST", "/api/v0/chat/completions", b"{oops", 400),
        (
            "POST",
            "/api/v0/chat/completions",
            json.dumps({"model": "tiny-chat", "messages": []}).encode(),
            400,
        ),
        (
            "POST",
            "/api/v0/completions",
            json.dumps({"model": "tiny-chat", "prompt": "x", "ttl": "5m"}).encode(),
            400,
        ),
        (
            "POST",
            "/api/v0/chat/completions",
            json.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]}).encode(),
            404,
        ),
        ("GET", "/api/v0/models/nope", b"", 404),
        ("POST", "/api/v1/models/load", json.dumps({"config": {}}).encode(), 400),
        (
            "POST",
            "/api/v1/models/load",
            json.dumps({"model": "tiny-chat", "config": {"context_length": -1}}).encode(),
            400,
        ),
        ("POST", "/api/v1/models/unload", json.dumps({}).encode(), 400),
        ("GET", "/api/v9/unknown", b"", 404),
    ]
    for method, path, content, status in cases:
        response = lms.request(method, path, content=content)
        assert response.status_code == status, (path, response.text)
        error = response.json()["error"]
        assert error["message"] and error["type"], path


FIXED_CHAT = {"max_output_tokens": 5, "temperature": 0}


def test_v1_chat_answers_with_output_items_and_stats_and_keeps_the_conversation(
    lms: httpx.Client, stack
) -> None:
    first = lms.post(
        "/api/v1/chat", json={"model": "tiny-chat", "input": "My favorite color is blue.", **FIXED_CHAT}
    )
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["model_instance_id"] == "tiny-chat"
    assert [item["type"] for item in body["output"]] == ["message"] and body["output"][0]["content"]
    stats = body["stats"]
    assert stats["total_output_tokens"] == 5 and stats["input_tokens"] > 0
    assert stats["tokens_per_second"] > 0 and stats["time_to_first_token_seconds"] >= 0
    assert body["response_id"].startswith("resp_")

    # Going on from it: the model gets the whole conversation (more prompt tokens than the turn alone).
    turn = {"model": "tiny-chat", "input": "What color did I mention?", **FIXED_CHAT}
    alone = lms.post("/api/v1/chat", json={**turn, "store": False}).json()
    assert "response_id" not in alone
    going_on = lms.post("/api/v1/chat", json={**turn, "previous_response_id": body["response_id"]}).json()
    assert (
        going_on["stats"]["input_tokens"]
        > alone["stats"]["input_tokens"] + first.json()["stats"]["total_output_tokens"]
    )
    assert going_on["response_id"] != body["response_id"]
    # A system prompt is kept with the conversation, and counted.
    with_system = lms.post(
        "/api/v1/chat", json={**turn, "store": False, "system_prompt": "You answer in French, briefly."}
    ).json()
    assert with_system["stats"]["input_tokens"] > alone["stats"]["input_tokens"]
    french = {
        "model": "tiny-chat",
        "input": "My favorite color is blue.",
        "system_prompt": "You answer in French, briefly.",
        **FIXED_CHAT,
    }
    kept = lms.post("/api/v1/chat", json=french).json()
    after_system = lms.post("/api/v1/chat", json={**turn, "previous_response_id": kept["response_id"]}).json()
    assert (
        after_system["stats"]["input_tokens"] > going_on["stats"]["input_tokens"]
    )  # its system prompt goes on too

    deadline = time.monotonic() + 10  # (usage is written in batches, off the request path)
    while len(rows := stack.usage_rows(face="lmstudio", endpoint="chat")) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(rows) >= 4 and all(row["status"] == 200 and row["completion_tokens"] == 5 for row in rows[:4])


def test_v1_chat_streams_lm_studios_named_events(lms: httpx.Client) -> None:
    body = {"model": "tiny-chat", "input": "hi", "stream": True, "store": False, **FIXED_CHAT}
    with lms.stream("POST", "/api/v1/chat", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    kinds = [line[7:] for line in lines if line.startswith("event: ")]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [d["type"] for d in data] == kinds
    assert kinds[0] == "chat.start" and kinds[-1] == "chat.end"
    assert (
        kinds.index("prompt_processing.start")
        < kinds.index("prompt_processing.end")
        < kinds.index("message.start")
    )
    assert (
        kinds.index("message.start")
        < kinds.index("message.delta")
        < kinds.index("message.end")
        < len(kinds) - 1
    )
    text = "".join(d["content"] for d in data if d["type"] == "message.delta")
    result = data[-1]["result"]
    assert (
        result["output"] == [{"type": "message", "content": text}]
        and result["stats"]["total_output_tokens"] == 5
    )
    assert "response_id" not in result


def test_v1_chat_refuses_what_it_cannot_do_in_openais_shape(lms: httpx.Client) -> None:
    cases = [
        ({"model": "tiny-chat"}, 400, "input"),
        ({"model": "tiny-chat", "input": "x", "integrations": ["mcp/playwright"]}, 400, "integrations"),
        (
            {"model": "tiny-chat", "input": "x", "previous_response_id": "resp_nothing"},
            404,
            "previous_response_id",
        ),
        ({"model": "tiny-chat", "input": "x", "reasoning": "maximal"}, 400, "reasoning"),
        ({"model": "tiny-chat", "input": [{"type": "audio", "data": "x"}]}, 400, "input"),
        ({"model": "nobody", "input": "x"}, 404, None),
    ]
    for body, status, named in cases:
        response = lms.post("/api/v1/chat", json=body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["message"], body
        if named:
            assert named in error["message"] or error.get("param") == named, (body, error)


def test_v1_download_says_a_model_here_is_downloaded_and_fetches_nothing(lms: httpx.Client) -> None:
    here = lms.post("/api/v1/models/download", json={"model": "tiny-chat"})
    assert here.status_code == 200 and here.json() == {"status": "already_downloaded"}
    publisher = lms.post("/api/v1/models/download", json={"model": "lmstudio-community/tiny-chat"})
    assert publisher.json() == {"status": "already_downloaded"}
    elsewhere = lms.post("/api/v1/models/download", json={"model": "no-such-model"})
    assert elsewhere.status_code == 404 and "Hugging Face" in elsewhere.json()["error"]["message"]
    # (downloads from the hub: test_downloads.py; this stack's hub address refuses connections)
    unreachable = lms.post("/api/v1/models/download", json={"model": "qwen/qwen3-4b-2507"})
    assert unreachable.status_code == 502 and "cannot reach" in unreachable.json()["error"]["message"]
    status = lms.get("/api/v1/models/download/status/job_493c7c9ded")
    assert status.status_code == 404 and status.json()["error"]["param"] == "job_id"
