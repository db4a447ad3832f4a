"""llama-server's native /infill answers as OpenAI's text_completion objects."""

from __future__ import annotations

import pytest

from proxies.infill import Head, completion_object

HEAD = Head("cmpl-1", 1_700_000_000, "coder")


@pytest.mark.parametrize(("stop_type", "reason"), [("limit", "length"), ("eos", "stop"), ("word", "stop")])
def test_a_whole_answer_has_its_finish_reason_usage_and_timings(stop_type: str, reason: str) -> None:
    native = {
        "content": "a + b",
        "stop": True,
        "stop_type": stop_type,
        "tokens_evaluated": 12,
        "tokens_predicted": 3,
        "timings": {"predicted_n": 3},
    }
    answer = completion_object(native, HEAD)
    assert answer["id"] == "cmpl-1" and answer["object"] == "text_completion" and answer["model"] == "coder"
    assert answer["choices"] == [{"text": "a + b", "index": 0, "logprobs": None, "finish_reason": reason}]
    assert answer["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    assert answer["timings"] == {"predicted_n": 3}


def test_stream_pieces_carry_text_only_and_the_last_the_totals() -> None:
    piece = completion_object({"content": "x", "stop": False}, HEAD, chunk=True)
    assert piece["choices"][0] == {"text": "x", "index": 0, "logprobs": None, "finish_reason": None}
    assert "usage" not in piece
    last = completion_object(
        {"content": "", "stop": True, "stop_type": "eos", "tokens_predicted": 2}, HEAD, chunk=True
    )
    assert last["choices"][0]["finish_reason"] == "stop" and last["usage"]["completion_tokens"] == 2
