"""Ollama ⇄ OpenAI translation, table-driven over fixtures written from the documented shapes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from proxies.catalog_view import ModelView
from proxies.ollama import translate as t

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ollama"
NOW = 1_700_000_000.0


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def make_view(**changes: Any) -> ModelView:
    view = ModelView(
        name="acme-chat",
        kind="llm",
        enabled=True,
        state="available",
        path="/models/acme-chat.Q4_K_M.gguf",
        size_bytes=4_920_000_000,
        mtime=NOW,
        created=int(NOW),
        architecture="llama",
        display_name="Acme Chat",
        size_label="8B",
        parameter_count=8_030_000_000,
        quantization="Q4_K_M",
        file_type=15,
        context_length=131072,
        embedding_length=4096,
        block_count=32,
        head_count=32,
        head_count_kv=8,
        chat_template="{{ messages }}",
        metadata={"llama.rope.freq_base": 500000.0, "general.basename": "acme"},
        capabilities=("completion", "tools"),
        digest="",
        aliases=("acme",),
        parameters={},
        sampling={"temperature": 0.7, "stop": ["<|eot_id|>"]},
    )
    return replace(view, **changes)


def feed_all(stream: t.OllamaStream, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for chunk in chunks:
        objects += stream.feed(chunk, NOW)
    objects.append(stream.final(NOW, total_ns=5_000_000, load_ns=1_000_000))
    return objects


# --- keep_alive and options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keep_alive", "ttl"),
    [
        (None, None),
        ("", None),
        (0, 0),
        ("0", 0),
        ("0s", 0),
        (-1, -1),
        ("-1m", -1),
        ("-1", -1),
        (300, 300),
        (2.4, 2),
        ("5m", 300),
        ("1h30m", 5400),
        ("90s", 90),
        ("500ms", 1),
    ],
)
def test_keep_alive_becomes_the_schedulers_ttl(keep_alive: Any, ttl: int | None) -> None:
    assert t.keep_alive_seconds(keep_alive) == ttl


@pytest.mark.parametrize("keep_alive", ["soon", "5 minutes", "m5", "1x"])
def test_a_keep_alive_that_is_no_duration_is_refused_naming_it(keep_alive: str) -> None:
    with pytest.raises(t.TranslationError, match="keep_alive"):
        t.keep_alive_seconds(keep_alive)


def test_options_split_into_request_fields_and_runner_parameters() -> None:
    options = t.split_options(
        {
            "temperature": 0,
            "top_p": 0.9,
            "num_keep": 4,
            "num_predict": 32,
            "num_ctx": 4096,
            "num_gpu": 0,
            "num_thread": 2,
            "num_batch": 256,
            "use_mmap": True,  # applied at load time by Ollama; llama-server has no request field
            "ignore_eos": True,
        }
    )
    assert options.sampling == {
        "temperature": 0.0,
        "top_p": 0.9,
        "n_keep": 4,
        "max_tokens": 32,
        "ignore_eos": True,
    }
    assert options.runner_params == {"ctx_size": 4096, "n_gpu_layers": 0, "threads": 2, "batch_size": 256}


@pytest.mark.parametrize("num_predict", [-1, -2, 0])
def test_unbounded_num_predict_leaves_the_length_to_llama_server(num_predict: int) -> None:
    assert "max_tokens" not in t.split_options({"num_predict": num_predict}).sampling


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": "hot"}, '"temperature" must be a number'),
        ({"top_k": 2.5}, '"top_k" must be a whole number'),
        ({"num_ctx": -5}, '"num_ctx" must not be negative'),
        ({"stop": "x"}, None),
        ({"stop": [1]}, '"stop" must be a list'),
        ({"ignore_eos": 1}, '"ignore_eos" must be true or false'),
    ],
)
def test_options_of_the_wrong_type_are_refused_by_name(options: dict, message: str | None) -> None:
    if message is None:
        assert t.split_options(options).sampling == {"stop": ["x"]}
        return
    with pytest.raises(t.TranslationError, match=message):
        t.split_options(options)


# --- requests -------------------------------------------------------------------------------------


def test_a_chat_with_images_tools_and_options_becomes_the_openai_request() -> None:
    case = fixture("chat_request_tools_images.json")
    plan = t.chat_plan(t.validate(t.ChatRequest, case["request"]))
    assert plan.path == "/v1/chat/completions"
    assert plan.body["messages"] == case["expected_messages"]
    assert plan.body["tools"] == case["request"]["tools"]
    for name, value in case["expected_sampling"].items():
        assert plan.body[name] == value
    assert plan.runner_params == case["expected_runner_params"]
    assert plan.ttl == case["expected_ttl"]
    # Always streamed upstream: `stream: false` is gathered into one object by the face.
    assert plan.body["stream"] is True
    assert plan.body["stream_options"] == {"include_usage": True}


def test_tool_results_answer_the_calls_in_order_when_names_repeat() -> None:
    messages = t.to_openai_messages(
        [
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "f", "arguments": {"x": 1}}},
                    {"function": {"name": "g", "arguments": {}}},
                    {"function": {"name": "f", "arguments": {"x": 2}}},
                ],
            },
            {"role": "tool", "content": "g done", "tool_name": "g"},
            {"role": "tool", "content": "f1"},
            {"role": "tool", "content": "f2", "tool_name": "f"},
        ]
    )
    assert [m.get("tool_call_id") for m in messages[1:]] == ["call_1", "call_0", "call_2"]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"role": "robot", "content": "x"}, "messages.0.role"),
        ({"role": "user", "content": 5}, "messages.0.content"),
        ({"role": "user", "content": "x", "images": "abc"}, "messages.0.images"),
        ({"role": "assistant", "tool_calls": [{"function": {}}]}, "function.name"),
    ],
)
def test_malformed_messages_are_refused_naming_the_field(message: dict, error: str) -> None:
    with pytest.raises(t.TranslationError, match=error):
        t.to_openai_messages([message])


def test_format_with_a_schema_renders_the_template_then_constrains_a_completion() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    request = t.validate(
        t.ChatRequest,
        {"model": "m", "messages": [{"role": "user", "content": "age?"}], "format": schema, "think": False},
    )
    plan = t.chat_plan(request)
    assert plan.path == "/v1/completions"
    assert plan.render_messages == [{"role": "user", "content": "age?"}]
    assert t.render_body(plan) == {
        "messages": [{"role": "user", "content": "age?"}],
        "chat_template_kwargs": {"enable_thinking": False},
    }
    body = t.with_rendered_prompt(plan, "<|im_start|>user\nage?<|im_end|>\n<|im_start|>assistant\n")
    assert body["json_schema"] == schema
    assert body["prompt"].endswith("assistant\n")
    assert "messages" not in body and "chat_template_kwargs" not in body


def test_format_json_asks_for_any_object() -> None:
    assert t.format_schema("json") == {"type": "object"}
    assert t.format_schema("") is None
    with pytest.raises(t.TranslationError, match="format"):
        t.format_schema("yaml")


@pytest.mark.parametrize(
    ("think", "fields"),
    [
        (None, {}),
        (True, {"chat_template_kwargs": {"enable_thinking": True}}),
        (False, {"chat_template_kwargs": {"enable_thinking": False}}),
        ("high", {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": "high"}}),
    ],
)
def test_think_becomes_the_templates_thinking_switch(think: Any, fields: dict) -> None:
    assert t.think_fields(think) == fields


def test_generate_applies_the_template_through_the_chat_endpoint() -> None:
    request = t.validate(
        t.GenerateRequest,
        {
            "model": "m",
            "prompt": "Why?",
            "system": "Be kind.",
            "images": ["/9j/AAAA"],
            "options": {"seed": 1},
        },
    )
    plan = t.generate_plan(request)
    assert plan.path == "/v1/chat/completions"
    assert plan.body["messages"] == [
        {"role": "system", "content": "Be kind."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Why?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/AAAA"}},
            ],
        },
    ]
    assert plan.body["seed"] == 1


def test_raw_generate_sends_the_prompt_untouched_to_the_completion_endpoint() -> None:
    plan = t.generate_plan(t.validate(t.GenerateRequest, {"model": "m", "prompt": "[INST] hi", "raw": True}))
    assert plan.path == "/v1/completions"
    assert plan.body["prompt"] == "[INST] hi"
    assert "messages" not in plan.body


def test_a_suffix_fills_in_the_middle_through_llama_servers_infill() -> None:
    request = {"model": "m", "prompt": "def f(", "suffix": "return", "options": {"num_predict": 8, "seed": 3}}
    plan = t.generate_plan(t.validate(t.GenerateRequest, request))
    assert plan.path == "/infill"
    assert plan.body["input_prefix"] == "def f(" and plan.body["input_suffix"] == "return"
    assert (plan.body["max_tokens"], plan.body["seed"], plan.body["stream"]) == (8, 3, True)
    assert "prompt" not in plan.body and "messages" not in plan.body
    # An empty suffix is no suffix, as in Ollama.
    assert t.generate_plan(t.validate(t.GenerateRequest, {**request, "suffix": ""})).path != "/infill"
    with pytest.raises(t.TranslationError, match="raw"):
        t.generate_plan(t.validate(t.GenerateRequest, {**request, "raw": True}))


def test_llama_servers_own_stream_becomes_generate_objects_with_its_counts() -> None:
    chunks = [
        {"index": 0, "content": "", "tokens": [511], "stop": False, "tokens_predicted": 1},
        {"index": 0, "content": "a + b", "tokens": [311], "stop": False, "tokens_predicted": 2},
        {
            "index": 0,
            "content": "",
            "stop": True,
            "stop_type": "limit",
            "tokens_predicted": 2,
            "tokens_evaluated": 33,
            "timings": {"prompt_n": 33, "prompt_ms": 2.5, "predicted_n": 2, "predicted_ms": 4.0},
        },
    ]
    objects = feed_all(t.OllamaStream(model="coder", kind="generate"), chunks)
    assert [o["response"] for o in objects] == ["a + b", ""]
    final = objects[-1]
    assert (final["done"], final["done_reason"]) == (True, "length")
    assert (final["prompt_eval_count"], final["eval_count"]) == (33, 2)
    assert (final["prompt_eval_duration"], final["eval_duration"]) == (2_500_000, 4_000_000)
    chunks[-1]["stop_type"] = "eos"
    assert (
        t.merge_objects(feed_all(t.OllamaStream(model="coder", kind="generate"), chunks))["done_reason"]
        == "stop"
    )


def test_a_request_with_wrongly_typed_fields_is_refused_naming_the_field() -> None:
    with pytest.raises(t.TranslationError, match="stream"):
        t.validate(t.ChatRequest, {"model": "m", "messages": [], "stream": "yes"})
    with pytest.raises(t.TranslationError, match="messages"):
        t.validate(t.ChatRequest, {"model": "m", "messages": "hello"})


# --- responses ------------------------------------------------------------------------------------


def test_streamed_text_becomes_one_object_per_piece_and_a_final_object_with_nanoseconds() -> None:
    case = fixture("chat_stream_text.json")
    objects = feed_all(t.OllamaStream(model="acme-chat:latest", kind="chat"), case["chunks"])
    pieces, final = objects[:-1], objects[-1]
    assert [p["message"]["content"] for p in pieces] == case["expected_text"]
    assert all(p["done"] is False and p["model"] == "acme-chat:latest" for p in pieces)
    assert pieces[0]["created_at"] == "2023-11-14T22:13:20.000000000Z"
    for name, value in case["expected_final"].items():
        assert final[name] == value
    assert final["total_duration"] == 5_000_000 and final["load_duration"] == 1_000_000
    assert final["message"] == {"role": "assistant", "content": ""}
    assert all(isinstance(final[k], int) for k in ("prompt_eval_duration", "eval_duration", "eval_count"))


def test_tool_call_fragments_arrive_as_one_call_with_object_arguments() -> None:
    case = fixture("chat_stream_tool_call.json")
    objects = feed_all(t.OllamaStream(model="m", kind="chat"), case["chunks"])
    calls = [o for o in objects if o["message"].get("tool_calls")]
    assert len(calls) == 1
    assert calls[0]["message"]["tool_calls"] == case["expected_tool_calls"]
    for name, value in case["expected_final"].items():
        assert objects[-1][name] == value
    merged = t.merge_objects(objects)
    assert merged["message"]["tool_calls"] == case["expected_tool_calls"]


def test_thinking_goes_to_its_own_field_and_is_dropped_when_think_is_false() -> None:
    case = fixture("chat_stream_thinking.json")
    merged = t.merge_objects(feed_all(t.OllamaStream(model="m", kind="chat"), case["chunks"]))
    assert merged["message"]["thinking"] == case["expected_thinking"]
    assert merged["message"]["content"] == case["expected_content"]
    hidden = t.merge_objects(
        feed_all(t.OllamaStream(model="m", kind="chat", show_thinking=False), case["chunks"])
    )
    assert "thinking" not in hidden["message"]
    assert hidden["message"]["content"] == case["expected_content"]


def test_a_completion_stream_becomes_generate_objects_joined_when_not_streaming() -> None:
    case = fixture("completion_stream.json")
    objects = feed_all(t.OllamaStream(model="m", kind="generate"), case["chunks"])
    assert all("response" in o and "message" not in o for o in objects)
    merged = t.merge_objects(objects)
    assert merged["response"] == case["expected_response"]
    for name, value in case["expected_final"].items():
        assert merged[name] == value


@pytest.mark.parametrize(
    ("text", "arguments"),
    [("", {}), ('{"a": 1}', {"a": 1}), ("[1]", {"value": [1]}), ("not json", {"raw": "not json"})],
)
def test_tool_arguments_are_always_an_object(text: str, arguments: dict) -> None:
    assert t.tool_arguments(text) == arguments


def test_an_empty_prompt_answers_load_or_unload() -> None:
    assert t.load_object("m", "generate", NOW, unloaded=False) == {
        "model": "m",
        "created_at": "2023-11-14T22:13:20.000000000Z",
        "response": "",
        "done": True,
        "done_reason": "load",
    }
    assert t.load_object("m", "chat", NOW, unloaded=True)["done_reason"] == "unload"


def test_embeddings_keep_their_input_order() -> None:
    body = {
        "data": [{"index": 1, "embedding": [0.2]}, {"index": 0, "embedding": [0.1]}],
        "usage": {"prompt_tokens": 4},
    }
    assert t.embed_response("e", body, 10, 2) == {
        "model": "e",
        "embeddings": [[0.1], [0.2]],
        "total_duration": 10,
        "load_duration": 2,
        "prompt_eval_count": 4,
    }


# --- models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "tagged"),
    [("acme", "acme:latest"), ("acme:q4", "acme:q4"), ("hf.co/org/acme", "hf.co/org/acme:latest")],
)
def test_names_carry_a_tag(name: str, tagged: str) -> None:
    assert t.tagged(name) == tagged


def test_a_tags_entry_has_the_fields_clients_read() -> None:
    entry = t.tags_entry(make_view(), "acme-chat", "ab" * 32)
    assert entry == {
        "name": "acme-chat:latest",
        "model": "acme-chat:latest",
        "modified_at": "2023-11-14T22:13:20.000000000Z",
        "size": 4_920_000_000,
        "digest": "ab" * 32,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": "llama",
            "families": ["llama"],
            "parameter_size": "8.0B",
            "quantization_level": "Q4_K_M",
        },
    }


def test_show_gives_model_info_with_the_architectures_keys_and_the_catalogs_capabilities() -> None:
    shown = t.show_response(make_view())
    info = shown["model_info"]
    assert info["general.architecture"] == "llama"
    assert info["llama.context_length"] == 131072
    assert info["llama.attention.head_count_kv"] == 8
    assert info["llama.rope.freq_base"] == 500000.0
    assert info["general.parameter_count"] == 8_030_000_000
    assert shown["capabilities"] == ["completion", "tools"]
    assert shown["template"] == "{{ messages }}"
    assert shown["parameters"].splitlines() == [f'{"stop":<30} "<|eot_id|>"', f"{'temperature':<30} 0.7"]
    assert "FROM /models/acme-chat.Q4_K_M.gguf" in shown["modelfile"]
    assert shown["details"]["family"] == "llama"


def test_show_names_parameters_as_a_modelfile_does_with_a_line_per_stop_sequence() -> None:
    model = make_view(
        parameters={"ctx_size": 8192, "threads": 4, "flash_attn": "on"},
        sampling={"max_tokens": 64, "n_keep": 4, "stop": ["<|im_end|>", "\n\n"], "system": "Be brief."},
    )
    assert t.parameters_text(model).splitlines() == [
        f"{'num_ctx':<30} 8192",
        f"{'num_keep':<30} 4",
        f"{'num_predict':<30} 64",
        f"{'num_thread':<30} 4",
        f'{"stop":<30} "<|im_end|>"',
        f'{"stop":<30} "\\n\\n"',
    ]
    assert "PARAMETER num_ctx" in t.modelfile(model) and "flash" not in t.modelfile(model)


@pytest.mark.parametrize(
    ("runner", "expires"),
    [
        ({"expires_at": "2023-11-14T22:18:20+00:00"}, "2023-11-14T22:18:20.000000000Z"),
        ({"expires_at": None, "ttl_seconds": 60}, "2023-11-14T22:14:20.000000000Z"),
        ({"expires_at": None, "ttl_seconds": None}, "2315-"),
    ],
)
def test_ps_shows_when_a_runner_expires(runner: dict, expires: str) -> None:
    entry = t.ps_entry(make_view(), "acme-chat", "d" * 64, {"memory_estimate": 5_000_000_000, **runner}, NOW)
    assert entry["expires_at"].startswith(expires)
    assert entry["size"] == 5_000_000_000
    assert entry["context_length"] == 131072
    assert entry["name"] == "acme-chat:latest"


def test_parameter_sizes_read_like_ollamas() -> None:
    assert t.parameter_size(8_030_000_000) == "8.0B"
    assert t.parameter_size(1_240_000) == "1.2M"
    assert t.parameter_size(None, "7B") == "7B"


def create(**body: Any) -> t.CreateRequest:
    return t.validate(t.CreateRequest, {"model": "mine", "from": "base", **body})


def test_create_takes_a_modelfiles_parameters_as_runner_settings_and_sampling_defaults() -> None:
    parsed = create(
        parameters={
            "num_ctx": 8192,
            "num_gpu": 0,
            "temperature": 0.3,
            "top_k": 20,
            "num_predict": 64,
            "seed": 7,
        }
    )
    assert parsed.from_ == "base" and parsed.model_name == "mine"
    runner, sampling = t.create_settings(parsed)
    assert runner == {"ctx_size": 8192, "n_gpu_layers": 0}
    assert sampling == {"temperature": 0.3, "top_k": 20, "max_tokens": 64, "seed": 7}
    assert t.create_settings(create()) == ({}, {})
    # A Modelfile's stop lines arrive as a list (one line, one text) and mirostat as numbers.
    parsed = create(parameters={"stop": ["<|im_end|>", "<|endoftext|>"], "mirostat": 2, "num_keep": 24})
    assert t.create_settings(parsed) == (
        {},
        {"stop": ["<|im_end|>", "<|endoftext|>"], "mirostat": 2, "n_keep": 24},
    )
    assert t.create_settings(create(parameters={"stop": "###"}))[1] == {"stop": ["###"]}
    # Empty values of the fields a variant cannot keep are what some clients always send.
    assert t.create_settings(create(system="", template=None, files={})) == ({}, {})
    assert t.create_settings(create(system="Answer in French.")) == ({}, {"system": "Answer in French."})


JINJA = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"


@pytest.mark.parametrize(
    ("template", "go"),
    [
        ("{{ .Prompt }}", True),
        ("{{- if .System }}<|system|>{{ .System }}{{ end }}", True),
        ("{{ range .Messages }}{{ .Content }}{{ end }}", True),
        ("{{ range $i, $m := .Messages }}{{ $.System }}{{ end }}", True),
        ("{{- end }}", True),
        (JINJA, False),
        ("{{ bos_token }}{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}", False),
        ("{{- messages | length }}", False),
    ],
)
def test_go_templates_are_told_from_jinja_ones(template: str, go: bool) -> None:
    assert t.is_go_template(template) is go


def test_create_keeps_a_jinja_template_as_the_runners_chat_template() -> None:
    assert t.create_settings(create(template=JINJA)) == ({"chat_template": JINJA}, {})
    with pytest.raises(t.TranslationError, match="Go templates"):
        t.create_settings(create(template="{{ .System }} {{ .Prompt }}"))


def test_show_gives_the_files_license() -> None:
    assert t.show_response(make_view())["license"] == ""
    assert t.show_response(make_view(metadata={"general.license": "apache-2.0"}))["license"] == "apache-2.0"


def test_show_gives_the_template_the_runner_uses() -> None:
    custom = make_view(parameters={"chat_template": JINJA})
    assert t.show_response(custom)["template"] == JINJA
    assert f'TEMPLATE """{JINJA}"""' in t.modelfile(custom)
    named = make_view(parameters={"chat_template": "chatml"})  # a built-in one's name: the file's shown
    assert t.show_response(named)["template"] == "{{ messages }}"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"system": ["Be brief."]}, "system"),
        ({"template": "{{ .Prompt }}"}, "template"),
        ({"files": {"m.gguf": 5}}, "files"),
        ({"parameters": {"use_mmap": True}}, "use_mmap"),
        ({"parameters": {"num_ctx": "big"}}, "num_ctx"),
        ({"parameters": {"ignore_eos": True}}, "ignore_eos"),  # a request's choice, not a model's
    ],
)
def test_create_refuses_what_a_variant_cannot_keep_naming_it(body: dict[str, Any], named: str) -> None:
    with pytest.raises(t.TranslationError, match=named):
        t.create_settings(create(**body))


def _probs(token: str, logprob: float, alternatives: list[tuple[str, float]]) -> dict[str, Any]:
    return {
        "id": 7,
        "token": token,
        "bytes": list(token.encode()),
        "logprob": logprob,
        "top_logprobs": [
            {"id": 8, "token": alt, "bytes": list(alt.encode()), "logprob": value}
            for alt, value in alternatives
        ],
    }


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"logprobs": True}, {"logprobs": True, "top_logprobs": 1}),  # llama-server gives none without one
        ({"logprobs": True, "top_logprobs": 3}, {"logprobs": True, "top_logprobs": 3}),
        ({"logprobs": False, "top_logprobs": 3}, {}),
        ({"logprobs": True, "top_logprobs": 2, "format": {"type": "object"}}, {"n_probs": 2}),
    ],
)
def test_logprobs_are_asked_of_the_runner_in_its_endpoints_fields(body: dict[str, Any], fields: dict) -> None:
    plan = t.chat_plan(
        t.ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}], **body})
    )
    asked = {key: plan.body[key] for key in ("logprobs", "top_logprobs", "n_probs") if key in plan.body}
    assert asked == fields
    raw = t.generate_plan(
        t.GenerateRequest.model_validate({"model": "m", "prompt": "x", "raw": True, **body})
    )
    assert ("n_probs" in raw.body) == bool(body.get("logprobs"))


def test_logprobs_with_tools_or_out_of_range_are_refused() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(t.TranslationError, match="logprobs"):
        t.chat_plan(
            t.ChatRequest.model_validate({"model": "m", "messages": [], "tools": tools, "logprobs": True})
        )
    with pytest.raises(ValidationError):
        t.ChatRequest.model_validate({"model": "m", "top_logprobs": 21})


def test_each_pieces_token_log_probabilities_go_out_with_it_and_are_joined_when_not_streaming() -> None:
    chunks = [
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": "Hi"},
                    "logprobs": {"content": [_probs("Hi", -0.1, [("Hi", -0.1), ("Yo", -2.5)])]},
                }
            ]
        },
        {
            "choices": [
                {"index": 0, "delta": {"content": ""}, "logprobs": {"content": [_probs("\xe2", -0.5, [])]}}
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {"content": " there"},
                    "logprobs": {"content": [_probs(" there", -0.3, [(" there", -0.3)])]},
                }
            ]
        },
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 3},
        },
    ]
    objects = feed_all(t.OllamaStream(model="m", kind="chat", top_logprobs=1), chunks)
    assert objects[0]["logprobs"] == [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
        }
    ]
    # A token that printed nothing yet goes out with the next piece.
    assert [entry["token"] for entry in objects[1]["logprobs"]] == ["\xe2", " there"]
    merged = t.merge_objects(feed_all(t.OllamaStream(model="m", kind="chat", top_logprobs=0), chunks))
    assert [entry["logprob"] for entry in merged["logprobs"]] == [-0.1, -0.5, -0.3]
    assert all("top_logprobs" not in entry for entry in merged["logprobs"])  # none asked for
    plain = t.merge_objects(feed_all(t.OllamaStream(model="m", kind="chat"), chunks))
    assert "logprobs" not in plain and "logprobs" not in plain["message"]


def test_llama_servers_own_stream_gives_its_completion_probabilities() -> None:
    chunks = [
        {"content": "def", "stop": False, "completion_probabilities": [_probs("def", -0.2, [("def", -0.2)])]},
        {"content": "", "stop": True, "stop_type": "limit", "tokens_predicted": 1, "tokens_evaluated": 4},
    ]
    merged = t.merge_objects(feed_all(t.OllamaStream(model="coder", kind="generate", top_logprobs=1), chunks))
    assert merged["response"] == "def" and merged["logprobs"][0]["top_logprobs"][0]["token"] == "def"


def test_create_names_its_lora_adapters_by_digest_and_a_modelfile_shows_them() -> None:
    digest = "sha256:" + "a" * 64
    assert t.create_adapters(create(adapters={"lora.gguf": digest})) == [digest]
    assert t.create_adapters(create()) == [] and t.create_adapters(create(adapters={})) == []
    with pytest.raises(t.TranslationError, match="adapters"):
        t.create_adapters(create(adapters=["lora.gguf"]))
    model = make_view(extra_args=("--lora", "/blobs/sha256-a", "--lora=/x/b.gguf", "--no-warmup"))
    assert [line for line in t.modelfile(model).splitlines() if line.startswith("ADAPTER")] == [
        "ADAPTER /blobs/sha256-a",
        "ADAPTER /x/b.gguf",
    ]


def test_create_keeps_a_modelfiles_messages_as_the_models_preset_conversation() -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ahoy"}]
    assert t.create_settings(create(messages=messages)) == ({}, {"messages": messages})
    assert t.create_settings(create(messages=[])) == ({}, {})


def test_a_modelfiles_license_is_taken_and_said_not_kept() -> None:
    assert t.create_settings(create(license="MIT")) == ({}, {})
    assert t.create_notices(create(license=["MIT", "Apache"])) == [
        "license not kept: /api/show gives the GGUF file's own (general.license)"
    ]
    assert t.create_notices(create()) == []
