"""A header-only GGUF reader: the key/value section and the tensor infos, never the tensor data.

`gguf.GGUFReader` memory-maps the file and builds numpy views of every key, array element and
tensor, which takes seconds for a model with a 150k-token vocabulary. A catalog scan needs a few
scalar keys, so this reader walks the header with `struct`, skipping large arrays by their
length. Layout (GGUF v2/v3, either byte order): magic, version, tensor count, kv count, the
key/values, then per tensor its name, dimensions, type and offset.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GGUF_MAGIC = b"GGUF"
# Arrays up to this many elements are returned as lists (e.g. per-layer head counts);
# longer ones (vocabularies, merges) as their element count only.
MAX_ARRAY_ITEMS = 64
MAX_KV_COUNT = 1_000_000
MAX_TENSOR_COUNT = 10_000_000
VOCABULARY_KEY = "tokenizer.ggml.tokens"

# GGUF value types: struct format of the scalar ones
_SCALARS: dict[int, str] = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


class GGUFHeaderError(ValueError):
    """The file is not a GGUF file, or its header is damaged."""


@dataclass(frozen=True)
class ArrayLength:
    """A long array in the header, recorded by its element type and count only."""

    item_type: int
    count: int


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int

    @property
    def elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass
class GGUFHeader:
    version: int
    byte_order: str  # "<" or ">"
    kv: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    # Which of the tokens asked for (read_header's `find_tokens`) the vocabulary holds.
    tokens_found: frozenset[str] = frozenset()


class _Cursor:
    def __init__(self, data: mmap.mmap | bytes, order: str) -> None:
        self.data = data
        self.pos = 0
        self.order = order
        self.size = len(data)

    def unpack(self, fmt: str) -> Any:
        fmt = self.order + fmt
        width = struct.calcsize(fmt)
        if self.pos + width > self.size:
            raise GGUFHeaderError("the header is truncated")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += width
        return value

    def string(self) -> str:
        length = self.unpack("Q")
        if self.pos + length > self.size:
            raise GGUFHeaderError("the header is truncated (a string runs past the end of the file)")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        # The hot loop of a scan (a vocabulary is 30k-250k strings): no per-item bounds check;
        # unpack_from raises past the end, and the final position is checked once.
        unpack, fmt, data, pos = struct.unpack_from, self.order + "Q", self.data, self.pos
        try:
            for _ in range(count):
                pos += 8 + unpack(fmt, data, pos)[0]
        except struct.error:
            raise GGUFHeaderError("the header is truncated (in a string array)") from None
        if pos > self.size:
            raise GGUFHeaderError("the header is truncated (in a string array)")
        self.pos = pos

    def value(self, value_type: int) -> Any:
        if value_type in _SCALARS:
            return self.unpack(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string()
        if value_type == _ARRAY:
            item_type = self.unpack("I")
            count = self.unpack("Q")
            if count > MAX_ARRAY_ITEMS:
                self.skip_array(item_type, count)
                return ArrayLength(item_type, count)
            return [self.value(item_type) for _ in range(count)]
        raise GGUFHeaderError(f"unknown value type {value_type} at byte {self.pos}")

    def skip_array(self, item_type: int, count: int) -> None:
        if item_type in _SCALARS:
            width = struct.calcsize(_SCALARS[item_type]) * count
            if self.pos + width > self.size:
                raise GGUFHeaderError("the header is truncated (in an array)")
            self.pos += width
        elif item_type == _STRING:
            self.skip_strings(count)
        elif item_type == _ARRAY:
            for _ in range(count):
                self.value(_ARRAY)
        else:
            raise GGUFHeaderError(f"unknown array item type {item_type}")


def _tokens_in(
    data: mmap.mmap | bytes, order: str, start: int, end: int, tokens: Collection[str]
) -> frozenset[str]:
    """The `tokens` that are whole strings of the string array in data[start:end]: a byte search
    (in C, not a walk of 150k strings) for each, kept where its 8-byte length prefix matches."""
    found = set()
    for token in tokens:
        encoded = token.encode()
        at = data.find(encoded, start + 8, end)
        while at != -1:
            if struct.unpack_from(order + "Q", data, at - 8)[0] == len(encoded):
                found.add(token)
                break
            at = data.find(encoded, at + 1, end)
    return frozenset(found)


def read_header(path: Path | str, *, tensors: bool = True, find_tokens: Collection[str] = ()) -> GGUFHeader:
    """Parse a GGUF file's header; raises GGUFHeaderError (or OSError) when it cannot.
    `find_tokens`: tokens to look for in the vocabulary (`tokenizer.ggml.tokens`), which is
    otherwise skipped; those it holds, exactly, are in `tokens_found`."""
    with open(path, "rb") as handle:
        try:
            data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # mmap refuses empty files
            raise GGUFHeaderError("the file is empty") from None
        try:
            return _parse(data, tensors=tensors, find_tokens=find_tokens)
        finally:
            data.close()


def _parse(data: mmap.mmap | bytes, *, tensors: bool, find_tokens: Collection[str] = ()) -> GGUFHeader:
    if len(data) < 24 or data[:4] != GGUF_MAGIC:
        raise GGUFHeaderError("not a GGUF file (no GGUF magic at the start)")
    order = "<"
    (version,) = struct.unpack_from("<I", data, 4)
    if version & 0xFFFF == 0:  # written big-endian
        order = ">"
        (version,) = struct.unpack_from(">I", data, 4)
    if version not in (2, 3):
        raise GGUFHeaderError(f"unsupported GGUF version {version}")
    cursor = _Cursor(data, order)
    cursor.pos = 8
    tensor_count = cursor.unpack("Q")
    kv_count = cursor.unpack("Q")
    if kv_count > MAX_KV_COUNT or tensor_count > MAX_TENSOR_COUNT:
        raise GGUFHeaderError("the header is damaged (implausible key or tensor count)")
    header = GGUFHeader(version=version, byte_order=order)
    for _ in range(kv_count):
        key = cursor.string()
        start = cursor.pos
        header.kv[key] = cursor.value(cursor.unpack("I"))
        if key == VOCABULARY_KEY and find_tokens:
            header.tokens_found = _tokens_in(data, order, start, cursor.pos, find_tokens)
    if tensors:
        for _ in range(tensor_count):
            name = cursor.string()
            n_dims = cursor.unpack("I")
            if n_dims > 8:
                raise GGUFHeaderError(f"the header is damaged (tensor {name!r} has {n_dims} dimensions)")
            shape = tuple(cursor.unpack("Q") for _ in range(n_dims))
            ggml_type = cursor.unpack("I")
            cursor.unpack("Q")  # data offset
            header.tensors.append(TensorInfo(name, shape, ggml_type))
    return header
