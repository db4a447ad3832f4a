"""Real model files for catalog tests and the scan benchmark: varied headers, projectors, broken files.

`write_tiny_model` makes models llama-server can run; the catalog only reads headers, so most
files here are header-only GGUFs (a real header and one small tensor) written with `gguf.GGUFWriter`,
which lets a test choose any architecture, file type or chat template.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter

from models_catalog.tiny_model import write_out, write_tiny_model

TOOLS_TEMPLATE = (
    "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


def write_gguf_header(
    path: Path,
    *,
    arch: str = "llama",
    name: str | None = None,
    file_type: int | None = 15,
    size_label: str | None = "7B",
    context_length: int = 32768,
    embedding_length: int = 4096,
    block_count: int = 32,
    head_count: int = 32,
    head_count_kv: int = 8,
    chat_template: str | None = None,
    pooling_type: int | None = None,
    vocabulary: int = 300,
    tokens: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """A GGUF file with a realistic header and one 8x8 tensor (header-only for the catalog's purposes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(path, arch)
    writer.add_name(name or path.stem)
    if size_label:
        writer.add_size_label(size_label)
    if file_type is not None:
        writer.add_file_type(file_type)
    writer.add_context_length(context_length)
    writer.add_embedding_length(embedding_length)
    writer.add_block_count(block_count)
    writer.add_head_count(head_count)
    writer.add_head_count_kv(head_count_kv)
    if pooling_type is not None:
        writer.add_uint32(f"{arch}.pooling_type", pooling_type)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    writer.add_tokenizer_model("gpt2")
    # `tokens` (special ones, say) take the places of the last generic ones
    generic = [f"tok{i}" for i in range(vocabulary - len(tokens))]
    writer.add_token_list([*generic, *tokens])
    writer.add_token_types([1] * len(generic) + [3] * len(tokens))
    if vocabulary > 1000:  # like a real BPE vocabulary: merges, as long again
        writer.add_token_merges([f"tok{i} tok{i + 1}" for i in range(vocabulary - 1)])
    for key, value in (extra or {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        elif isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        else:
            writer.add_float32(key, float(value))
    writer.add_tensor("token_embd.weight", np.zeros((8, 8), dtype=np.float32))
    write_out(writer)
    return path


def write_mmproj(path: Path) -> Path:
    """A vision projector companion (architecture `clip`)."""
    return write_gguf_header(path, arch="clip", file_type=1, size_label=None, name="vision projector")


def write_whisper_ggml(path: Path, *, n_audio_layer: int = 4) -> Path:
    """The start of a whisper.cpp legacy ggml model: magic and hyperparameters (enough for the catalog)."""
    hparams = (51864, 1500, 384, 6, n_audio_layer, 448, 384, 6, 4, 80, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<I11i", 0x67676D6C, *hparams) + b"\0" * 64)
    return path


def make_library(root: Path) -> dict[str, Path]:
    """A model folder with one of everything a scan meets; returns the interesting paths by role."""
    files: dict[str, Path] = {}
    files["quantized"] = write_gguf_header(
        root / "Qwen2.5-7B-Instruct-Q4_K_M.gguf", name="Qwen2.5 7B Instruct"
    )
    files["tiny"] = write_tiny_model(root / "nested" / "deeper" / "tiny-chat.gguf", name="tiny-chat", seed=1)[
        0
    ]
    files["tools"] = write_gguf_header(
        root / "tools" / "Hermes-Tools-Q8_0.gguf", arch="qwen3", file_type=7, chat_template=TOOLS_TEMPLATE
    )
    split = write_tiny_model(root / "split" / "Big-Model.gguf", name="big-model", seed=2, split=3)
    files["split"] = split[0]
    files["vision"] = write_gguf_header(root / "vision" / "gemma-3-4b-it-Q4_K_M.gguf", arch="gemma3")
    files["mmproj"] = write_mmproj(root / "vision" / "mmproj-gemma-3-4b-it-F16.gguf")
    files["embedding"] = write_gguf_header(
        root / "embed" / "nomic-embed-text-v1.5.f16.gguf", arch="nomic-bert", file_type=1, size_label="137M"
    )
    files["pooled"] = write_gguf_header(
        root / "embed" / "Qwen3-Embedding-0.6B-Q8_0.gguf", arch="qwen3", file_type=7, pooling_type=3
    )
    corrupt = root / "broken" / "corrupt.gguf"
    corrupt.parent.mkdir(parents=True, exist_ok=True)
    corrupt.write_bytes(files["tiny"].read_bytes()[:200])
    files["corrupt"] = corrupt
    text = root / "broken" / "readme.gguf"
    text.write_text("this is not a model, just a text file with the wrong name\n")
    files["text"] = text
    (root / "notes.txt").write_text("not a model")
    return files
