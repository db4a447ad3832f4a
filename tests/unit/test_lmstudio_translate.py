"""LM Studio's REST shapes from catalog views, runner states and llama-server responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxies.lmstudio import translate as t
from tests.unit.test_ollama_translate import make_view

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lmstudio"
READY = {"state": "ready", "context_length": 8192, "parameters": {"batch_size": 256}}


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({}, "llm"),
        ({"capabilities": ("completion", "vision")}, "vlm"),
        ({"kind": "embedding", "capabilities": ("embedding",)}, "embeddings"),
    ],
)
def test_v0_model_types_are_llm_vlm_or_embeddings(changes: dict, kind: str) -> None:
    assert t.model_v0(make_view(**changes), {})["type"] == kind


def test_a_v0_model_says_whether_it_is_loaded() -> None:
    view = make_view(metadata={"general.organization": "Acme Labs"})
    assert t.model_v0(view, {}) == {
        "id": "acme-chat",
        "object": "model",
        "type": "llm",
        "publisher": "Acme Labs",
        "arch": "llama",
        "compatibility_type": "gguf",
        "quantization": "Q4_K_M",
        "state": "not-loaded",
        "max_context_length": 131072,
    }
    loaded = t.model_v0(view, READY)
    assert loaded["state"] == "loaded"
    assert loaded["loaded_context_length"] == 8192


def test_a_v1_model_has_the_lm_studio_0_4_fields() -> None:
    entry = t.model_v1(make_view(), READY)
    assert entry == {
        "type": "llm",
        "publisher": "local",
        "key": "acme-chat",
        "display_name": "Acme Chat",
        "architecture": "llama",
        "quantization": {"name": "Q4_K_M", "bits_per_weight": 4},
        "size_bytes": 4_920_000_000,
        "params_string": "8B",
        "loaded_instances": [{"id": "acme-chat", "config": {"context_length": 8192, "eval_batch_size": 256}}],
        "max_context_length": 131072,
        "format": "gguf",
        "capabilities": {"vision": False, "trained_for_tool_use": True},
        "description": None,
    }


def test_a_v1_embedding_model_has_no_capabilities_and_no_instances_when_unloaded() -> None:
    entry = t.model_v1(make_view(kind="embedding", capabilities=("embedding",)), {})
    assert entry["type"] == "embedding"
    assert entry["loaded_instances"] == []
    assert "capabilities" not in entry


@pytest.mark.parametrize(
    ("quantization", "bits"),
    [("Q4_K_M", 4), ("Q8_0", 8), ("F16", 16), ("BF16", 16), ("IQ2_XS", 2), ("", 4.9)],
)
def test_bits_per_weight_come_from_the_quantization_or_the_file(quantization: str, bits: float) -> None:
    view = make_view(quantization=quantization, size_bytes=4_900_000_000, parameter_count=8_000_000_000)
    assert t.bits_per_weight(view) == bits


def test_a_completion_gains_lm_studios_stats_model_info_and_runtime() -> None:
    case = fixture("chat_completion.json")
    view = make_view(context_length=4096)
    enriched = t.enrich(case["response"], view, {}, ttft_seconds=None)
    assert enriched["stats"] == case["expected_stats"]
    assert enriched["model_info"] == case["expected_model_info"]
    assert enriched["runtime"]["supported_formats"] == ["gguf"]
    assert "timings" not in enriched
    assert enriched["choices"] == case["response"]["choices"]


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "eosFound"),
        ("length", "maxPredictedTokensReached"),
        ("tool_calls", "toolCalls"),
        (None, "eosFound"),
    ],
)
def test_finish_reasons_become_lm_studio_stop_reasons(finish: str | None, reason: str) -> None:
    assert t.stats({}, finish, 0.1)["stop_reason"] == reason


def test_a_measured_time_to_first_token_wins_over_prompt_time() -> None:
    assert t.stats({"prompt_ms": 500}, "stop", 0.25)["time_to_first_token"] == 0.25


@pytest.mark.parametrize(("ttl", "expected"), [(300, 300), (-1, -1), (0, 0), (None, None)])
def test_a_request_ttl_is_taken_out_of_the_body(ttl: int | None, expected: int | None) -> None:
    payload = {"model": "m", "ttl": ttl}
    assert t.pop_ttl(payload) == expected
    assert "ttl" not in payload


@pytest.mark.parametrize("ttl", ["5m", 1.5, True])
def test_a_ttl_that_is_no_whole_number_is_refused(ttl: Any) -> None:
    with pytest.raises(t.TranslationError, match="ttl"):
        t.pop_ttl({"ttl": ttl})


def test_load_config_becomes_runner_parameters() -> None:
    request = t.validate(
        t.LoadRequest,
        {"model": "m", "config": {"context_length": 16384, "eval_batch_size": 512, "flash_attention": True}},
    )
    assert t.runner_params(request) == {"ctx_size": 16384, "batch_size": 512}
    assert t.runner_params(t.validate(t.LoadRequest, {"model": "m"})) == {}


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({}, "model"),
        ({"model": "m", "config": {"context_length": 0}}, "config.context_length"),
        ({"model": "m", "config": {"context_length": "big"}}, "config.context_length"),
    ],
)
def test_a_bad_load_request_is_refused_naming_the_field(payload: dict, error: str) -> None:
    with pytest.raises(t.TranslationError, match=error):
        t.validate(t.LoadRequest, payload)


def test_the_load_answer_names_the_instance_and_its_context() -> None:
    answer = t.load_response(make_view(), READY, 0.4567, {"ctx_size": 16384})
    assert answer["instance_id"] == answer["model_instance_id"] == "acme-chat"
    assert answer["load_time_seconds"] == 0.457
    assert answer["load_config"] == {"context_length": 16384}
    assert answer["type"] == "llm"


def _delta(**delta: str) -> dict:
    return {"choices": [{"index": 0, "delta": delta}]}


def test_v1_chat_events_go_from_reasoning_to_message_and_the_result_has_both() -> None:
    from proxies.accounting import UsageMeter

    chat = t.ChatEvents("qwen3")
    kinds = [kind for kind, _ in chat.opening(load_seconds=1.5)]
    assert kinds == ["chat.start", "model_load.start", "model_load.end", "prompt_processing.start"]
    assert [kind for kind, _ in t.ChatEvents("x").opening(0)] == ["chat.start", "prompt_processing.start"]
    events = chat.feed(_delta(reasoning_content="Let me")) + chat.feed(_delta(reasoning_content=" think"))
    events += chat.feed(_delta(content="Blue")) + chat.feed(_delta(content=".")) + chat.closing()
    assert [kind for kind, _ in events] == [
        "prompt_processing.end",
        "reasoning.start",
        "reasoning.delta",
        "reasoning.delta",
        "reasoning.end",
        "message.start",
        "message.delta",
        "message.delta",
        "message.end",
    ]
    assert all(data["type"] == kind for kind, data in events)
    meter = UsageMeter(prompt_tokens=12, completion_tokens=4, decode_tps=50.0)
    result = chat.result(meter)
    assert result["output"] == [
        {"type": "reasoning", "content": "Let me think"},
        {"type": "message", "content": "Blue."},
    ]
    assert result["stats"]["reasoning_output_tokens"] == 2 and result["stats"]["input_tokens"] == 12
    assert t.sse_event(events[0]).startswith(b"event: prompt_processing.end\ndata: {")


def test_v1_chat_input_and_settings_become_an_openai_chat_request() -> None:
    request = t.validate(
        t.ChatRequest,
        {
            "model": "m",
            "input": [
                {"type": "text", "content": "What is this?"},
                {"type": "image", "data_url": "data:image/png;base64,AA=="},
            ],
            "max_output_tokens": 9,
            "top_k": 4,
            "reasoning": "low",
        },
    )
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    body = t.chat_body(request, history, "Be brief.")
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["messages"][1:3] == history
    assert body["messages"][3]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AA=="},
    }
    assert (body["max_tokens"], body["top_k"], body["stream"]) == (9, 4, True)
    assert body["chat_template_kwargs"] == {"enable_thinking": True, "reasoning_effort": "low"}
    off = t.chat_body(t.validate(t.ChatRequest, {"model": "m", "input": "x", "reasoning": "off"}), [], "")
    assert off["chat_template_kwargs"] == {"enable_thinking": False} and off["messages"] == [
        {"role": "user", "content": "x"}
    ]
    with pytest.raises(t.TranslationError, match="input"):
        t.user_message([{"type": "image", "data_url": "https://example.com/x.png"}])
