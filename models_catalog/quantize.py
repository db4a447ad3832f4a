"""Quantizing a model's GGUF file (`ollama create --quantize`): llama-quantize, built with
llama-server from the same llama.cpp sources (runners/provisioning.py), writes the new file into
the blob store, where it is kept under its sha256 like an uploaded GGUF and pruned with the last
model that uses it (models_catalog/blobs.py).

As in Ollama, only unquantized files (F32, F16, BF16) are quantized: quantizing a quantized file
again loses more than it saves. The types are llama-quantize's that need no importance matrix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async

from models_catalog.blobs import CHUNK, blob_dir, is_blob, prune_blob
from models_catalog.gguf_metadata import quantization_name

TYPES = (
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q2_K",
    "Q3_K_S",
    "Q3_K_M",
    "Q3_K_L",
    "Q4_K_S",
    "Q4_K_M",
    "Q5_K_S",
    "Q5_K_M",
    "Q6_K",
    "F16",
    "BF16",
)
SOURCE_FILE_TYPES = (0, 1, 32)  # llama.cpp's LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_BF16
LOG_LINES = 8

# "[  12/ 201]   blk.0.attn_k.weight - [ 4096,  1024, 1, 1], type = f16, converting to q4_K .. "
_TENSOR_LINE = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")


class QuantizeError(Exception):
    """Why a file cannot be quantized; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def quantize_type(requested: str) -> str:
    """The type llama-quantize is asked for (`q4_K_M` → `Q4_K_M`); QuantizeError for others."""
    wanted = requested.strip().upper()
    if wanted not in TYPES:
        raise QuantizeError(
            f"quantize: unsupported quantization type {requested!r}; one of {', '.join(TYPES)}"
        )
    return wanted


def check_source(name: str, file_type: int | None) -> str:
    """The source file's type name (`F16`); QuantizeError when it is already quantized."""
    if file_type not in SOURCE_FILE_TYPES:
        found = quantization_name(file_type) or "of an unknown type"
        raise QuantizeError(f"quantize: only F32, F16 and BF16 models can be quantized; {name!r} is {found}")
    return quantization_name(file_type)


def file_type_of(path: Path) -> int | None:
    """The `general.file_type` of a GGUF file (QuantizeError when it is not one)."""
    from models_catalog.gguf_metadata import MetadataError, read_metadata

    try:
        return read_metadata([path]).file_type
    except MetadataError as exc:
        raise QuantizeError(f"not a GGUF model llamaproxy can read: {exc}") from None


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


@dataclass(frozen=True)
class Quantized:
    path: Path  # the blob
    digest: str  # sha256:<hex>


async def quantize(source: Path, wanted: str) -> AsyncIterator[Progress | Quantized]:
    """Run llama-quantize on `source` into a new blob: yields Progress per tensor, then the
    Quantized blob. Raises QuantizeError when it cannot run or fails (with its last lines);
    closing the iterator early stops the process and leaves no file behind."""
    from runners.provisioning import installed_tool

    binary = installed_tool("llama-quantize")
    if binary is None:
        raise QuantizeError(
            "llama-quantize is not installed: `python manage.py install_llama_server` builds it "
            "with llama-server (or put it beside LLAMAPROXY_LLAMA_SERVER)",
            status=501,
        )
    folder = blob_dir()
    folder.mkdir(parents=True, exist_ok=True)
    fd, scratch_name = tempfile.mkstemp(dir=folder, prefix=".quantize-", suffix=".gguf")
    os.close(fd)
    scratch = Path(scratch_name)
    threads = str(max(1, (os.cpu_count() or 2) - 1))
    process = await asyncio.create_subprocess_exec(
        str(binary),
        str(source),
        str(scratch),
        wanted,
        threads,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    tail: list[str] = []
    try:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail = [*tail[-(LOG_LINES - 1) :], line]
            if match := _TENSOR_LINE.match(line):
                yield Progress(int(match[1]), int(match[2]))
        if await process.wait() != 0:
            raise QuantizeError(
                f"llama-quantize failed (exit status {process.returncode}): " + " | ".join(tail[-3:]),
                status=500,
            )
        digest = await asyncio.to_thread(_sha256, scratch)
        target = folder / f"sha256-{digest}"
        os.replace(scratch, target)
        yield Quantized(target, f"sha256:{digest}")
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        scratch.unlink(missing_ok=True)


@dataclass(frozen=True)
class Made:
    digest: str  # of the new file
    replaced: bool  # a model created before under the name was replaced


async def quantized_model(
    name: str,
    source: Path,
    wanted: str,
    *,
    parameters: dict[str, Any],
    sampling: dict[str, Any],
    adapters: Iterable[str] = (),
    settings_from: str | None = None,
) -> AsyncIterator[Progress | Made]:
    """Quantize `source` and make the catalog entry `name` whose file is the result (the settings
    of `settings_from`, else the defaults, with `parameters`/`sampling` over them). An uploaded
    source blob is not kept (the model has its quantized file); a CatalogError leaves no blob."""
    from models_catalog import services

    result: Quantized | None = None
    async with aclosing(quantize(source, wanted)) as running:
        async for event in running:
            if isinstance(event, Quantized):
                result = event
            else:
                yield event
    assert result is not None
    try:
        created = await sync_to_async(services.create_from_file, thread_sensitive=False)(
            name, str(result.path), parameters, sampling, result.digest, list(adapters), settings_from
        )
    except BaseException:
        await sync_to_async(prune_blob, thread_sensitive=False)(str(result.path))
        raise
    if is_blob(source):
        await sync_to_async(prune_blob, thread_sensitive=False)(str(source))
    yield Made(result.digest, created[1] is not None)


def _sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()
