"""Server-sent events: reassemble frames across network chunks (never parse per chunk)."""

from __future__ import annotations

import json
from typing import Any


class SSEFrameParser:
    """Feed raw bytes; get back the complete `data:` payloads seen so far. `pending` holds the
    start of a frame whose end has not arrived yet (empty between frames)."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if not self.pending and (payload := single_frame_payload(chunk)) is not None:
            return [payload]  # the usual arrival: one whole `data: ...` frame
        self.pending += chunk
        payloads: list[bytes] = []
        while True:
            end, sep_len = _frame_end(self.pending)
            if end < 0:
                return payloads
            frame, self.pending = self.pending[:end], self.pending[end + sep_len :]
            data = [line[5:].lstrip(b" ") for line in frame.splitlines() if line.startswith(b"data:")]
            if data:
                payloads.append(b"\n".join(data))


def single_frame_payload(chunk: bytes, start: int = 0, end: int | None = None) -> bytes | None:
    """The payload when `chunk[start:end]` is `data: <one line>\\n\\n` and nothing else, or that
    after one `event: <name>\\n` line (the Responses and Messages streams), else None (C-speed
    checks only, no copy unless it is)."""
    if end is None:
        end = len(chunk)
    if chunk.startswith(b"event: ", start):
        line_end = chunk.find(b"\n", start, end)
        if line_end < 0 or chunk.find(b"\r", start, line_end) >= 0:
            return None
        start = line_end + 1
    if (
        chunk.startswith(b"data: ", start)
        and chunk.find(b"\n", start, end) == end - 2
        and chunk.endswith(b"\n\n", start, end)
        and chunk.find(b"\r", start, end) < 0
    ):
        return chunk[start + 5 : end - 2].lstrip(b" ")
    return None


def _frame_end(buffer: bytes) -> tuple[int, int]:
    candidates = [(buffer.find(sep), len(sep)) for sep in (b"\n\n", b"\r\n\r\n")]
    found = [c for c in candidates if c[0] >= 0]
    return min(found) if found else (-1, 0)


def parse_json_payload(payload: bytes) -> dict[str, Any] | None:
    if payload.strip() == b"[DONE]":
        return None
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
