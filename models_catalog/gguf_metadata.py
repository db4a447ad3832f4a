"""What a model file says about itself: a pure function from file(s) to `ModelMetadata`.

Only headers are read (see gguf_header). Capabilities come from the metadata: tools and thinking
from the chat template, embedding from the architecture or a pooling key (rerank when that pooling
is `rank`), insert from fill-in-the-middle tokens; vision depends on a paired mmproj file, which is the scan's business, not the file's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gguf import GGMLQuantizationType, LlamaFileType, PoolingType
from gguf.utility import model_weight_count_rounded_notation

from models_catalog.gguf_header import ArrayLength, GGUFHeader, GGUFHeaderError, read_header
from models_catalog.whisper_metadata import WhisperMetadataError, has_whisper_magic
from models_catalog.whisper_metadata import read_header as read_whisper_header

# Architectures that only embed (llama.cpp's encoder-only models).
EMBEDDING_ARCHITECTURES = frozenset(
    {
        "bert",
        "nomic-bert",
        "nomic-bert-moe",
        "jina-bert-v2",
        "jina-bert-v3",
        "neo-bert",
        "modern-bert",
        "eurobert",
        "t5encoder",
        "gemma-embedding",
        "llama-embed",
    }
)
PROJECTOR_ARCHITECTURES = frozenset({"clip"})
# `<arch>.pooling_type` (llama.cpp's enum) by the name `--pooling` takes; `rank` is a reranker's.
POOLING_TYPES: dict[str, PoolingType] = {p.name.lower(): p for p in PoolingType if p is not PoolingType.NONE}
# Fill-in-the-middle: the prefix, suffix and middle tokens, by the metadata keys that name them
# or, as llama.cpp also finds them, by their text in the vocabulary. With all three, the model
# completes code between a prefix and a suffix (llama-server's /infill; Ollama's `insert`).
FIM_KEYS: dict[str, tuple[str, ...]] = {
    "pre": ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    "suf": ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    "mid": ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
}
FIM_TOKENS: dict[str, tuple[str, ...]] = {
    "pre": (
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<\uff5cfim\u2581begin\uff5c>",
        "<PRE>",
        "\u2581<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ),
    "suf": (
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<\uff5cfim\u2581hole\uff5c>",
        "<SUF>",
        "\u2581<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ),
    "mid": (
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<\uff5cfim\u2581end\uff5c>",
        "<MID>",
        "\u2581<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ),
}
# (DeepSeek's are in fullwidth bars; CodeLlama's have SentencePiece's word mark.)
ALL_FIM_TOKENS = frozenset(token for tokens in FIM_TOKENS.values() for token in tokens)
TOOLS_MARKERS = ("tools", "tool_call")
THINKING_MARKERS = ("<think>", "enable_thinking", "reasoning", "thinking")
# Keys kept out of `extra`: captured in fields already, or too big to be useful there.
_SKIPPED_PREFIXES = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
)
MAX_EXTRA_TEXT = 512


class MetadataError(ValueError):
    """The file cannot be read as a model: the message says why, for the catalog's `error`."""


@dataclass
class ModelMetadata:
    kind: str = "llm"  # llm | embedding | whisper (CatalogModel.Kind values)
    architecture: str = ""
    display_name: str = ""
    size_label: str = ""
    parameter_count: int | None = None
    file_type: int | None = None
    quantization: str = ""
    context_length: int | None = None
    embedding_length: int | None = None
    block_count: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    chat_template: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    cap_completion: bool = True
    cap_tools: bool = False
    cap_embedding: bool = False
    cap_rerank: bool = False
    cap_insert: bool = False
    cap_thinking: bool = False
    is_projector: bool = False
    split_count: int = 1


def quantization_name(file_type: int | None) -> str:
    """llama.cpp's name for a `general.file_type` (15 → Q4_K_M), or '' when unknown."""
    if file_type is None:
        return ""
    try:
        member = LlamaFileType(file_type)
    except ValueError:
        return ""
    if member is LlamaFileType.GUESSED:
        return ""
    return member.name.removeprefix("MOSTLY_").removeprefix("ALL_")


def template_has_tools(template: str) -> bool:
    return any(marker in template for marker in TOOLS_MARKERS)


def template_has_thinking(template: str) -> bool:
    return any(marker in template for marker in THINKING_MARKERS)


def read_metadata(paths: Sequence[Path]) -> ModelMetadata:
    """Metadata of a model stored in `paths` (one file, or the parts of a split model in order)."""
    if not paths:
        raise MetadataError("no file")
    first = Path(paths[0])
    try:
        with open(first, "rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise MetadataError(f"cannot read the file: {exc.strerror or exc}") from None
    if has_whisper_magic(magic):
        return _whisper_metadata(first)
    try:
        header = read_header(first, find_tokens=ALL_FIM_TOKENS)
        tensors = list(header.tensors)
        for part in paths[1:]:
            tensors += read_header(part).tensors
    except GGUFHeaderError as exc:
        raise MetadataError(str(exc)) from None
    except OSError as exc:
        raise MetadataError(f"cannot read the file: {exc.strerror or exc}") from None
    metadata = metadata_from_header(header)
    metadata.split_count = max(len(paths), _int(header.kv.get("split.count")) or 1)
    if tensors:
        metadata.parameter_count = sum(t.elements for t in tensors)
        if not metadata.size_label and metadata.parameter_count:
            metadata.size_label = model_weight_count_rounded_notation(metadata.parameter_count)
        if not metadata.quantization:
            metadata.quantization = _dominant_tensor_type(tensors)
    return metadata


def metadata_from_header(header: GGUFHeader) -> ModelMetadata:
    kv = header.kv
    arch = _text(kv.get("general.architecture"))
    templates = [_text(v) for k, v in kv.items() if k.startswith("tokenizer.chat_template")]
    chat_template = _text(kv.get("tokenizer.chat_template"))
    pooling = _int(kv.get(f"{arch}.pooling_type"))
    embedding = arch in EMBEDDING_ARCHITECTURES or bool(pooling)
    # A rank-pooled model is a reranker: a classification head that scores (query, document)
    # pairs. llama-server serves it on /v1/rerank; its "embeddings" would be those scores.
    rerank = pooling == PoolingType.RANK
    file_type = _int(kv.get("general.file_type"))
    return ModelMetadata(
        kind="embedding" if embedding else "llm",
        architecture=arch,
        display_name=_text(kv.get("general.name")),
        size_label=_text(kv.get("general.size_label")),
        file_type=file_type,
        quantization=quantization_name(file_type),
        context_length=_int(kv.get(f"{arch}.context_length")),
        embedding_length=_int(kv.get(f"{arch}.embedding_length")),
        block_count=_int(kv.get(f"{arch}.block_count")),
        head_count=_int(kv.get(f"{arch}.attention.head_count")),
        head_count_kv=_int(kv.get(f"{arch}.attention.head_count_kv")),
        chat_template=chat_template,
        extra=_extra(kv),
        cap_completion=not embedding and arch not in PROJECTOR_ARCHITECTURES,
        cap_tools=not embedding and any(template_has_tools(t) for t in templates),
        cap_thinking=not embedding and any(template_has_thinking(t) for t in templates),
        cap_embedding=embedding and not rerank,
        cap_rerank=rerank,
        cap_insert=not embedding and has_fim(header),
        is_projector=arch in PROJECTOR_ARCHITECTURES,
    )


def has_fim(header: GGUFHeader) -> bool:
    """Whether the model has all three fill-in-the-middle tokens (see FIM_KEYS, FIM_TOKENS)."""
    return all(
        any(isinstance(header.kv.get(key), int) for key in FIM_KEYS[role])
        or not header.tokens_found.isdisjoint(FIM_TOKENS[role])
        for role in FIM_KEYS
    )


def _whisper_metadata(path: Path) -> ModelMetadata:
    try:
        info = read_whisper_header(path)
    except WhisperMetadataError as exc:
        raise MetadataError(str(exc)) from None
    except OSError as exc:
        raise MetadataError(f"cannot read the file: {exc.strerror or exc}") from None
    h = info.hparams
    return ModelMetadata(
        kind="whisper",
        architecture="whisper",
        display_name=f"whisper {info.variant}".strip(),
        size_label=info.size,
        parameter_count=info.parameter_count,
        file_type=info.ftype,
        quantization=info.quantization,
        context_length=h["n_text_ctx"],
        embedding_length=h["n_text_state"],
        block_count=h["n_text_layer"],
        head_count=h["n_text_head"],
        extra=info.as_metadata(),
        cap_completion=False,
    )


def _dominant_tensor_type(tensors: list[Any]) -> str:
    """The type most weights are stored in, when the file does not say (matrices only)."""
    counts: Counter[int] = Counter()
    for tensor in tensors:
        if len(tensor.shape) >= 2:
            counts[tensor.ggml_type] += tensor.elements
    if not counts:
        return ""
    try:
        return GGMLQuantizationType(counts.most_common(1)[0][0]).name
    except ValueError:
        return ""


def _extra(kv: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    for key, value in kv.items():
        if key.startswith(_SKIPPED_PREFIXES) or key.startswith("tokenizer.chat_template"):
            continue
        if isinstance(value, ArrayLength):
            extra[key] = {"array_length": value.count}
        elif isinstance(value, str):
            extra[key] = value if len(value) <= MAX_EXTRA_TEXT else value[:MAX_EXTRA_TEXT] + "…"
        elif isinstance(value, float) and value != value:  # NaN is not JSON
            continue
        else:
            extra[key] = value
    return extra


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    """An integer key; per-layer arrays (some architectures) give their largest value."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return max(value)
    return None


def pooling_name(value: object) -> str | None:
    """The name of a declared `<arch>.pooling_type` (None for none, or a value it cannot be)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return next((name for name, pooling in POOLING_TYPES.items() if pooling == value), None)
