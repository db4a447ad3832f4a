"""SSE frames reassembled across network chunks, whatever the split."""

from __future__ import annotations

import pytest

from proxies.sse import SSEFrameParser, single_frame_payload

LF = b'data: {"a": 1}\n\n: keep-alive comment\n\ndata: line one\ndata: line two\n\nevent: x\ndata: [DONE]\n\n'
CRLF = LF.replace(b"\n", b"\r\n")
EXPECTED = [b'{"a": 1}', b"line one\nline two", b"[DONE]"]


@pytest.mark.parametrize("stream", [LF, CRLF], ids=["lf", "crlf"])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 1000])
def test_frames_come_out_whole_whatever_the_chunking(stream: bytes, size: int) -> None:
    parser = SSEFrameParser()
    payloads = []
    for at in range(0, len(stream), size):
        payloads.extend(parser.feed(stream[at : at + size]))
    assert payloads == EXPECTED


def test_an_unfinished_frame_waits_for_its_end() -> None:
    parser = SSEFrameParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b": 1}\n") == []
    assert parser.feed(b"\ndata: 2\n\n") == [b'{"a": 1}', b"2"]


@pytest.mark.parametrize(
    ("frame", "payload"),
    [
        (b'data: {"a": 1}\n\n', b'{"a": 1}'),
        (b"data:x\n\n", None),  # the fast path wants `data: `; the parser takes the rest
        (b"data: one\ndata: two\n\n", None),
        (b"data: one\r\n\r\n", None),
        (b"data: one\n\ndata: two\n\n", None),
        (b"data: one\n", None),
        (b": comment\n\n", None),
        (b'event: response.output_text.delta\ndata: {"delta":"J"}\n\n', b'{"delta":"J"}'),
        (b"event: message_stop\ndata: one\ndata: two\n\n", None),
        (b"event: message_stop\r\ndata: one\r\n\r\n", None),
        (b"event: message_stop\n\n", None),
        (b"event: message_stop", None),
    ],
)
def test_one_whole_frame_is_recognised_alone_or_inside_its_http_chunk(
    frame: bytes, payload: bytes | None
) -> None:
    assert single_frame_payload(frame) == payload
    chunk = b"%x\r\n%b\r\n" % (len(frame), frame)
    start = chunk.index(b"\r\n") + 2
    assert single_frame_payload(chunk, start, len(chunk) - 2) == payload
