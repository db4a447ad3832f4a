"""What a usage row says about tokens, from llama-server's `usage` and `timings`."""

from __future__ import annotations

from proxies.accounting import UsageMeter

# A second turn of a chat: llama-server found all but one prompt token in its cache.
USAGE = {"prompt_tokens": 283, "completion_tokens": 54, "prompt_tokens_details": {"cached_tokens": 282}}
TIMINGS = {
    "cache_n": 282,
    "prompt_n": 1,
    "predicted_n": 54,
    "prompt_per_second": 90.5,
    "predicted_per_second": 2900.0,
}


def observed(body: dict) -> UsageMeter:
    meter = UsageMeter()
    meter.observe(body)
    meter.finish()
    return meter


def test_the_prompt_counts_its_cached_tokens_whichever_way_it_is_reported() -> None:
    for body in ({"usage": USAGE, "timings": TIMINGS}, {"timings": TIMINGS}, {"usage": USAGE}):
        meter = observed(body)
        assert (meter.prompt_tokens, meter.cached_tokens, meter.completion_tokens) == (283, 282, 54), body


def test_speeds_come_from_the_timings() -> None:
    meter = observed({"usage": USAGE, "timings": TIMINGS})
    assert (meter.prefill_tps, meter.decode_tps) == (90.5, 2900.0)


def test_timings_without_a_cache_count_leave_the_usage_figures() -> None:
    meter = observed({"usage": USAGE, "timings": {"prompt_per_second": 10.0}})
    assert (meter.prompt_tokens, meter.cached_tokens, meter.completion_tokens) == (283, 282, 54)
    uncached = observed({"timings": {"prompt_n": 7, "predicted_n": 3}})
    assert (uncached.prompt_tokens, uncached.cached_tokens, uncached.completion_tokens) == (7, None, 3)


def test_the_responses_apis_usage_counts_the_cached_tokens_among_the_input() -> None:
    usage = {"input_tokens": 19, "output_tokens": 3, "input_tokens_details": {"cached_tokens": 18}}
    for body in ({"usage": usage}, {"type": "response.completed", "response": {"usage": usage}}):
        meter = observed(body)
        assert (meter.prompt_tokens, meter.cached_tokens, meter.completion_tokens) == (19, 18, 3), body


def test_anthropics_usage_counts_the_cached_tokens_beside_the_input() -> None:
    usage = {"cache_read_input_tokens": 18, "input_tokens": 1, "output_tokens": 3}
    meter = observed({"usage": usage})
    assert (meter.prompt_tokens, meter.cached_tokens, meter.completion_tokens) == (19, 18, 3)
    written = observed({"usage": {**usage, "cache_creation_input_tokens": 5}})
    assert written.prompt_tokens == 24


def test_an_anthropic_stream_gives_the_prompt_first_and_the_output_last() -> None:
    meter = UsageMeter()
    start = {"cache_read_input_tokens": 0, "input_tokens": 12, "output_tokens": 0}
    meter.observe({"type": "message_start", "message": {"usage": start}})
    assert (meter.prompt_tokens, meter.completion_tokens) == (12, 0)
    meter.observe({"type": "message_delta", "usage": {"output_tokens": 8}})
    assert (meter.prompt_tokens, meter.cached_tokens, meter.completion_tokens) == (12, 0, 8)


def test_llama_servers_own_stream_marks_its_first_token_and_counts_from_the_timings() -> None:
    meter = UsageMeter()
    meter.observe({"index": 0, "content": "", "stop": False})  # a token that printed nothing yet
    assert meter.first_token_at is None
    meter.observe({"index": 0, "content": "x", "stop": False})
    first = meter.first_token_at
    meter.observe({"index": 0, "content": "y", "stop": False})
    meter.observe({"content": "", "stop": True, "timings": TIMINGS})
    meter.finish()
    assert first is not None and meter.first_token_at == first and meter.chunks_with_content == 2
    assert (meter.prompt_tokens, meter.completion_tokens) == (283, 54)
    # Anthropic's whole message has a `content` list: not a piece of text.
    assert (
        observed({"content": [{"type": "text", "text": "hi"}], "usage": {"input_tokens": 3}}).first_token_at
        is None
    )
