"""llama-server's loading log turned into progress: a stage, and a percentage where one is known.

llama-server logs no byte-level load progress at its default verbosity, so the percentage is
the position of the stage in the load sequence; verbose logs add finer stages. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# A log line: "0.00.003.391 E gguf_init_from_reader: invalid magic ..." (timestamp, level, text).
_LINE = re.compile(r"^\s*(?:\d+\.\d+\.\d+\.\d+\s+)?(?P<level>[IWEDT])\s+(?P<text>.*)$")


@dataclass(frozen=True)
class Progress:
    stage: str
    percent: int | None
    message: str


# (marker in the line, stage, percent), in load order; the first match wins.
STAGES: tuple[tuple[str, str, int], ...] = (
    ("llama_server: initializing", "initializing", 2),
    ("load_model: loading model", "loading model", 10),
    ("fitting params to device memory", "fitting to memory", 15),
    ("llama_model_loader: loaded meta data", "reading metadata", 20),
    ("llama_model_loader: Dumping metadata", "reading metadata", 20),
    ("load_tensors: loading model tensors", "loading tensors", 30),
    ("load_tensors:", "loading tensors", 40),
    ("llama_context: constructing llama_context", "creating context", 60),
    ("llama_kv_cache:", "allocating KV cache", 70),
    ("warming up the model", "warming up", 80),
    ("load_model: initializing, n_slots", "initializing slots", 90),
    ("llama_server: model loaded", "model loaded", 95),
    ("listening on http", "listening", 99),
    # whisper-server
    ("whisper_init_from_file", "loading model", 10),
    ("whisper server listening", "listening", 99),
)

# Lines after which /health is worth asking at once rather than at the next poll.
READY_HINTS = ("llama_server: model loaded", "listening on http", "whisper server listening")


def split_line(line: str) -> tuple[str, str]:
    """(level, text) of a log line; level "" when the line has no llama.cpp prefix."""
    match = _LINE.match(line)
    if match is None:
        return "", line.strip()
    return match.group("level"), match.group("text").strip()


def parse_progress(line: str) -> Progress | None:
    _, text = split_line(line)
    for marker, stage, percent in STAGES:
        if marker in text:
            return Progress(stage=stage, percent=percent, message=text[:200])
    return None


def is_ready_hint(line: str) -> bool:
    return any(hint in line for hint in READY_HINTS)


def is_port_in_use(lines: Iterable[str]) -> bool:
    """The port we picked was taken between choosing and binding: worth one more try."""
    return any("couldn't bind" in line or "Address already in use" in line for line in lines)


def first_error(lines: Iterable[str]) -> str | None:
    """llama-server's own first error line (level E), e.g. "gguf_init_from_reader: invalid magic"."""
    fallback = None
    for line in lines:
        level, text = split_line(line)
        if level == "E" and text:
            return text
        lowered = text.lower()
        if fallback is None and ("error" in lowered or "failed" in lowered):
            fallback = text
    return fallback


def failure_reason(lines: list[str], exit_code: int | None) -> str:
    """One line saying why a start failed: how the process ended and its first error."""
    if exit_code is None:
        ended = "llama-server did not become ready"
    elif exit_code < 0:
        ended = f"llama-server was killed by signal {-exit_code}"
    else:
        ended = f"llama-server exited with status {exit_code}"
    error = first_error(lines)
    return f"{ended}: {error}" if error else ended
