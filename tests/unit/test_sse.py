"""SSE frames reassembled across network chunks, whatever the split."""

from __future__ import annotations

import pytest

from proxies.sse import SSEFrameParser

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
