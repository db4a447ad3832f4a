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
