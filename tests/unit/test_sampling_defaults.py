"""A model's sampling defaults (RunnerSettings.sampling) fill what a generation request leaves unset,
and a model whose file is not there is refused in words that say what is wrong with it."""

from __future__ import annotations

from typing import Any

import pytest

from proxies import gateway
from proxies.catalog_view import ModelView
from proxies.gateway import FaceError, apply_sampling_defaults
from proxies.ollama import translate as ollama
from runners.errors import file_problem


def make_view(**changes: Any) -> ModelView:
    fields: dict[str, Any] = {
        "name": "acme-chat",
        "kind": "llm",
        "enabled": True,
        "state": "available",
        "path": "/models/acme-chat.gguf",
        "size_bytes": 1,
        "mtime": None,
        "created": 0,
        "architecture": "llama",
        "display_name": "",
        "size_label": "",
        "parameter_count": None,
        "quantization": "",
        "file_type": None,
        "context_length": 4096,
        "embedding_length": None,
        "block_count": None,
        "head_count": None,
        "head_count_kv": None,
        "chat_template": "",
        "metadata": {},
        "capabilities": ("completion",),
        "digest": "",
        "aliases": (),
        "parameters": {},
        "sampling": {},
    }
    fields.update(changes)
    return ModelView(**fields)


def test_defaults_fill_the_fields_a_request_leaves_unset() -> None:
    model = make_view(sampling={"temperature": 0.2, "top_k": 20, "max_tokens": 64, "min_p": 0.05})
    payload = {"model": "acme-chat", "messages": [], "top_k": 5}
    assert apply_sampling_defaults(payload, model) is True
    assert payload == {
        "model": "acme-chat",
        "messages": [],
        "top_k": 5,
        "temperature": 0.2,
        "max_tokens": 64,
        "min_p": 0.05,
    }


def test_a_null_in_the_request_counts_as_unset() -> None:
    payload: dict[str, Any] = {"temperature": None}
    assert apply_sampling_defaults(payload, make_view(sampling={"temperature": 0.3}))
    assert payload == {"temperature": 0.3}


def test_a_model_without_defaults_leaves_the_request_untouched() -> None:
    payload = {"model": "acme-chat", "prompt": "hi"}
    assert apply_sampling_defaults(payload, make_view()) is False
    assert payload == {"model": "acme-chat", "prompt": "hi"}


def test_every_request_value_wins_so_nothing_changes() -> None:
    sampling = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64}
    payload = {"temperature": 1.0, "top_p": 0.5, "max_tokens": 8}
    assert apply_sampling_defaults(payload, make_view(sampling=sampling)) is False
    assert payload == {"temperature": 1.0, "top_p": 0.5, "max_tokens": 8}


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n_predict"])
def test_any_spelling_of_the_length_limit_in_the_request_beats_the_default_max_tokens(field: str) -> None:
    payload = {field: 7}
    assert apply_sampling_defaults(payload, make_view(sampling={"max_tokens": 64})) is False
    assert payload == {field: 7}


def test_fields_named_explicit_are_kept_even_when_the_body_lacks_them() -> None:
    payload: dict[str, Any] = {"messages": []}
    changed = apply_sampling_defaults(
        payload, make_view(sampling={"max_tokens": 64, "top_k": 3}), explicit={"max_tokens"}
    )
    assert changed and payload == {"messages": [], "top_k": 3}


def test_repeat_last_n_of_minus_one_becomes_the_runners_context_size() -> None:
    payload: dict[str, Any] = {}
    apply_sampling_defaults(payload, make_view(sampling={"repeat_last_n": -1}))
    assert payload == {"repeat_last_n": 4096}
    payload = {}
    apply_sampling_defaults(payload, make_view(sampling={"repeat_last_n": -1}, parameters={"ctx_size": 1024}))
    assert payload == {"repeat_last_n": 1024}


def test_dry_penalty_last_n_of_minus_one_becomes_the_runners_context_size_too() -> None:
    payload: dict[str, Any] = {}
    apply_sampling_defaults(payload, make_view(sampling={"dry_penalty_last_n": -1, "dry_multiplier": 0.8}))
    assert payload == {"dry_penalty_last_n": 4096, "dry_multiplier": 0.8}


def test_stored_keys_that_are_not_sampling_settings_are_not_sent() -> None:
    payload: dict[str, Any] = {}
    assert apply_sampling_defaults(payload, make_view(sampling={"ignore_eos": True, "bogus": 1})) is False
    assert payload == {}


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/chat/completions", "stop"),
        ("/v1/completions", "stop"),
        ("/completion", "stop"),
        ("/v1/responses", "stop"),  # llama-server passes the Responses API's other fields on
        ("/v1/messages", "stop_sequences"),
        ("/v1/messages/count_tokens", "stop_sequences"),
    ],
)
def test_default_stop_sequences_go_in_the_endpoints_own_field(path: str, field: str) -> None:
    stored = ["<|im_end|>", "\n\nUser:"]
    model = make_view(sampling={"stop": stored, "mirostat": 2, "mirostat_tau": 4.0})
    payload: dict[str, Any] = {}
    assert apply_sampling_defaults(payload, model, path=path)
    assert payload == {field: stored, "mirostat": 2, "mirostat_tau": 4.0}
    payload[field].append("mine")  # the request's list is its own
    assert stored == ["<|im_end|>", "\n\nUser:"]


@pytest.mark.parametrize(
    "payload",
    [
        {"stop": "###"},
        {"stop": []},  # an explicit "no stop sequences" is the client's to say
        {"stop_sequences": ["###"]},
    ],
)
def test_a_requests_own_stop_sequences_win(payload: dict[str, Any]) -> None:
    before = {**payload}
    model = make_view(sampling={"stop": ["<|im_end|>"]})
    assert not apply_sampling_defaults(payload, model, path="/v1/messages")
    assert payload == before
    assert not apply_sampling_defaults(payload, model, path="/v1/chat/completions")


def test_ollama_stop_options_decide_the_stop_field() -> None:
    model = make_view(sampling={"stop": ["<|im_end|>"]})
    request = ollama.GenerateRequest.model_validate(
        {"model": "acme-chat", "prompt": "hi", "options": {"stop": ["###"]}}
    )
    plan = ollama.generate_plan(request)
    apply_sampling_defaults(plan.body, model, explicit=ollama.requested_sampling_fields(request.options))
    assert plan.body["stop"] == ["###"]


def test_ollama_options_name_the_fields_they_decide_including_an_unbounded_num_predict() -> None:
    options = {"num_predict": -1, "temperature": 0.5, "num_ctx": 2048, "top_k": None, "ignore_eos": True}
    assert ollama.requested_sampling_fields(options) == {"max_tokens", "temperature", "ignore_eos"}
    assert ollama.requested_sampling_fields(None) == set()


def test_an_ollama_request_gets_defaults_after_translation_and_its_options_win() -> None:
    model = make_view(sampling={"max_tokens": 5, "temperature": 0.1})
    request = ollama.GenerateRequest.model_validate(
        {"model": "acme-chat", "prompt": "hi", "options": {"temperature": 0.9}}
    )
    plan = ollama.generate_plan(request)
    apply_sampling_defaults(plan.body, model, explicit=ollama.requested_sampling_fields(request.options))
    assert plan.body["max_tokens"] == 5 and plan.body["temperature"] == 0.9

    request = ollama.GenerateRequest.model_validate(
        {"model": "acme-chat", "prompt": "hi", "options": {"num_predict": 12}}
    )
    plan = ollama.generate_plan(request)
    apply_sampling_defaults(plan.body, model, explicit=ollama.requested_sampling_fields(request.options))
    assert plan.body["max_tokens"] == 12


@pytest.mark.parametrize(
    ("state", "error", "words"),
    [
        ("missing", "", "its file is missing"),
        ("error", "not a GGUF file", "its file could not be read: not a GGUF file"),
        ("error", "", "its file could not be read"),
    ],
)
def test_an_unavailable_file_is_described_by_its_state(state: str, error: str, words: str) -> None:
    assert file_problem(state, error) == words


@pytest.mark.parametrize(
    ("state", "error", "message"),
    [
        ("missing", "", "model 'acme-chat' is not available: its file is missing"),
        ("error", "bad magic", "model 'acme-chat' is not available: its file could not be read: bad magic"),
    ],
)
async def test_the_faces_refuse_a_model_whose_file_is_not_there_with_a_503_in_words(
    monkeypatch: pytest.MonkeyPatch, state: str, error: str, message: str
) -> None:
    view = make_view(state=state, error=error)

    async def resolve(name: str) -> ModelView:
        return view

    monkeypatch.setattr(gateway.catalog_view, "resolve", resolve)
    with pytest.raises(FaceError) as refused:
        await gateway.resolve_model("acme-chat", None)
    assert refused.value.status == 503
    assert refused.value.message == message


@pytest.fixture
def relayed(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The OpenAI face with the gateway's steps faked: what would go to the runner is captured."""
    from proxies import openai_face

    sent: dict[str, Any] = {}

    async def authorize(request: Any, ctx: Any) -> None:
        return None

    async def resolve_model(name: str | None, key: Any) -> ModelView:
        return sent["model"]

    async def acquire_runner(model: ModelView, ctx: Any, **kwargs: Any) -> object:
        return object()

    async def send_to_runner(
        lease: Any, ctx: Any, method: str, path: str, body: bytes, headers: Any, **kwargs: Any
    ) -> Any:
        sent["body"] = body
        return None

    monkeypatch.setattr(openai_face, "authorize", authorize)
    monkeypatch.setattr(openai_face, "resolve_model", resolve_model)
    monkeypatch.setattr(openai_face, "acquire_runner", acquire_runner)
    monkeypatch.setattr(openai_face, "send_to_runner", send_to_runner)
    return sent


async def relay(relayed: dict[str, Any], model: ModelView, raw: bytes, endpoint: str) -> bytes:
    from django.test import RequestFactory

    from proxies import openai_face

    relayed["model"] = model
    request = RequestFactory().post(f"/v1/{endpoint}", raw, content_type="application/json")
    await {"chat/completions": openai_face.chat_completions, "completions": openai_face.completions}[
        endpoint
    ](request)
    return relayed["body"]


async def test_the_openai_face_relays_the_clients_bytes_when_no_default_applies(
    relayed: dict[str, Any],
) -> None:
    raw = b'{"model":"acme-chat",  "messages": [{"role": "user", "content": "hi"}], "temperature": 1.5}'
    assert await relay(relayed, make_view(), raw, "chat/completions") == raw
    with_own_value = make_view(sampling={"temperature": 0.2})
    assert await relay(relayed, with_own_value, raw, "chat/completions") == raw


async def test_the_openai_face_sends_the_defaults_a_completion_lacks(relayed: dict[str, Any]) -> None:
    import json

    raw = b'{"model": "acme-chat", "prompt": "hi"}'
    body = await relay(relayed, make_view(sampling={"max_tokens": 5, "top_k": 2}), raw, "completions")
    assert json.loads(body) == {"model": "acme-chat", "prompt": "hi", "max_tokens": 5, "top_k": 2}


SYSTEM = "Answer in French."


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "hi"}]},
            {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]},
        ),
        ("/v1/messages", {"messages": [{"role": "user", "content": "hi"}]}, {"system": SYSTEM}),
        ("/v1/responses", {"input": "hi"}, {"instructions": SYSTEM}),
        ("/v1/responses", {"input": [{"role": "user", "content": "hi"}]}, {"instructions": SYSTEM}),
        ("/v1/messages/count_tokens", {"messages": []}, {"system": SYSTEM}),
        ("/v1/responses/input_tokens", {"input": "hi"}, {"instructions": SYSTEM}),
        (
            "/v1/chat/completions/input_tokens",
            {"messages": []},
            {"messages": [{"role": "system", "content": SYSTEM}]},
        ),
    ],
)
def test_a_default_system_prompt_goes_where_the_endpoint_takes_one(
    path: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    model = make_view(sampling={"system": SYSTEM, "temperature": 0.5})
    assert apply_sampling_defaults(payload, model, path=path)
    assert payload["temperature"] == 0.5
    assert ("system" in payload) == path.startswith("/v1/messages")  # a field only where the endpoint has one
    for key, value in expected.items():
        assert payload[key] == value


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/chat/completions", {"messages": [{"role": "system", "content": "mine"}]}),
        ("/v1/chat/completions", {"messages": [{"role": "developer", "content": "mine"}]}),
        ("/v1/chat/completions", {"messages": "not a list"}),  # llama-server says what is wrong
        ("/v1/messages", {"system": "mine", "messages": []}),
        ("/v1/messages", {"system": [{"type": "text", "text": "mine"}], "messages": []}),
        ("/v1/responses", {"instructions": "mine", "input": "hi"}),
        ("/v1/responses", {"input": [{"role": "developer", "content": "mine"}]}),
        ("/v1/completions", {"prompt": "raw text"}),
        ("", {"messages": []}),  # (no endpoint named: no place known)
    ],
)
def test_a_request_with_a_system_prompt_of_its_own_or_no_place_for_one_keeps_it(
    path: str, payload: dict[str, Any]
) -> None:
    before = {**payload}
    assert not apply_sampling_defaults(payload, make_view(sampling={"system": SYSTEM}), path=path)
    assert payload == before


def test_the_default_system_prompt_is_shown_as_ollama_shows_a_modelfiles() -> None:
    model = make_view(sampling={"system": SYSTEM, "temperature": 0.5})
    shown = ollama.show_response(model)
    assert shown["system"] == SYSTEM and "system" not in shown["parameters"]
    assert f'SYSTEM """{SYSTEM}"""' in shown["modelfile"]
    assert "system" not in ollama.show_response(make_view())


PRESETS = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A pirate."}]


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        (
            "/v1/chat/completions",
            {"messages": [{"role": "system", "content": "mine"}, {"role": "user", "content": "hi"}]},
            {
                "messages": [
                    {"role": "system", "content": "mine"},
                    *PRESETS,
                    {"role": "user", "content": "hi"},
                ]
            },
        ),
        (
            "/v1/messages",
            {"messages": [{"role": "user", "content": "hi"}]},
            {"messages": [*PRESETS, {"role": "user", "content": "hi"}]},
        ),
        (
            "/v1/responses",
            {"input": "hi"},
            {"input": [*PRESETS, {"role": "user", "content": "hi"}]},
        ),
        ("/v1/completions", {"prompt": "raw"}, {"prompt": "raw"}),
    ],
)
def test_preset_messages_begin_the_conversation_in_the_endpoints_shape(
    path: str, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    # (a preset system message has no place among Anthropic's messages)
    system = [{"role": "system", "content": "not a message there"}] if path == "/v1/messages" else []
    model = make_view(sampling={"messages": [*system, *PRESETS]})
    changed = apply_sampling_defaults(payload, model, path=path)
    assert changed is (path != "/v1/completions") and payload == expected


def test_the_default_system_prompt_comes_before_the_preset_messages() -> None:
    payload: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    for sampling in ({"messages": PRESETS, "system": SYSTEM}, {"system": SYSTEM, "messages": PRESETS}):
        payload = {"messages": [{"role": "user", "content": "hi"}]}
        apply_sampling_defaults(payload, make_view(sampling=sampling), path="/v1/chat/completions")
        assert [m["role"] for m in payload["messages"]] == ["system", "user", "assistant", "user"]
    shown = ollama.show_response(make_view(sampling={"messages": PRESETS}))
    assert shown["messages"] == PRESETS
    assert 'MESSAGE assistant """A pirate."""' in shown["modelfile"] and "messages" not in shown["parameters"]
