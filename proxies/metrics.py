"""Prometheus metrics of the gateway: requests, tokens, latency, runner states, queue depth."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from proxies.relay import RelayContext

registry = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "llamaproxy_requests", "Requests relayed", ["model", "face", "endpoint", "status"], registry=registry
)
PROMPT_TOKENS = Counter("llamaproxy_prompt_tokens", "Prompt tokens processed", ["model"], registry=registry)
COMPLETION_TOKENS = Counter(
    "llamaproxy_completion_tokens", "Completion tokens generated", ["model"], registry=registry
)
TTFT = Histogram(
    "llamaproxy_time_to_first_token_seconds",
    "Time to first token",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=registry,
)
DURATION = Histogram(
    "llamaproxy_request_duration_seconds",
    "Request duration",
    ["model", "face"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=registry,
)
RUNNER_STATE = Gauge(
    "llamaproxy_runner_state", "1 for the state each runner is in", ["model", "state"], registry=registry
)
QUEUE_DEPTH = Gauge("llamaproxy_queue_depth", "Requests waiting for a runner", ["model"], registry=registry)
IN_FLIGHT = Gauge("llamaproxy_in_flight", "Requests being answered", ["model"], registry=registry)

STATES = ("stopped", "starting", "ready", "draining", "stopping", "failed")  # the scheduler's


class _Series:
    """The children of the per-request metrics for one model, face, endpoint and status.
    prometheus_client's `labels()` takes a lock and normalizes its arguments on every call:
    a request looks its series up once, in a plain dict. No metric's children are ever removed,
    so a kept child is always the registered one."""

    __slots__ = ("completion_tokens", "duration", "prompt_tokens", "requests", "ttft")

    def __init__(self, model: str, face: str, endpoint: str, status: str) -> None:
        self.requests = REQUESTS.labels(model, face, endpoint, status)
        self.prompt_tokens = PROMPT_TOKENS.labels(model)
        self.completion_tokens = COMPLETION_TOKENS.labels(model)
        self.ttft = TTFT.labels(model)
        self.duration = DURATION.labels(model, face)


_series: dict[tuple[str, str, str, int], _Series] = {}


def observe(ctx: RelayContext) -> None:
    model = ctx.model or "-"
    key = (model, ctx.face, ctx.endpoint, ctx.status)
    series = _series.get(key)
    if series is None:
        series = _series[key] = _Series(model, ctx.face, ctx.endpoint, str(ctx.status))
    series.requests.inc()
    meter = ctx.meter
    if meter.prompt_tokens:
        series.prompt_tokens.inc(meter.prompt_tokens)
    if meter.completion_tokens:
        series.completion_tokens.inc(meter.completion_tokens)
    if meter.ttft_ms is not None:
        series.ttft.observe(meter.ttft_ms / 1000)
    series.duration.observe(meter.duration_ms / 1000)


def render(runners: list[dict]) -> tuple[bytes, str]:
    """The exposition text, with runner gauges refreshed from the scheduler's status."""
    for runner in runners:
        model = runner["model"]
        for state in STATES:
            RUNNER_STATE.labels(model, state).set(1 if runner.get("state") == state else 0)
        QUEUE_DEPTH.labels(model).set(runner.get("queued", 0) or 0)
        IN_FLIGHT.labels(model).set(runner.get("in_flight", 0) or 0)
    return generate_latest(registry), CONTENT_TYPE_LATEST
