"""The tiny random-weight GGUF models: right metadata, and the real llama-server chats with them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import numpy as np
import pytest
from gguf import GGUFReader, LlamaFileType

from llamaproxy.ports import free_port
from models_catalog.tiny_model import (
    CHATML_TEMPLATE,
    TOOL_CALL_END_ID,
    TOOL_CALL_ID,
    TOOLS_TEMPLATE,
    parameter_count,
    write_tiny_model,
)

CHAT_REQUEST = {
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 16,
    "temperature": 0,
    "ignore_eos": True,
}


def metadata(path: Path) -> dict[str, Any]:
    """The file's key/value metadata as plain Python values."""
    return {field.name: field.contents() for field in GGUFReader(path).fields.values()}


@contextmanager
def running_llama_server(binary: Path, model: Path, log: Path) -> Iterator[str]:
    """A real llama-server on a free port, ready (GET /health 200); always terminated after."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", "512"]
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(base_url, process, log)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama-server exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.05)
    pytest.fail(f"llama-server was not healthy within 20 s:\n{log.read_text(errors='replace')}")


def chat(base_url: str) -> dict[str, Any]:
    response = httpx.post(f"{base_url}/v1/chat/completions", json=CHAT_REQUEST, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_tiny_model_has_llama_metadata_and_a_chatml_vocabulary(tiny_model_path: Path) -> None:
    meta = metadata(tiny_model_path)

    assert meta["general.architecture"] == "llama"
    assert meta["general.name"] == "tiny-chat"
    assert meta["general.file_type"] == LlamaFileType.ALL_F32
    assert meta["general.size_label"] == "140K"
    assert meta["llama.context_length"] == 4096
    assert meta["llama.embedding_length"] == 64
    assert meta["llama.block_count"] == 2
    assert meta["llama.feed_forward_length"] == 128
    assert meta["llama.attention.head_count"] == 4
    assert meta["llama.attention.head_count_kv"] == 2
    assert meta["llama.rope.dimension_count"] == 16
    assert meta["llama.vocab_size"] == 512
    assert meta["tokenizer.ggml.model"] == "llama"
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == 512
    assert len(set(tokens)) == 512
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert tokens[3] == "<0x00>"
    assert tokens[258] == "<0xFF>"
    assert tokens[meta["tokenizer.ggml.bos_token_id"]] == "<s>"
    assert tokens[meta["tokenizer.ggml.eos_token_id"]] == "<|im_end|>"
    assert "<|im_start|>" in tokens
    assert "\u2581the" in tokens
    assert meta["tokenizer.chat_template"] == CHATML_TEMPLATE


def test_small_model_has_sixty_million_q8_0_parameters(tmp_path: Path) -> None:
    [path] = write_tiny_model(tmp_path / "small.gguf", size="small", context_length=8192)
    meta = metadata(path)

    assert 55e6 < parameter_count("small") < 65e6
    reader = GGUFReader(path)
    assert sum(int(np.prod(t.shape)) for t in reader.tensors) == parameter_count("small")
    assert meta["general.file_type"] == LlamaFileType.MOSTLY_Q8_0
    assert meta["general.size_label"] == "60M"
    assert meta["general.name"] == "small"
    assert meta["llama.context_length"] == 8192
    assert meta["llama.block_count"] == 8
    assert meta["llama.embedding_length"] == 512
    assert len(meta["tokenizer.ggml.tokens"]) == 32000


def test_arguments_override_the_chat_template_and_file_type(tmp_path: Path) -> None:
    template = "{% if tools %}tools{% endif %}" + CHATML_TEMPLATE
    [path] = write_tiny_model(tmp_path / "tools.gguf", chat_template=template, file_type="F16")
    meta = metadata(path)

    assert meta["tokenizer.chat_template"] == template
    assert meta["general.file_type"] == LlamaFileType.MOSTLY_F16


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    [first] = write_tiny_model(tmp_path / "a" / "m.gguf", seed=7)
    [second] = write_tiny_model(tmp_path / "b" / "m.gguf", seed=7)
    [other] = write_tiny_model(tmp_path / "c" / "m.gguf", seed=8)

    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_split_model_is_written_as_gguf_split_shards(tmp_path: Path) -> None:
    paths = write_tiny_model(tmp_path / "split.gguf", split=3)

    assert [p.name for p in paths] == [f"split-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    shards = [metadata(p) for p in paths]
    assert [s["split.no"] for s in shards] == [0, 1, 2]
    assert {s["split.count"] for s in shards} == {3}
    assert {s["split.tensors.count"] for s in shards} == {21}
    assert shards[0]["general.name"] == "split"
    assert "general.name" not in shards[1]
    assert sum(len(GGUFReader(p).tensors) for p in paths) == 21


def test_a_pooling_makes_an_embedding_model_and_rank_a_reranker_the_catalog_knows(tmp_path: Path) -> None:
    from models_catalog.gguf_metadata import read_metadata
    from runners.arguments import declared_pooling

    [path] = write_tiny_model(tmp_path / "rerank.gguf", pooling="rank")
    assert metadata(path)["llama.pooling_type"] == 4
    found = read_metadata([path])
    assert found.kind == "embedding" and found.cap_rerank and not found.cap_completion
    assert not found.cap_embedding  # a reranker's "embeddings" are its scores
    assert declared_pooling(SimpleNamespace(architecture="llama", metadata=found.extra)) == "rank"
    with pytest.raises(ValueError, match="pooling"):
        write_tiny_model(tmp_path / "bad.gguf", pooling="max")


def test_a_tool_caller_has_call_markers_a_tools_template_and_no_space_prefix(tmp_path: Path) -> None:
    from models_catalog.gguf_metadata import read_metadata

    [path] = write_tiny_model(tmp_path / "caller.gguf", tool_caller=True)
    found = metadata(path)
    tokens = found["tokenizer.ggml.tokens"]
    assert tokens[TOOL_CALL_ID] == "<tool_call>" and tokens[TOOL_CALL_END_ID] == "</tool_call>"
    assert found["tokenizer.chat_template"] == TOOLS_TEMPLATE
    assert found["tokenizer.ggml.add_space_prefix"] is False
    assert read_metadata([path]).cap_tools
    with pytest.raises(ValueError, match="tiny size"):
        write_tiny_model(tmp_path / "big.gguf", size="small", tool_caller=True)


def test_impossible_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        write_tiny_model(tmp_path / "m.gguf", split=50)


@pytest.mark.integration
def test_tiny_model_loads_in_llama_server_and_answers_chat(
    llama_server_binary: Path, tiny_model_path: Path, tmp_path: Path
) -> None:
    with running_llama_server(llama_server_binary, tiny_model_path, tmp_path / "server.log") as base_url:
        body = chat(base_url)

    assert body["usage"]["completion_tokens"] == 16
    assert body["choices"][0]["finish_reason"] == "length"
    assert isinstance(body["choices"][0]["message"]["content"], str)


@pytest.mark.integration
def test_split_model_loads_in_llama_server_from_its_first_shard(
    llama_server_binary: Path, tmp_path: Path
) -> None:
    first, *_ = write_tiny_model(tmp_path / "split.gguf", name="split-chat", split=2)

    with running_llama_server(llama_server_binary, first, tmp_path / "server.log") as base_url:
        body = chat(base_url)

    assert body["usage"]["completion_tokens"] == 16
