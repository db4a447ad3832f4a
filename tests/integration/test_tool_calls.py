"""Tool calls made by a real model, relayed through every face.

`tiny-caller` (models_catalog.tiny_model, `tool_caller=True`) calls a tool whenever it is offered
one: llama-server's own tool-call grammar and parser turn its output into a call, as they do for
Qwen or Hermes models. So these tests exercise the whole path a coding agent's request takes:
the tools reach the model's template, the call comes back from llama-server, and each face hands
it on in its own shape, whole and streamed.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import anthropic
import httpx
import ollama
import openai
import pytest

from models_catalog.tiny_model import write_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CITY_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("tool-stack")
    env, ports = stack_env(root, llama_server_binary)
    stack = Stack(root=root, env=env, ports=ports)
    write_tiny_model(stack.models_dir / "tiny-caller.gguf", name="tiny-caller", seed=3, tool_caller=True)
    stack.prepare_catalog()
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def openai_client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url("api") + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


@pytest.fixture
def ollama_client(stack) -> ollama.Client:
    return ollama.Client(host=stack.url("ollama"), timeout=60)


def test_the_catalog_lists_the_model_as_able_to_call_tools(stack) -> None:
    shown = httpx.post(stack.url("ollama") + "/api/show", json={"model": "tiny-caller"}).json()
    assert "tools" in shown["capabilities"]
    listed = {m["key"]: m for m in httpx.get(stack.url("lmstudio") + "/api/v1/models").json()["models"]}
    assert listed["tiny-caller"]["capabilities"]["trained_for_tool_use"] is True


def test_openai_a_whole_answer_carries_the_call(openai_client: openai.OpenAI) -> None:
    answer = openai_client.chat.completions.create(
        model="tiny-caller", messages=QUESTION, tools=[CITY_TOOL], temperature=0, max_tokens=200
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in {"Paris", "Rome"}
    assert not choice.message.content
    assert answer.model == "tiny-caller" and answer.usage.completion_tokens > 0


def test_openai_a_streamed_call_comes_in_pieces_that_add_up(openai_client: openai.OpenAI) -> None:
    whole = openai_client.chat.completions.create(
        model="tiny-caller", messages=QUESTION, tools=[CITY_TOOL], temperature=0, max_tokens=200
    )
    stream = openai_client.chat.completions.create(
        model="tiny-caller",
        messages=QUESTION,
        tools=[CITY_TOOL],
        temperature=0,
        max_tokens=200,
        stream=True,
        stream_options={"include_usage": True},
    )
    names, arguments, ids, finish, usage = [], [], set(), None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for piece in choice.delta.tool_calls or ():
                assert piece.index == 0
                ids.update([piece.id] if piece.id else [])
                names.append(piece.function.name or "")
                arguments.append(piece.function.arguments or "")
    assert finish == "tool_calls"
    assert len(ids) == 1 and len(arguments) > 1  # streamed, not sent whole at the end
    assert "".join(names) == "get_weather"
    assert json.loads("".join(arguments)) == json.loads(
        whole.choices[0].message.tool_calls[0].function.arguments
    )
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens


def test_openai_the_tool_choice_picks_the_tool(openai_client: openai.OpenAI) -> None:
    answer = openai_client.chat.completions.create(
        model="tiny-caller",
        messages=QUESTION,
        tools=[CITY_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
        max_tokens=200,
    )
    (call,) = answer.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    assert set(json.loads(call.function.arguments)) == {"city"}
    plain = openai_client.chat.completions.create(
        model="tiny-caller", messages=QUESTION, tools=[CITY_TOOL], tool_choice="none", max_tokens=4
    )
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].finish_reason == "length"


def test_openai_a_tool_result_goes_back_to_the_model(openai_client: openai.OpenAI) -> None:
    first = openai_client.chat.completions.create(
        model="tiny-caller", messages=QUESTION, tools=[CITY_TOOL], temperature=0, max_tokens=200
    )
    call = first.choices[0].message.tool_calls[0]
    history = [
        *QUESTION,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "22 degrees and sunny"},
    ]
    second = openai_client.chat.completions.create(
        model="tiny-caller", messages=history, tools=[CITY_TOOL], temperature=0, max_tokens=200
    )
    # The call and its result are in the prompt: it grew by more than the result's words.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 10
    assert second.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_ollama_a_whole_answer_carries_the_call_with_arguments_as_an_object(
    ollama_client: ollama.Client,
) -> None:
    answer = ollama_client.chat(
        model="tiny-caller", messages=QUESTION, tools=[CITY_TOOL], options={"temperature": 0}
    )
    (call,) = answer.message.tool_calls
    assert call.function.name == "get_weather"
    assert dict(call.function.arguments)["city"] in {"Paris", "Rome"}
    assert answer.done and answer.done_reason == "stop"
    assert answer.message.role == "assistant" and not answer.message.content
    assert answer.eval_count > 0 and answer.prompt_eval_count > 0


def test_ollama_a_streamed_call_comes_whole_in_one_message(ollama_client: ollama.Client) -> None:
    parts = list(
        ollama_client.chat(
            model="tiny-caller", messages=QUESTION, tools=[CITY_TOOL], options={"temperature": 0}, stream=True
        )
    )
    calls = [call for part in parts for call in part.message.tool_calls or ()]
    assert len(calls) == 1  # Ollama sends a call once it is whole, never in pieces
    assert calls[0].function.name == "get_weather"
    assert dict(calls[0].function.arguments)["city"] in {"Paris", "Rome"}
    assert parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count > 0


def test_ollama_a_tool_result_goes_back_to_the_model(ollama_client: ollama.Client) -> None:
    first = ollama_client.chat(
        model="tiny-caller", messages=QUESTION, tools=[CITY_TOOL], options={"temperature": 0}
    )
    history = [
        *QUESTION,
        first.message,
        {"role": "tool", "content": "22 degrees and sunny", "tool_name": "get_weather"},
    ]
    second = ollama_client.chat(
        model="tiny-caller", messages=history, tools=[CITY_TOOL], options={"temperature": 0}
    )
    assert second.prompt_eval_count > first.prompt_eval_count + 10
    assert second.message.tool_calls[0].function.name == "get_weather"


def test_lmstudio_the_call_and_its_stop_reason(stack) -> None:
    body = {"model": "tiny-caller", "messages": QUESTION, "tools": [CITY_TOOL], "temperature": 0}
    answer = httpx.post(stack.url("lmstudio") + "/api/v0/chat/completions", json=body, timeout=60).json()
    (call,) = answer["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["stats"]["stop_reason"] == "toolCalls"
    # The OpenAI-compatible routes on LM Studio's port answer as the OpenAI face does.
    openai_shape = httpx.post(stack.url("lmstudio") + "/v1/chat/completions", json=body, timeout=60).json()
    assert openai_shape["choices"][0]["message"]["tool_calls"][0]["function"] == call["function"]


ANTHROPIC_TOOL = {
    "name": CITY_TOOL["function"]["name"],
    "description": CITY_TOOL["function"]["description"],
    "input_schema": CITY_TOOL["function"]["parameters"],
}


def test_anthropic_a_call_comes_as_a_tool_use_block_whole_and_streamed(stack) -> None:
    """What Claude Code and other agents on Anthropic's API see (/v1/messages)."""
    client = anthropic.Anthropic(base_url=stack.url("api"), api_key="sk-ant-anything", max_retries=0)
    asked = {
        "model": "tiny-caller",
        "max_tokens": 200,
        "messages": QUESTION,
        "tools": [ANTHROPIC_TOOL],
        "extra_body": {"temperature": 0},  # (this SDK no longer takes it as an argument)
    }
    whole = client.messages.create(**asked)
    assert whole.stop_reason == "tool_use"
    (call,) = [block for block in whole.content if block.type == "tool_use"]
    assert call.name == "get_weather" and call.id and call.input["city"] in {"Paris", "Rome"}

    pieces = []
    with client.messages.stream(**asked) as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                pieces.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert len(pieces) > 1 and json.loads("".join(pieces)) == call.input
    (streamed_call,) = [block for block in final.content if block.type == "tool_use"]
    assert (streamed_call.name, streamed_call.input) == (call.name, call.input)
    assert final.usage.output_tokens == whole.usage.output_tokens

    # The tool's result goes back as a tool_result block.
    answered = client.messages.create(
        model="tiny-caller",
        max_tokens=5,
        tools=[ANTHROPIC_TOOL],
        messages=[
            *QUESTION,
            {"role": "assistant", "content": [block.model_dump() for block in whole.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "Sunny"}],
            },
        ],
    )
    assert answered.usage.input_tokens + (answered.usage.cache_read_input_tokens or 0) > (
        whole.usage.input_tokens + (whole.usage.cache_read_input_tokens or 0)
    )


def test_responses_a_call_comes_as_a_function_call_item(openai_client: openai.OpenAI) -> None:
    tool = {"type": "function", **CITY_TOOL["function"]}
    response = openai_client.responses.create(
        model="tiny-caller", input=QUESTION, tools=[tool], temperature=0, max_output_tokens=200
    )
    (call,) = [item for item in response.output if item.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] in {"Paris", "Rome"}


def test_usage_is_recorded_for_calls(stack, openai_client: openai.OpenAI) -> None:
    since = datetime.now(UTC).isoformat()
    answer = openai_client.chat.completions.create(
        model="tiny-caller", messages=QUESTION, tools=[CITY_TOOL], temperature=0, max_tokens=200
    )
    deadline = time.monotonic() + 15
    while not (rows := stack.usage_rows(model="tiny-caller", since=since)) and time.monotonic() < deadline:
        time.sleep(0.2)
    (row,) = rows
    assert row["status"] == 200 and row["face"] == "api" and row["endpoint"] == "chat/completions"
    assert row["completion_tokens"] == answer.usage.completion_tokens
    assert row["prompt_tokens"] == answer.usage.prompt_tokens
