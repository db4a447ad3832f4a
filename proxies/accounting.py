"""Token and timing accounting of one relayed request, from llama-server's `usage` and `timings`
(in the shapes of OpenAI's chat and completions, its Responses API, and Anthropic's Messages)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UsageMeter:
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    finish_reason: str | None = None
    chunks_with_content: int = 0
    ended: float | None = None

    def mark_first_token(self, at: float | None = None) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter() if at is None else at

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_at is None else (self.first_token_at - self.started) * 1000

    def observe(self, body: dict[str, Any]) -> None:
        """Take what a response object (or the final stream chunk) says about tokens and speed."""
        usage = body.get("usage")
        if usage is None:  # a Responses stream's `response.completed`, Anthropic's `message_start`
            inner = body.get("response") or body.get("message")
            usage = inner.get("usage") if isinstance(inner, dict) else None
        if isinstance(usage, dict):
            self._observe_usage(usage)
        timings = body.get("timings")
        if isinstance(timings, dict):
            # llama-server's own counts are exact; prefer them over counting chunks.
            self.prompt_tokens = prompt_length(timings, self.prompt_tokens)
            self.completion_tokens = _int(timings.get("predicted_n"), self.completion_tokens)
            self.cached_tokens = _int(timings.get("cache_n"), self.cached_tokens)
            self.prefill_tps = _float(timings.get("prompt_per_second"), self.prefill_tps)
            self.decode_tps = _float(timings.get("predicted_per_second"), self.decode_tps)
        for choice in body.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta")
            if (
                isinstance(delta, dict)
                and (delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"))
            ) or choice.get("text"):
                self.chunks_with_content += 1
                self.mark_first_token()
        content = body.get("content")
        if isinstance(content, str) and content and "choices" not in body:  # llama-server's own format
            self.chunks_with_content += 1
            self.mark_first_token()

    def _observe_usage(self, usage: dict[str, Any]) -> None:
        """OpenAI's chat and completions `usage`, the Responses API's (`input_tokens` with the
        cached ones among them) or Anthropic's (`input_tokens` without the cached ones, which
        are `cache_read_input_tokens`)."""
        if "prompt_tokens" in usage or "completion_tokens" in usage:
            self.prompt_tokens = _int(usage.get("prompt_tokens"), self.prompt_tokens)
            self.completion_tokens = _int(usage.get("completion_tokens"), self.completion_tokens)
            details = usage.get("prompt_tokens_details")
        else:
            self.completion_tokens = _int(usage.get("output_tokens"), self.completion_tokens)
            cache_read = _int(usage.get("cache_read_input_tokens"), None)
            if cache_read is None:
                self.prompt_tokens = _int(usage.get("input_tokens"), self.prompt_tokens)
                details = usage.get("input_tokens_details")
            else:
                written = _int(usage.get("cache_creation_input_tokens"), None) or 0
                self.prompt_tokens = (_int(usage.get("input_tokens"), None) or 0) + cache_read + written
                self.cached_tokens = cache_read
                return
        if isinstance(details, dict):
            self.cached_tokens = _int(details.get("cached_tokens"), self.cached_tokens)

    def finish(self, at: float | None = None) -> None:
        """The request ended (`at`, a perf_counter reading, or now): its duration stops here."""
        self.ended = time.perf_counter() if at is None else at
        if not self.completion_tokens and self.chunks_with_content:
            # No count came (a stream cut short), or only Anthropic's `message_start` placeholder (0).
            self.completion_tokens = self.chunks_with_content
        if self.decode_tps is None and self.completion_tokens and self.first_token_at is not None:
            elapsed = self.ended - self.first_token_at
            if elapsed > 0 and self.completion_tokens > 1:
                self.decode_tps = (self.completion_tokens - 1) / elapsed

    @property
    def duration_ms(self) -> float:
        return ((time.perf_counter() if self.ended is None else self.ended) - self.started) * 1000


def prompt_length(timings: dict[str, Any], default: int | None = None) -> int | None:
    """The whole prompt's length from llama-server's `timings`: its prompt_n counts only the
    tokens it evaluated, those it found in its prompt cache are cache_n."""
    evaluated = _int(timings.get("prompt_n"), None)
    return default if evaluated is None else evaluated + (_int(timings.get("cache_n"), None) or 0)


def _int(value: Any, default: int | None) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _float(value: Any, default: float | None) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def native_finish_reason(native: dict[str, Any]) -> str | None:
    """OpenAI's finish_reason for llama-server's own format (/completion, /infill): its last
    object has `stop` and a `stop_type` ("limit" when the token budget ran out)."""
    if not native.get("stop"):
        return None
    return "length" if native.get("stop_type") == "limit" else "stop"


def native_usage(native: dict[str, Any]) -> dict[str, int]:
    """OpenAI's `usage` from llama-server's own format's counts."""
    prompt_tokens = int(native.get("tokens_evaluated") or 0)
    completion_tokens = int(native.get("tokens_predicted") or 0)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
