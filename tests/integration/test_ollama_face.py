"""The Ollama face through the official `ollama` client (and raw HTTP for headers) on the real stack."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import ollama
import pytest

from models_catalog.tiny_model import CHATML_TEMPLATE, TOOLS_TEMPLATE, write_tiny_lora, write_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
EMBEDDINGS_ON = (
    "from models_catalog.models import CatalogModel, RunnerSettings\n"
    "RunnerSettings.objects.update_or_create(model=CatalogModel.objects.get(name='tiny-embed'),"
    " defaults={'parameters': {'embeddings': True, 'pooling': 'mean'}})"
)
FIXED = {"num_predict": 6, "ignore_eos": True, "temperature": 0}


def prompt_tokens(stack, model: str, messages: list[dict]) -> int:
    """The prompt's length in tokens, as an OpenAI chat on the Ollama port has it counted."""
    body = {"model": model, "messages": messages, "max_tokens": 1}
    response = httpx.post(stack.url("ollama") + "/v1/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["usage"]["prompt_tokens"]


def prepare_catalog(stack) -> None:
    stack.prepare_catalog()
    stack.manage("shell", "-c", EMBEDDINGS_ON)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("ollama-stack")
    env, ports = stack_env(root, llama_server_binary, LLAMAPROXY_MAX_LOADED_MODELS="3")
    stack = Stack(root=root, env=env, ports=ports)
    write_tiny_model(
        stack.models_dir / "tiny-chat.gguf", name="tiny-chat", seed=1, chat_template=CHATML_TEMPLATE
    )
    write_tiny_model(
        stack.models_dir / "tiny-tools.gguf", name="tiny-tools", seed=3, chat_template=TOOLS_TEMPLATE
    )
    write_tiny_model(stack.models_dir / "tiny-embed.gguf", name="tiny-embed", seed=2)
    write_tiny_model(stack.models_dir / "tiny-coder.gguf", name="tiny-coder", seed=4, fim=True)
    prepare_catalog(stack)
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def client(stack) -> ollama.Client:
    return ollama.Client(host=stack.url("ollama"), timeout=50)


def loaded_names(client: ollama.Client) -> set[str]:
    return {m.model for m in client.ps().models}


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_it_answers_like_ollama_at_the_root_and_reports_a_recent_version(stack) -> None:
    root = httpx.get(stack.url("ollama") + "/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert root.headers["content-type"].startswith("text/plain")
    assert httpx.head(stack.url("ollama") + "/").status_code == 200
    version = httpx.get(stack.url("ollama") + "/api/version").json()["version"]
    assert tuple(int(part) for part in version.split(".")) >= (0, 6, 4)


def test_it_lists_models_with_tags_digests_and_details(client: ollama.Client, stack) -> None:
    models = {m.model: m for m in client.list().models}
    assert {"tiny-chat:latest", "tiny-tools:latest", "tiny-embed:latest"} <= set(models)
    chat = models["tiny-chat:latest"]
    assert chat.size == (stack.models_dir / "tiny-chat.gguf").stat().st_size
    assert len(chat.digest) == 64 and int(chat.digest, 16) >= 0
    assert chat.modified_at is not None
    assert chat.details.format == "gguf"
    assert chat.details.family == "llama" and chat.details.families == ["llama"]
    assert chat.details.parameter_size and chat.details.quantization_level


def test_show_gives_model_info_template_and_capabilities(client: ollama.Client) -> None:
    shown = client.show("tiny-chat:latest")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 4096
    assert shown.modelinfo["llama.embedding_length"] > 0
    assert "completion" in shown.capabilities
    assert "<|im_start|>" in shown.template
    assert shown.details.format == "gguf"
    assert "FROM " in shown.modelfile


def test_a_streamed_chat_is_ndjson_ending_with_counts_and_nanosecond_durations(stack) -> None:
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "options": FIXED}
    with httpx.stream("POST", stack.url("ollama") + "/api/chat", json=body, timeout=50) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        assert response.headers["cache-control"] == "no-cache"
        lines = [json.loads(line) for line in response.iter_lines() if line]
    *pieces, final = lines
    assert pieces and all(p["done"] is False and p["message"]["role"] == "assistant" for p in pieces)
    assert final["done"] is True and final["done_reason"] == "length"
    assert final["eval_count"] == 6 and final["prompt_eval_count"] > 0
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[name], int)
    assert final["total_duration"] >= final["eval_duration"] > 0


def test_the_client_chats_streamed_and_not(client: ollama.Client) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    parts = list(client.chat(model="tiny-chat", messages=messages, stream=True, options=FIXED))
    assert parts[-1].done and parts[-1].eval_count == 6
    assert "".join(p.message.content or "" for p in parts)
    whole = client.chat(model="tiny-chat", messages=messages, options=FIXED)
    assert whole.done and whole.done_reason == "length"
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count == 6 and whole.total_duration > 0


def test_the_client_generates_with_the_template_and_raw(client: ollama.Client) -> None:
    templated = client.generate(
        model="tiny-chat", prompt="Why is the sky blue?", system="Short.", options=FIXED
    )
    raw = client.generate(model="tiny-chat", prompt="Why is the sky blue?", raw=True, options=FIXED)
    assert templated.response and raw.response
    assert templated.eval_count == raw.eval_count == 6
    # The template wraps the prompt in role markers; raw sends it alone.
    assert templated.prompt_eval_count > raw.prompt_eval_count
    streamed = list(client.generate(model="tiny-chat", prompt="Tell", stream=True, options=FIXED))
    assert streamed[-1].done and streamed[-1].done_reason == "length"


def test_format_with_a_schema_constrains_the_answer(client: ollama.Client) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    answer = client.chat(
        model="tiny-chat",
        messages=[{"role": "user", "content": "How old is the Eiffel tower?"}],
        format=schema,
        options={"temperature": 0, "num_predict": 64},
    )
    assert isinstance(json.loads(answer.message.content)["age"], int)
    as_json = client.generate(
        model="tiny-chat", prompt="Some JSON", format="json", options={"num_predict": 64}
    )
    assert answer.done and as_json.done


def test_tool_definitions_calls_and_results_reach_the_models_template(client: ollama.Client) -> None:
    question = {"role": "user", "content": "Weather in Paris?"}
    history = [
        question,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "22 degrees and sunny", "tool_name": "get_weather"},
    ]
    plain = client.chat(model="tiny-tools", messages=[question], options=FIXED)
    with_tools = client.chat(model="tiny-tools", messages=[question], tools=[WEATHER_TOOL], options=FIXED)
    answered = client.chat(model="tiny-tools", messages=history, tools=[WEATHER_TOOL], options=FIXED)
    assert plain.prompt_eval_count < with_tools.prompt_eval_count < answered.prompt_eval_count
    assert answered.done and answered.message.role == "assistant"


def test_embed_and_the_legacy_embeddings(client: ollama.Client) -> None:
    embedded = client.embed(model="tiny-embed", input=["first text", "second text"])
    assert len(embedded.embeddings) == 2
    assert len(embedded.embeddings[0]) == len(embedded.embeddings[1]) > 0
    assert embedded.prompt_eval_count > 0 and embedded.total_duration > 0
    legacy = client.embeddings(model="tiny-embed", prompt="first text")
    assert len(legacy.embedding) == len(embedded.embeddings[0])


def test_ps_lists_loaded_runners_with_expiry_and_context(client: ollama.Client) -> None:
    client.generate(model="tiny-chat", prompt="hi", options=FIXED, keep_alive="5m")
    running = {m.model: m for m in client.ps().models}
    assert "tiny-chat:latest" in running
    entry = running["tiny-chat:latest"]
    assert entry.expires_at is not None and entry.context_length > 0
    assert entry.size > 0 and entry.size_vram is not None
    assert entry.details.family == "llama"


def test_an_empty_prompt_loads_and_keep_alive_zero_unloads(client: ollama.Client) -> None:
    client.generate(model="tiny-tools", prompt="", keep_alive=0)
    assert wait_until(lambda: "tiny-tools:latest" not in loaded_names(client))
    loaded = client.generate(model="tiny-tools", prompt="")
    assert loaded.done and loaded.done_reason == "load"
    assert "tiny-tools:latest" in loaded_names(client)
    unloaded = client.chat(model="tiny-tools", messages=[], keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert wait_until(lambda: "tiny-tools:latest" not in loaded_names(client))


def test_keep_alive_zero_unloads_after_the_answer(client: ollama.Client) -> None:
    answer = client.chat(
        model="tiny-tools", messages=[{"role": "user", "content": "x"}], options=FIXED, keep_alive=0
    )
    assert answer.eval_count == 6
    assert wait_until(lambda: "tiny-tools:latest" not in loaded_names(client))


def test_copy_makes_an_alias_and_delete_removes_it_but_never_the_file(client: ollama.Client, stack) -> None:
    assert client.copy("tiny-chat:latest", "my-chat").status == "success"
    assert "my-chat:latest" in {m.model for m in client.list().models}
    assert client.chat(
        model="my-chat:latest", messages=[{"role": "user", "content": "x"}], options=FIXED
    ).done
    assert client.delete("my-chat").status == "success"
    names = {m.model for m in client.list().models}
    assert "my-chat:latest" not in names and "tiny-chat:latest" in names
    assert (stack.models_dir / "tiny-chat.gguf").exists()


def test_create_from_a_model_makes_a_variant_with_the_modelfile_parameters(
    client: ollama.Client, stack
) -> None:
    progress = list(
        client.create(
            "tiny-chat-long",
            from_="tiny-chat:latest",
            parameters={"num_ctx": 1536, "temperature": 0.25, "num_predict": 5},
            stream=True,
        )
    )
    assert progress[-1].status == "success" and len(progress) > 1
    assert "tiny-chat-long:latest" in {m.model for m in client.list().models}
    shown = httpx.get(
        stack.url("dashboard") + "/api/manage/models/tiny-chat-long", headers=stack.admin_headers()
    ).json()
    assert shown["base"] == "tiny-chat" and shown["path"].endswith("tiny-chat.gguf")
    assert shown["settings"]["parameters"]["ctx_size"] == 1536
    assert shown["settings"]["sampling"] == {"temperature": 0.25, "max_tokens": 5}

    # The variant runs with its own context, and its default num_predict ends the answer.
    answer = client.generate(model="tiny-chat-long", prompt="hi", options={"ignore_eos": True})
    assert answer.done and answer.eval_count == 5
    loaded = {m.model: m for m in client.ps().models}
    assert loaded["tiny-chat-long:latest"].context_length == 1536

    # Creating it again replaces it (and its runner), as Ollama does; not stream → one object.
    again = client.create("tiny-chat-long", from_="tiny-chat", parameters={"num_ctx": 1024})
    assert again.status == "success"
    shown = httpx.get(
        stack.url("dashboard") + "/api/manage/models/tiny-chat-long", headers=stack.admin_headers()
    ).json()
    assert shown["settings"]["parameters"]["ctx_size"] == 1024 and shown["settings"]["sampling"] == {}
    assert wait_until(lambda: "tiny-chat-long:latest" not in loaded_names(client))

    assert client.delete("tiny-chat-long").status == "success"
    assert "tiny-chat-long:latest" not in {m.model for m in client.list().models}
    assert (stack.models_dir / "tiny-chat.gguf").exists()


def test_a_modelfiles_system_becomes_the_default_system_prompt_of_chats_without_one(
    client: ollama.Client, stack
) -> None:
    system = "You answer every question in French, briefly and politely."
    assert client.create("tiny-french", from_="tiny-chat", system=system).status == "success"
    shown = httpx.post(stack.url("ollama") + "/api/show", json={"model": "tiny-french"}, timeout=30).json()
    assert shown["system"] == system and f'SYSTEM """{system}"""' in shown["modelfile"]

    user = [{"role": "user", "content": "hi"}]
    with_default = prompt_tokens(stack, "tiny-french", user)
    assert with_default == prompt_tokens(stack, "tiny-chat", [{"role": "system", "content": system}, *user])
    assert with_default > prompt_tokens(stack, "tiny-chat", user)
    counted = httpx.post(
        stack.url("ollama") + "/v1/chat/completions/input_tokens",
        json={"model": "tiny-french", "messages": user},
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] == with_default
    own = [{"role": "system", "content": "Be terse."}, *user]
    assert prompt_tokens(stack, "tiny-french", own) == prompt_tokens(
        stack, "tiny-chat", own
    )  # its own one wins
    answer = client.chat(model="tiny-french", messages=user, options=FIXED)
    assert answer.done and answer.eval_count == FIXED["num_predict"]
    assert client.delete("tiny-french").status == "success"


def test_logprobs_come_with_every_generated_token_on_chat_and_generate(client: ollama.Client, stack) -> None:
    messages = [{"role": "user", "content": "hi"}]
    chat = client.chat(model="tiny-chat", messages=messages, options=FIXED, logprobs=True, top_logprobs=3)
    assert chat.logprobs is not None and len(chat.logprobs) == chat.eval_count == FIXED["num_predict"]
    for entry in chat.logprobs:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob

    streamed = list(
        client.generate(model="tiny-chat", prompt="hi", options=FIXED, logprobs=True, stream=True)
    )
    per_piece = [entry for part in streamed for entry in (part.logprobs or [])]
    assert len(per_piece) == FIXED["num_predict"] and all(entry.top_logprobs is None for entry in per_piece)

    raw = client.generate(
        model="tiny-chat", prompt="once", raw=True, options=FIXED, logprobs=True, top_logprobs=2
    )
    assert len(raw.logprobs or []) == FIXED["num_predict"] and len(raw.logprobs[0].top_logprobs) == 2
    plain = client.chat(model="tiny-chat", messages=messages, options=FIXED)
    assert plain.logprobs is None

    too_many = httpx.post(
        stack.url("ollama") + "/api/chat",
        json={"model": "tiny-chat", "messages": messages, "logprobs": True, "top_logprobs": 50},
        timeout=30,
    )
    assert too_many.status_code == 400 and "top_logprobs" in too_many.json()["error"]


def test_a_modelfiles_template_is_the_runners_chat_template_when_it_is_jinja(
    client: ollama.Client, stack
) -> None:
    # `ollama show --modelfile` sent back to `ollama create`: the file's own template, nothing kept.
    own = client.show("tiny-chat").template
    assert own and client.create("tiny-same", from_="tiny-chat", template=own).status == "success"
    settings = httpx.get(
        stack.url("dashboard") + "/api/manage/models/tiny-same", headers=stack.admin_headers()
    ).json()["settings"]
    assert "chat_template" not in settings["parameters"]

    # A Jinja template of its own is the runner's: here a chat is just its last message's text.
    template = "{{ messages[-1].content }}"
    assert client.create("tiny-bare", from_="tiny-chat", template=template).status == "success"
    assert client.show("tiny-bare").template == template
    text = "the quick brown fox"
    chat = httpx.post(
        stack.url("ollama") + "/v1/chat/completions",
        json={"model": "tiny-bare", "messages": [{"role": "user", "content": text}], "max_tokens": 1},
        timeout=60,
    )
    assert chat.status_code == 200, chat.text
    raw = httpx.post(
        stack.url("ollama") + "/v1/completions",
        json={"model": "tiny-chat", "prompt": text, "max_tokens": 1},
        timeout=60,
    ).json()
    assert chat.json()["usage"]["prompt_tokens"] == raw["usage"]["prompt_tokens"]

    go = httpx.post(
        stack.url("ollama") + "/api/create",
        json={"model": "tiny-go", "from": "tiny-chat", "template": "{{ .System }} {{ .Prompt }}"},
        timeout=30,
    )
    assert go.status_code == 400 and "Go templates" in go.json()["error"]
    for name in ("tiny-same", "tiny-bare"):
        assert client.delete(name).status == "success"


def test_a_modelfiles_stop_sequences_end_the_answers_of_every_face(client: ollama.Client, stack) -> None:
    # Greedy and without the prompt cache, the same request gives the same text every time.
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": "tell me more"}],
        "max_tokens": 24,
        "temperature": 0,
        "ignore_eos": True,
        "cache_prompt": False,
    }

    def chat(model: str, face: str = "ollama", **extra: Any) -> dict[str, Any]:
        response = httpx.post(
            stack.url(face) + "/v1/chat/completions", json={**body, "model": model, **extra}, timeout=60
        )
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]

    full = chat("tiny-chat")["message"]["content"]
    middle = len(full) // 2
    stop = full[middle : middle + 2]
    before_stop = full[: full.index(stop)]
    assert stop.strip() and len(before_stop) < len(full) - 1, full  # the random model said enough

    created = client.create("tiny-stops", from_="tiny-chat", parameters={"stop": [stop, "<never said>"]})
    assert created.status == "success"
    shown = httpx.post(stack.url("ollama") + "/api/show", json={"model": "tiny-stops"}, timeout=30).json()
    assert f"{'stop':<30} {json.dumps(stop)}" in shown["parameters"].splitlines()
    assert f"PARAMETER {'stop':<30} {json.dumps(stop)}" in shown["modelfile"]

    answer = chat("tiny-stops")  # OpenAI, on the Ollama port
    assert (answer["message"]["content"], answer["finish_reason"]) == (before_stop, "stop")
    answer = chat("tiny-stops", face="api", stop=[])  # a request's own (none) wins
    assert answer["message"]["content"] == full

    ollama_chat = client.chat(
        model="tiny-stops",
        messages=body["messages"],
        options={"num_predict": 24, "temperature": 0, "ignore_eos": True},
    )
    assert ollama_chat.message.content == before_stop and ollama_chat.done_reason == "stop"

    messages = httpx.post(  # Anthropic's Messages API takes them as stop_sequences
        stack.url("api") + "/v1/messages",
        json={"model": "tiny-stops", **body},
        timeout=60,
    )
    assert messages.status_code == 200, messages.text
    content = "".join(block.get("text", "") for block in messages.json()["content"])
    assert content == before_stop and messages.json()["stop_reason"] == "end_turn"
    assert client.delete("tiny-stops").status == "success"


def test_a_modelfiles_messages_begin_every_chat_of_the_created_model(client: ollama.Client, stack) -> None:
    presets = [
        {"role": "user", "content": "Who are you?"},
        {"role": "assistant", "content": "A pirate, arr."},
    ]
    steps = list(
        client.create("tiny-pirate", from_="tiny-chat", messages=presets, license="MIT", stream=True)
    )
    assert steps[-1].status == "success" and "license not kept" in steps[0].status
    shown = httpx.post(stack.url("ollama") + "/api/show", json={"model": "tiny-pirate"}, timeout=30).json()
    assert shown["messages"] == presets and 'MESSAGE user """Who are you?"""' in shown["modelfile"]

    user = [{"role": "user", "content": "hi"}]
    assert prompt_tokens(stack, "tiny-pirate", user) == prompt_tokens(stack, "tiny-chat", [*presets, *user])
    chat = client.chat(model="tiny-pirate", messages=user, options=FIXED)
    assert chat.prompt_eval_count == prompt_tokens(stack, "tiny-chat", [*presets, *user])
    bad = httpx.post(
        stack.url("ollama") + "/api/create",
        json={"model": "tiny-bad", "from": "tiny-chat", "messages": [{"role": "tool", "content": "x"}]},
        timeout=30,
    )
    assert bad.status_code == 400 and "messages" in bad.json()["error"]
    assert client.delete("tiny-pirate").status == "success"


def test_create_from_an_uploaded_gguf_keeps_the_blob_until_its_last_model_is_deleted(
    client: ollama.Client, stack, tmp_path
) -> None:
    source = write_tiny_model(
        tmp_path / "Uploaded.gguf", name="uploaded", seed=5, chat_template=CHATML_TEMPLATE
    )[0]
    digest = "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    blob_url = stack.url("ollama") + "/api/blobs/"
    assert httpx.head(blob_url + digest).status_code == 404
    assert client.create_blob(source) == digest
    assert httpx.head(blob_url + digest).status_code == 200
    assert httpx.post(blob_url + digest, content=source.read_bytes()).status_code == 201  # again: kept once

    progress = list(
        client.create("my-upload", files={"Uploaded.gguf": digest}, parameters={"num_ctx": 1024}, stream=True)
    )
    assert progress[-1].status == "success"
    listed = {m.model: m for m in client.list().models}
    assert listed["my-upload:latest"].digest == digest.removeprefix("sha256:")
    assert listed["my-upload:latest"].size == source.stat().st_size
    answer = client.generate(model="my-upload", prompt="hi", options=FIXED)
    assert answer.done and answer.eval_count == FIXED["num_predict"]
    loaded = {m.model: m for m in client.ps().models}
    assert loaded["my-upload:latest"].context_length == 1024

    # Created again from the same blob (nothing to upload): replaced, the blob kept.
    assert client.create("my-upload", files={"Uploaded.gguf": digest}).status == "success"
    assert httpx.head(blob_url + digest).status_code == 200
    assert client.delete("my-upload").status == "success"
    assert httpx.head(blob_url + digest).status_code == 404
    assert "my-upload:latest" not in {m.model for m in client.list().models}
    assert source.exists()


def test_create_with_quantize_makes_a_file_of_that_type_that_runs_and_goes_with_its_model(
    client: ollama.Client, stack, tmp_path
) -> None:
    progress = list(client.create("tiny-q8", from_="tiny-chat", quantize="q8_0", stream=True))
    assert progress[0].status == "quantizing F32 model to Q8_0" and progress[-1].status == "success"
    assert any(p.total and p.completed == p.total for p in progress)  # llama-quantize's tensors
    listed = {m.model: m for m in client.list().models}
    assert listed["tiny-q8:latest"].details.quantization_level == "Q8_0"
    assert listed["tiny-q8:latest"].size < listed["tiny-chat:latest"].size / 3
    answer = client.generate(model="tiny-q8", prompt="hi", options=FIXED)
    assert answer.done and answer.eval_count == FIXED["num_predict"]
    digest = "sha256:" + listed["tiny-q8:latest"].digest
    assert httpx.head(stack.url("ollama") + "/api/blobs/" + digest).status_code == 200

    # From an uploaded GGUF, not streamed; a quantized model is not quantized again.
    source = write_tiny_model(tmp_path / "F16.gguf", name="f16", seed=4, file_type="F16")[0]
    uploaded = client.create_blob(source)
    made = client.create("tiny-up-q4", files={"F16.gguf": uploaded}, quantize="Q4_K_M")
    assert made.status == "success"
    assert client.show("tiny-up-q4").details.quantization_level == "Q4_K_M"
    assert httpx.head(stack.url("ollama") + "/api/blobs/" + uploaded).status_code == 404  # not kept
    with pytest.raises(ollama.ResponseError) as again:
        client.create("tiny-qq", from_="tiny-q8", quantize="q4_K_M")
    assert again.value.status_code == 400 and "only F32, F16 and BF16" in again.value.error
    with pytest.raises(ollama.ResponseError) as unknown:
        client.create("tiny-qq", from_="tiny-chat", quantize="q3")
    assert unknown.value.status_code == 400 and "Q4_K_M" in unknown.value.error
    with pytest.raises(ollama.ResponseError) as taken:  # checked before any quantizing
        client.create("tiny-chat", from_="tiny-chat", quantize="q8_0")
    assert taken.value.status_code == 400

    assert client.delete("tiny-q8").status == "success"
    assert httpx.head(stack.url("ollama") + "/api/blobs/" + digest).status_code == 404  # went with it
    assert client.delete("tiny-up-q4").status == "success"
    assert not list((stack.home / "blobs").glob(".quantize-*"))


def test_the_dashboards_api_quantizes_a_model_into_a_new_one_streaming_progress(client, stack) -> None:
    manage = stack.url("dashboard") + "/api/manage/models/"
    headers = stack.admin_headers()
    changed = httpx.patch(manage + "tiny-chat", json={"sampling": {"temperature": 0.3}}, headers=headers)
    assert changed.status_code == 200
    with httpx.stream(
        "POST", manage + "tiny-chat/quantize", json={"name": "tiny-dash-q8", "type": "q8_0"}, headers=headers
    ) as streamed:
        assert streamed.status_code == 200
        lines = [json.loads(line) for line in streamed.iter_lines() if line]
    assert lines[0] == {"status": "quantizing", "from": "F32", "type": "Q8_0", "completed": 0, "total": 0}
    assert lines[-2]["completed"] == lines[-2]["total"] > 0
    assert lines[-1]["status"] == "success" and lines[-1]["model"] == "tiny-dash-q8"
    made = httpx.get(manage + "tiny-dash-q8", headers=headers).json()
    assert made["quantization"] == "Q8_0" and made["settings"]["sampling"]["temperature"] == 0.3
    assert (
        client.generate(model="tiny-dash-q8", prompt="hi", options=FIXED).eval_count == FIXED["num_predict"]
    )

    for body, field in (
        ({"name": "x", "type": "Q9"}, "type"),
        ({"name": "tiny-coder", "type": "Q8_0"}, "model"),  # taken
    ):
        refused = httpx.post(manage + "tiny-chat/quantize", json=body, headers=headers)
        assert refused.status_code in (400, 409) and refused.json()["error"]["field"] == field
    again = httpx.post(manage + "tiny-dash-q8/quantize", json={"name": "y", "type": "Q4_0"}, headers=headers)
    assert again.status_code == 400 and "is Q8_0" in again.json()["error"]["message"]
    assert (
        httpx.post(manage + "nope/quantize", json={"name": "y", "type": "Q4_0"}, headers=headers).status_code
        == 404
    )
    assert httpx.delete(manage + "tiny-dash-q8", headers=headers).status_code == 200
    httpx.patch(manage + "tiny-chat", json={"sampling": {"temperature": None}}, headers=headers)


def test_create_from_a_gguf_the_catalog_has_uploads_nothing_and_makes_a_variant(
    client: ollama.Client, stack
) -> None:
    # `ollama show --modelfile tiny-chat` prints FROM <its file>; the CLI asks for that file's
    # blob by digest before uploading it. Listed once, the file's digest is known here.
    path = stack.models_dir / "tiny-chat.gguf"
    digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert {m.model: m.digest for m in client.list().models}["tiny-chat:latest"] == digest.removeprefix(
        "sha256:"
    )
    assert httpx.head(stack.url("ollama") + "/api/blobs/" + digest).status_code == 200

    progress = list(
        client.create(
            "tiny-from-file", files={"tiny-chat.gguf": digest}, parameters={"num_ctx": 768}, stream=True
        )
    )
    assert progress[-1].status == "success" and "already here" in progress[0].status
    shown = httpx.get(
        stack.url("dashboard") + "/api/manage/models/tiny-from-file", headers=stack.admin_headers()
    ).json()
    assert (shown["base"], shown["path"]) == ("tiny-chat", str(path))
    assert shown["settings"]["parameters"]["ctx_size"] == 768
    assert not (stack.home / "blobs" / digest.replace(":", "-")).exists()  # nothing was copied
    answer = client.generate(model="tiny-from-file", prompt="hi", options=FIXED)
    assert answer.done and answer.eval_count == FIXED["num_predict"]

    assert client.delete("tiny-from-file").status == "success"
    assert path.exists() and httpx.head(stack.url("ollama") + "/api/blobs/" + digest).status_code == 200


def test_create_with_a_lora_adapter_runs_the_model_with_it_and_rm_drops_the_adapter(
    client: ollama.Client, stack, tmp_path
) -> None:
    adapter = write_tiny_lora(tmp_path / "adapter.gguf", seed=3)
    digest = client.create_blob(adapter)
    created = list(
        client.create("tiny-lora", from_="tiny-chat", adapters={"adapter.gguf": digest}, stream=True)
    )
    assert created[-1].status == "success" and any("LoRA adapter" in step.status for step in created)
    blob = stack.home / "blobs" / digest.replace(":", "-")
    shown = httpx.get(
        stack.url("dashboard") + "/api/manage/models/tiny-lora", headers=stack.admin_headers()
    ).json()
    assert shown["settings"]["extra_args"] == ["--lora", str(blob)]
    assert f"ADAPTER {blob}" in client.show("tiny-lora").modelfile

    # The runner loads it (llama-server lists its adapters), and it changes what the model says.
    answer = client.generate(model="tiny-lora", prompt="once upon", options=FIXED)
    assert answer.done and answer.eval_count == FIXED["num_predict"]
    loaded = httpx.get(stack.url("api") + "/upstream/tiny-lora/lora-adapters", timeout=30).json()
    assert [entry["path"] for entry in loaded] == [str(blob)]
    assert answer.response != client.generate(model="tiny-chat", prompt="once upon", options=FIXED).response

    assert client.delete("tiny-lora").status == "success"
    assert not blob.exists()  # no model loads it any more
    not_an_adapter = client.create_blob(stack.models_dir / "tiny-chat.gguf")
    refused = httpx.post(
        stack.url("ollama") + "/api/create",
        json={"model": "tiny-x", "from": "tiny-chat", "adapters": {"m.gguf": not_an_adapter}},
        timeout=30,
    )
    assert refused.status_code == 400 and "LoRA adapters in GGUF" in refused.json()["error"]


def test_blobs_and_files_that_cannot_make_a_model_are_refused(client: ollama.Client, stack) -> None:
    blob_url = stack.url("ollama") + "/api/blobs/"
    zeros = "sha256:" + "0" * 64
    wrong = httpx.post(blob_url + zeros, content=b"not these bytes")
    assert wrong.status_code == 400 and "digest mismatch" in wrong.json()["error"]
    assert httpx.head(blob_url + zeros).status_code == 404
    assert httpx.post(blob_url + "md5:abc", content=b"x").status_code == 400
    assert httpx.head(blob_url + "nonsense").status_code == 400

    text = b"this is not a model"
    digest = "sha256:" + hashlib.sha256(text).hexdigest()
    assert httpx.post(blob_url + digest, content=text).status_code == 201
    cases = [
        ({"model": "m", "files": {"m.gguf": digest}}, "not a model"),
        ({"model": "m", "files": {"m.gguf": zeros}}, "no blob"),
        ({"model": "m", "files": {"a.gguf": digest, "b.gguf": digest}}, "exactly one GGUF"),
        ({"model": "m", "files": {"model.safetensors": digest}}, "exactly one GGUF"),
        ({"model": "m", "files": {"m.gguf": digest}, "from": "tiny-chat"}, "from"),
        ({"model": "m", "files": {"m.gguf": 5}}, "files"),
    ]
    for body, message in cases:
        response = httpx.post(stack.url("ollama") + "/api/create", json=body, timeout=30)
        assert response.status_code == 400, (body, response.text)
        assert message in response.json()["error"], (body, response.text)
    assert "m:latest" not in {m.model for m in client.list().models}


def test_unknown_models_and_bad_input_get_ollama_errors(client: ollama.Client, stack) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404 and "not found" in missing.value.error
    base = stack.url("ollama")
    cases = [
        ("POST", "/api/chat", b"{not json", 400),
        ("POST", "/api/chat", json.dumps({"model": "tiny-chat", "messages": "hi"}).encode(), 400),
        (
            "POST",
            "/api/generate",
            json.dumps({"model": "tiny-chat", "prompt": "x", "options": {"temperature": "hot"}}).encode(),
            400,
        ),
        (
            "POST",
            "/api/generate",
            json.dumps({"model": "tiny-chat", "prompt": "x", "keep_alive": "soon"}).encode(),
            400,
        ),
        ("POST", "/api/embed", json.dumps({"model": "tiny-chat", "input": "x"}).encode(), 400),
        ("POST", "/api/show", json.dumps({"model": "nope"}).encode(), 404),
        ("POST", "/api/pull", json.dumps({"model": "llama3:8b"}).encode(), 502),  # (no registry here)
        ("POST", "/api/pull", json.dumps({"model": "bad name"}).encode(), 400),
        ("POST", "/api/create", json.dumps({"model": "x"}).encode(), 400),
        ("POST", "/api/create", json.dumps({"model": "x", "from": "nope"}).encode(), 404),
        (
            "POST",
            "/api/create",
            json.dumps({"model": "x", "from": "tiny-chat", "template": "{{ .Prompt }}"}).encode(),  # Go
            400,
        ),
        ("POST", "/api/create", json.dumps({"model": "tiny-embed", "from": "tiny-chat"}).encode(), 400),
        (
            "POST",
            "/api/create",
            json.dumps({"model": "x", "from": "tiny-chat", "parameters": {"num_ctx": "big"}}).encode(),
            400,
        ),
        (
            "POST",
            "/api/create",
            json.dumps({"model": "x", "from": "tiny-chat", "parameters": {"ignore_eos": True}}).encode(),
            400,
        ),
        ("GET", "/api/nothing-here", b"", 404),
    ]
    for method, path, content, status in cases:
        response = httpx.request(method, base + path, content=content, timeout=30)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"] == "application/json", path
        assert isinstance(response.json()["error"], str) and response.json()["error"], path


def test_a_client_that_disconnects_cancels_the_generation_and_the_face_is_recorded(stack) -> None:
    body = {
        "model": "tiny-chat",
        "messages": [{"role": "user", "content": "go on"}],
        "options": {"num_predict": 200000, "ignore_eos": True},
    }
    offset = stack.runner_log_size("tiny-chat")
    with httpx.stream("POST", stack.url("ollama") + "/api/chat", json=body, timeout=30) as response:
        for count, _ in enumerate(response.iter_lines()):
            if count >= 3:
                break
    rows: list[dict] = []

    def recorded() -> bool:
        rows[:] = httpx.get(
            stack.url("dashboard") + "/api/manage/usage",
            params={"face": "ollama", "limit": 500},
            headers=stack.admin_headers(),
        ).json()["results"]
        return any("disconnect" in (row.get("error") or "") for row in rows)

    assert wait_until(recorded, timeout=15), rows[:3]
    # Left alone, the tiny model would fill its 4,096-token context in about a second; llama-server
    # logs how far the task got when the cancel released its slot.
    assert wait_until(lambda: stack.slot_releases("tiny-chat", offset), timeout=10)
    assert stack.slot_releases("tiny-chat", offset)[-1] < 2048
    assert {row["face"] for row in rows} == {"ollama"}
    assert {"chat", "generate", "embed"} <= {row["endpoint"] for row in rows}


def runner_of(stack, model: str) -> dict:
    runners = httpx.get(stack.url("dashboard") + "/api/manage/runners", headers=stack.admin_headers()).json()
    return next(r for r in runners if r["model"] == model)


def test_num_ctx_restarts_the_runner_only_when_it_differs(client: ollama.Client, stack) -> None:
    messages = [{"role": "user", "content": "hi"}]
    client.chat(model="tiny-chat", messages=messages, options={**FIXED, "num_ctx": 1024})
    first = runner_of(stack, "tiny-chat")
    assert first["state"] == "ready"
    loaded = {m.model: m for m in client.ps().models}
    assert loaded["tiny-chat:latest"].context_length == 1024

    client.chat(model="tiny-chat", messages=messages, options={**FIXED, "num_ctx": 1024})
    assert runner_of(stack, "tiny-chat")["pid"] == first["pid"]

    client.chat(model="tiny-chat", messages=messages, options={**FIXED, "num_ctx": 2048})
    second = runner_of(stack, "tiny-chat")
    assert second["pid"] != first["pid"]
    loaded = {m.model: m for m in client.ps().models}
    assert loaded["tiny-chat:latest"].context_length == 2048


def test_repeat_last_n_of_minus_one_means_the_whole_context(client: ollama.Client) -> None:
    answer = client.generate(model="tiny-chat", prompt="hi", options={**FIXED, "repeat_last_n": -1})
    assert answer.done and answer.eval_count == FIXED["num_predict"]


def test_a_suffix_fills_in_the_middle_with_a_model_that_can_insert(client: ollama.Client, stack) -> None:
    assert "insert" in client.show("tiny-coder").capabilities
    assert "insert" not in client.show("tiny-chat").capabilities
    prefix, suffix = "def add(a, b):\n    ", "\n    return c\n"
    whole = client.generate(model="tiny-coder", prompt=prefix, suffix=suffix, options=FIXED, keep_alive=0)
    streamed = list(
        client.generate(
            model="tiny-coder", prompt=prefix, suffix=suffix, options=FIXED, stream=True, keep_alive=0
        )
    )
    assert whole.response and whole.done_reason == "length" and whole.eval_count == 6
    assert "".join(piece.response for piece in streamed) == whole.response
    assert streamed[-1].done and streamed[-1].prompt_eval_count == whole.prompt_eval_count
    # The same as llama-server's own /infill answers: the prefix and suffix around its FIM tokens.
    direct = httpx.post(
        stack.url("api") + "/upstream/tiny-coder/infill",
        json={
            "input_prefix": prefix,
            "input_suffix": suffix,
            "n_predict": 6,
            "ignore_eos": True,
            "temperature": 0,
        },
        timeout=60,
    ).json()
    assert (direct["content"], direct["tokens_evaluated"]) == (whole.response, whole.prompt_eval_count)
    assert wait_until(lambda: len(stack.usage_rows(model="tiny-coder", endpoint="generate")) == 2)
    row = stack.usage_rows(model="tiny-coder", endpoint="generate")[0]
    assert (row["face"], row["completion_tokens"], row["prompt_tokens"]) == (
        "ollama",
        6,
        whole.prompt_eval_count,
    )
    assert row["ttft_ms"] is not None

    with pytest.raises(ollama.ResponseError) as cannot:
        client.generate(model="tiny-chat", prompt=prefix, suffix=suffix)
    assert cannot.value.status_code == 400 and cannot.value.error == '"tiny-chat" does not support insert'
    with pytest.raises(ollama.ResponseError) as raw:
        client.generate(model="tiny-coder", prompt=prefix, suffix=suffix, raw=True)
    assert raw.value.status_code == 400 and "raw" in raw.value.error
    httpx.post(
        stack.url("ollama") + "/api/generate", json={"model": "tiny-coder", "keep_alive": 0}, timeout=30
    )
