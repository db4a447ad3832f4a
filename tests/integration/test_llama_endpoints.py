"""llama-server's other APIs through llamaproxy, routed by model as llama.cpp's router does: the
Responses API with the `openai` SDK, Anthropic's Messages API with the `anthropic` SDK (on every
API port), and llama-server's native routes on the OpenAI port; their usage recorded."""

from __future__ import annotations

import json
import time

import anthropic
import httpx
import openai
import pytest

from models_catalog.tiny_model import write_tiny_model

pytestmark = pytest.mark.integration

MODEL = "tiny-chat"
CODER = "tiny-coder"  # with fill-in-the-middle tokens
OTHERS = (CODER, "tiny-other")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("llama-endpoints-stack")
    env, ports = stack_env(root, llama_server_binary)
    stack = Stack(root=root, env=env, ports=ports)
    write_tiny_model(stack.models_dir / f"{MODEL}.gguf", name=MODEL, seed=1)
    write_tiny_model(stack.models_dir / f"{CODER}.gguf", name=CODER, seed=2, fim=True)
    write_tiny_model(stack.models_dir / "tiny-other.gguf", name="tiny-other", seed=3)
    stack.prepare_catalog()
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def oai(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url("api") + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


def claude(stack, face: str = "api") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url(face), api_key="sk-ant-anything", max_retries=0, timeout=60)


def row_for(stack, endpoint: str, since: int, timeout: float = 10) -> dict:
    """The newest usage row of `endpoint` with an id above `since` (rows are written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r for r in stack.usage_rows(endpoint=endpoint) if r["id"] > since]
        if rows or time.monotonic() > deadline:
            assert rows, f"no usage row for {endpoint}"
            return rows[0]
        time.sleep(0.2)


def last_row_id(stack) -> int:
    rows = stack.usage_rows(limit=1)
    return rows[0]["id"] if rows else 0


# --- the Responses API ----------------------------------------------------------------------


def test_the_responses_api_answers_and_its_usage_is_recorded(stack, oai: openai.OpenAI) -> None:
    since = last_row_id(stack)
    response = oai.responses.create(
        model=MODEL,
        input="Hello there",
        max_output_tokens=6,
        extra_body={"ignore_eos": True, "temperature": 0},
    )
    assert response.status == "completed"
    assert response.output_text
    assert response.usage.output_tokens == 6
    row = row_for(stack, "responses", since)
    assert (row["model"], row["status"], row["stream"]) == (MODEL, 200, False)
    assert (row["prompt_tokens"], row["completion_tokens"]) == (response.usage.input_tokens, 6)


def test_a_streamed_response_adds_up_and_is_counted(stack, oai: openai.OpenAI) -> None:
    since = last_row_id(stack)
    deltas, completed = [], None
    with oai.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": "Tell me a story"}],
        instructions="Be brief.",
        max_output_tokens=9,
        stream=True,
        extra_body={"ignore_eos": True, "temperature": 0},
    ) as events:
        for event in events:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            elif event.type == "response.completed":
                completed = event.response
    assert completed is not None
    assert "".join(deltas) == completed.output_text
    assert completed.usage.output_tokens == 9
    row = row_for(stack, "responses", since)
    assert row["stream"] is True
    assert (row["prompt_tokens"], row["completion_tokens"]) == (completed.usage.input_tokens, 9)
    assert row["cached_tokens"] == completed.usage.input_tokens_details.cached_tokens
    assert row["ttft_ms"] is not None and row["decode_tps"] is not None


def test_input_tokens_are_counted_without_generating(stack) -> None:
    for path, body in (
        ("/v1/responses/input_tokens", {"model": MODEL, "input": "Hello there"}),
        (
            "/v1/chat/completions/input_tokens",
            {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        ),
    ):
        response = httpx.post(stack.url("api") + path, json=body, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["input_tokens"] > 0


def test_a_responses_request_without_input_is_refused_in_openai_shape(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        oai.responses.create(model=MODEL, input=None)  # type: ignore[arg-type]
    error = refused.value.body
    assert error["param"] == "input" and "input" in error["message"]


# --- Anthropic's Messages API ---------------------------------------------------------------


def test_anthropic_messages_are_answered_and_counted(stack) -> None:
    since = last_row_id(stack)
    message = claude(stack).messages.create(
        model=MODEL,
        max_tokens=7,
        system="You are terse.",
        messages=[{"role": "user", "content": "Hello"}],
        extra_body={"ignore_eos": True, "temperature": 0},
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 7)
    prompt = message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0)
    row = row_for(stack, "messages", since)
    assert (row["model"], row["status"], row["face"]) == (MODEL, 200, "api")
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, 7)


def test_a_streamed_anthropic_message_adds_up_and_is_counted(stack) -> None:
    since = last_row_id(stack)
    messages = [{"role": "user", "content": "Write a line"}]
    with claude(stack).messages.stream(
        model=MODEL, max_tokens=8, messages=messages, extra_body={"ignore_eos": True, "temperature": 0}
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text
    assert final.usage.output_tokens == 8
    prompt = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0)
    row = row_for(stack, "messages", since)
    assert row["stream"] is True
    assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, 8)
    assert row["cached_tokens"] == (final.usage.cache_read_input_tokens or 0)
    assert row["ttft_ms"] is not None
    counted = claude(stack).messages.count_tokens(model=MODEL, messages=messages)
    assert counted.input_tokens == prompt


@pytest.mark.parametrize("face", ["ollama", "lmstudio"])
def test_the_ollama_and_lm_studio_ports_answer_anthropic_messages_too(stack, face: str) -> None:
    message = claude(stack, face).messages.create(
        model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
    )
    assert message.content and message.usage.output_tokens <= 3


def test_anthropic_clients_get_errors_in_anthropics_shape(stack) -> None:
    client = claude(stack)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(
            model="claude-nope", max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
        )
    assert unknown.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model 'claude-nope' not found"},
    }
    # llama-server itself would answer 500 for a request without messages.
    with pytest.raises(anthropic.BadRequestError) as no_messages:
        client.messages.create(model=MODEL, max_tokens=3, messages=[])
    assert no_messages.value.body["error"]["type"] == "invalid_request_error"
    assert "messages" in no_messages.value.body["error"]["message"]
    broken = httpx.post(
        stack.url("api") + "/v1/messages",
        content=b'{"model": "tiny-chat", "messages": [',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert broken.status_code == 400
    assert broken.json()["error"]["type"] == "invalid_request_error"
    wrong_type = httpx.post(
        stack.url("api") + "/v1/messages/count_tokens",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "system": 5},
        timeout=30,
    )
    assert wrong_type.status_code == 400 and "system" in wrong_type.json()["error"]["message"]


def test_anthropic_clients_list_and_retrieve_models_in_anthropics_shape(stack, oai: openai.OpenAI) -> None:
    client = claude(stack)
    listed = list(client.models.list())
    assert [m.id for m in listed] == [MODEL, *OTHERS]
    assert [m.id for m in claude(stack, "ollama").models.list()] == [MODEL, *OTHERS]  # every API port
    assert all(m.type == "model" and m.display_name and m.created_at.tzinfo for m in listed)
    # The SDK pages through `has_more` and `last_id`.
    assert [m.id for m in client.models.list(limit=1)] == [MODEL, *OTHERS]
    first = client.models.list(limit=2)
    assert (first.has_more, first.first_id, first.last_id) == (True, MODEL, OTHERS[0])
    before = client.models.list(limit=5, before_id=OTHERS[1])
    assert ([m.id for m in before.data], before.has_more) == ([MODEL, OTHERS[0]], False)
    assert client.models.retrieve(MODEL).display_name == MODEL
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.models.retrieve("claude-nope")
    assert unknown.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad_limit:
        client.models.list(limit=0)
    assert "limit" in bad_limit.value.body["error"]["message"]
    # Without `anthropic-version`, the same path is OpenAI's list, as before.
    assert {m.id for m in oai.models.list()} == {MODEL, *OTHERS}
    assert oai.models.retrieve(MODEL).owned_by == "llamaproxy"


# --- llama-server's native routes (the OpenAI port) -----------------------------------------


def test_native_completion_is_routed_by_model_whole_and_streamed(stack) -> None:
    since = last_row_id(stack)
    url = stack.url("api") + "/completion"
    whole = httpx.post(
        url, json={"model": MODEL, "prompt": "Once", "n_predict": 5, "ignore_eos": True}, timeout=60
    )
    assert whole.status_code == 200, whole.text
    assert whole.json()["tokens_predicted"] == 5
    row = row_for(stack, "completion", since)
    assert (row["model"], row["completion_tokens"]) == (MODEL, 5)
    assert row["prompt_tokens"] == whole.json()["tokens_evaluated"]

    since = row["id"]
    body = {"model": MODEL, "prompt": "Once", "n_predict": 4, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url, json=body, timeout=60) as streamed:
        assert streamed.status_code == 200
        frames = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: ")]
    assert sum(1 for frame in frames if frame.get("content")) >= 1 and frames[-1]["stop"] is True
    row = row_for(stack, "completion", since)
    assert (row["stream"], row["completion_tokens"]) == (True, 4)


def test_native_tokenize_detokenize_and_template(stack) -> None:
    api = stack.url("api")
    tokens = httpx.post(api + "/tokenize", json={"model": MODEL, "content": "hello world"}, timeout=60)
    assert tokens.status_code == 200, tokens.text
    ids = tokens.json()["tokens"]
    assert ids and all(isinstance(t, int) for t in ids)
    text = httpx.post(api + "/detokenize", json={"model": MODEL, "tokens": ids}, timeout=60)
    assert text.status_code == 200 and text.json()["content"].strip() == "hello world"
    prompt = httpx.post(
        api + "/apply-template",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]},
        timeout=60,
    )
    assert prompt.status_code == 200 and "Hi" in prompt.json()["prompt"]


def test_native_infill_fills_in_the_middle_whole_and_streamed_and_is_counted(stack) -> None:
    since = last_row_id(stack)
    body = {
        "model": CODER,
        "input_prefix": "def f(a",
        "input_suffix": "):\n",
        "n_predict": 4,
        "temperature": 0,
    }
    whole = httpx.post(stack.url("api") + "/infill", json=body, timeout=60)
    assert whole.status_code == 200, whole.text
    answer = whole.json()
    assert answer["tokens_predicted"] == 4 and answer["tokens_evaluated"] > 0
    with httpx.stream(
        "POST", stack.url("api") + "/infill", json={**body, "stream": True}, timeout=60
    ) as streamed:
        frames = [json.loads(line[5:]) for line in streamed.iter_lines() if line.startswith("data:")]
    assert "".join(frame["content"] for frame in frames) == answer["content"] and frames[-1]["stop"]
    row = row_for(stack, "infill", since)
    assert (row["model"], row["status"], row["completion_tokens"]) == (CODER, 200, 4)
    assert row["prompt_tokens"] == answer["tokens_evaluated"]


def test_openai_completions_with_a_suffix_fill_in_the_middle_whole_and_streamed(
    stack, oai: openai.OpenAI
) -> None:
    since = last_row_id(stack)
    asked = {"model": CODER, "prompt": "def f(a", "suffix": "):\n", "max_tokens": 4, "temperature": 0}
    whole = oai.completions.create(**asked)
    direct = httpx.post(
        stack.url("api") + "/infill",
        json={
            "model": CODER,
            "input_prefix": "def f(a",
            "input_suffix": "):\n",
            "n_predict": 4,
            "temperature": 0,
        },
        timeout=60,
    ).json()
    assert (whole.object, whole.model, whole.choices[0].finish_reason) == ("text_completion", CODER, "length")
    assert whole.choices[0].text == direct["content"]
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (direct["tokens_evaluated"], 4)
    chunks = list(oai.completions.create(**asked, stream=True))
    assert "".join(chunk.choices[0].text for chunk in chunks) == whole.choices[0].text
    assert all(chunk.id == chunks[0].id for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 4
    rows = [r for r in stack.usage_rows(model=CODER, endpoint="completions") if r["id"] > since]
    deadline = time.monotonic() + 10
    while len(rows) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = [r for r in stack.usage_rows(model=CODER, endpoint="completions") if r["id"] > since]
    assert [(r["stream"], r["status"], r["completion_tokens"]) for r in rows] == [
        (True, 200, 4),
        (False, 200, 4),
    ]
    assert rows[0]["prompt_tokens"] == direct["tokens_evaluated"] and rows[0]["ttft_ms"] is not None

    # An empty suffix is none: llama-server's own completions answer.
    plain = oai.completions.create(**{**asked, "suffix": ""})
    assert plain.usage.prompt_tokens < whole.usage.prompt_tokens  # no suffix, no FIM tokens
    # A model without fill-in-the-middle tokens: llama-server's refusal, as it gives it.
    with pytest.raises(openai.APIStatusError) as cannot:
        oai.completions.create(**{**asked, "model": MODEL})
    assert cannot.value.status_code == 501 and "Infill is not supported" in cannot.value.message
    for body, param in (({"suffix": 5}, "suffix"), ({"prompt": ["a", "b"]}, "prompt")):
        wrong = httpx.post(stack.url("api") + "/v1/completions", json={**asked, **body}, timeout=30)
        assert wrong.status_code == 400 and wrong.json()["error"]["param"] == param, wrong.text


def test_native_errors_pass_through_or_are_llamaproxys_own(stack) -> None:
    api = stack.url("api")
    # The tiny model has no fill-in-the-middle tokens: llama-server's refusal comes through as it is.
    infill = httpx.post(
        api + "/infill", json={"model": MODEL, "input_prefix": "a", "input_suffix": "b"}, timeout=60
    )
    assert infill.status_code == 501
    assert "Infill is not supported" in infill.json()["error"]["message"]
    missing = httpx.post(api + "/tokenize", json={"content": "hi"}, timeout=30)  # no model, no default
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"
    unknown = httpx.post(api + "/completion", json={"model": "nope", "prompt": "x"}, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    wrong = httpx.get(api + "/completion", timeout=30)
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
    # They are llama-server's own routes, served where llama-server's API is: not on Ollama's port.
    assert (
        httpx.post(stack.url("ollama") + "/completion", json={"model": MODEL}, timeout=30).status_code == 404
    )
