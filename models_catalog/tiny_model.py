"""Tiny random-weight llama GGUF models that the real llama-server loads and chats with.

Tests and the demo need real model files without downloading weights: these have a real
architecture, a SentencePiece-style vocabulary with byte fallback and a ChatML chat template,
so llama-server tokenizes, templates and generates exactly as it would with a real model; only
the text is nonsense. Everything is derived from `seed`, so the same arguments give the same bytes.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import (
    MODEL_ARCH,
    MODEL_ARCH_NAMES,
    MODEL_TENSOR,
    TENSOR_NAMES,
    GGMLQuantizationType,
    GGUFWriter,
    LlamaFileType,
    TokenType,
)
from gguf.quants import quantize
from gguf.utility import size_label

from models_catalog.gguf_metadata import POOLING_TYPES

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# ChatML with Hermes/Qwen-style tools: the tools' schemas in the system turn, each call as a
# <tool_call> element holding {"name", "arguments"}, each result as a <tool_response>.
TOOLS_TEMPLATE = (
    "{%- if tools %}{{ '<|im_start|>system\\n<tools>\\n' }}"
    "{%- for tool in tools %}{{ tool | tojson }}{{ '\\n' }}{%- endfor %}"
    "{{ '</tools><|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}"
    "{{ '<|im_start|>assistant\\n' }}{%- if message.content %}{{ message.content }}{%- endif %}"
    "{%- for call in message.tool_calls %}"
    '{{ \'<tool_call>\\n{"name": "\' + call.function.name + \'", "arguments": \' }}'
    "{%- if call.function.arguments is string %}{{ call.function.arguments }}"
    "{%- else %}{{ call.function.arguments | tojson }}{%- endif %}"
    "{{ '}\\n</tool_call>' }}{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{ '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- else %}{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

# SentencePiece marks a word boundary (a preceding space) with U+2581.
SPACE = "\u2581"

SPECIAL_TOKENS: list[tuple[str, TokenType]] = [
    ("<unk>", TokenType.UNKNOWN),
    ("<s>", TokenType.CONTROL),
    ("</s>", TokenType.CONTROL),
]
CHAT_TOKENS: list[tuple[str, TokenType]] = [
    ("<|im_start|>", TokenType.CONTROL),
    ("<|im_end|>", TokenType.CONTROL),
]
# A tool-calling model's call markers (Hermes/Qwen style): added tokens that read as text.
TOOL_TOKENS: list[tuple[str, TokenType]] = [
    ("<tool_call>", TokenType.USER_DEFINED),
    ("</tool_call>", TokenType.USER_DEFINED),
]
# Qwen's fill-in-the-middle tokens (prefix, suffix, middle), at the end of a FIM model's vocabulary.
FIM_TOKENS: list[tuple[str, TokenType]] = [
    ("<|fim_prefix|>", TokenType.CONTROL),
    ("<|fim_suffix|>", TokenType.CONTROL),
    ("<|fim_middle|>", TokenType.CONTROL),
]
UNK_ID, BOS_ID = 0, 1
# ids after <unk>, <s>, </s> and the 256 byte tokens
IM_START_ID = len(SPECIAL_TOKENS) + 256
IM_END_ID = IM_START_ID + 1
TOOL_CALL_ID, TOOL_CALL_END_ID = IM_END_ID + 1, IM_END_ID + 2  # in a tool caller's vocabulary
# tokens the output head never favours: <unk>, <s>, the byte tokens and <|im_start|>
SILENT_IDS = (UNK_ID, BOS_ID, *range(len(SPECIAL_TOKENS), IM_START_ID + 1))
LOGIT_STD = 2.0

# frequent English words first, so the tiny vocabulary reads like text
_COMMON_WORDS_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had "
    "by word but not what all were we when your can said there use an each which she do how their if will "
    "up other about out many then them these so some her would make like him into time has look two more "
    "write go see number no way could people my than first water been call who oil its now find long down "
    "day did get come made may part hello hi yes thanks please model answer question tool weather today"
)
COMMON_WORDS = tuple(_COMMON_WORDS_TEXT.split())

FILE_TYPES: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "F32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "F16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "Q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


@dataclass(frozen=True)
class Shape:
    """Hyperparameters of one size preset."""

    vocab: int
    embd: int
    layers: int
    heads: int
    kv_heads: int
    ff: int
    file_type: str
    context_length: int = 4096
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.embd // self.heads


SIZES: dict[str, Shape] = {
    # ~140K parameters: loads in tens of milliseconds, thousands of tokens/s.
    "tiny": Shape(vocab=512, embd=64, layers=2, heads=4, kv_heads=2, ff=128, file_type="F32"),
    # ~60M parameters, Q8_0: a few hundred tokens/s on two cores, realistic for benchmarks.
    "small": Shape(vocab=32000, embd=512, layers=8, heads=8, kv_heads=8, ff=1536, file_type="Q8_0"),
}


def write_tiny_model(
    path: Path | str,
    *,
    size: str = "tiny",
    name: str | None = None,
    seed: int = 0,
    context_length: int | None = None,
    chat_template: str | None = None,
    file_type: str | None = None,
    split: int = 1,
    pooling: str | None = None,
    tool_caller: bool = False,
    fim: bool = False,
) -> list[Path]:
    """Write a random-weight llama GGUF model at `path` and return the written file(s).

    With `split > 1` the files are `<stem>-00001-of-0000N.gguf`..., as llama.cpp's gguf-split
    names them; llama-server loads the set when given the first one. `pooling` (one of
    POOLING_TYPES) declares the model an embedding model pooled that way, as converted
    embedding models and rerankers (`rank`) declare themselves.

    A `tool_caller` always calls a tool when it is offered one: it has Hermes-style tools in its
    template (TOOLS_TEMPLATE unless `chat_template` says otherwise), `<tool_call>` and
    `</tool_call>` as tokens, and weights that make it answer a call (see `_make_tool_caller`),
    so llama-server's own tool-call grammar and parser produce a real call from it.

    With `fim`, the vocabulary's last three pieces are Qwen's fill-in-the-middle tokens, by
    which llama-server (and the catalog) know the model can complete between a prefix and a
    suffix (/infill); every other token keeps its id.
    """
    shape = _shape(size)
    if tool_caller and size != "tiny":
        raise ValueError("a tool caller is made in the tiny size only")  # its weights are tuned to it
    ftype = (file_type or shape.file_type).upper()
    if ftype not in FILE_TYPES:
        raise ValueError(f"file_type must be one of {sorted(FILE_TYPES)}, not {file_type!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = list(_tensors(shape, np.random.default_rng(seed)))
    if tool_caller:
        _make_tool_caller(dict(tensors))
    if not 1 <= split <= len(tensors):
        raise ValueError(f"split must be between 1 and {len(tensors)} (the tensor count), not {split}")
    if pooling is not None and pooling not in POOLING_TYPES:
        raise ValueError(f"pooling must be one of {sorted(POOLING_TYPES)}, not {pooling!r}")

    writer = GGUFWriter(path, MODEL_ARCH_NAMES[MODEL_ARCH.LLAMA])
    _add_tensors(writer, tensors, FILE_TYPES[ftype][0], split)
    _add_metadata(writer, shape, name or path.stem, context_length or shape.context_length, ftype)
    if pooling is not None:
        writer.add_pooling_type(POOLING_TYPES[pooling])
    default_template = TOOLS_TEMPLATE if tool_caller else CHATML_TEMPLATE
    _add_vocabulary(writer, shape.vocab, chat_template or default_template, tool_caller, fim)
    write_out(writer)
    return writer.format_shard_names(path)


def write_tiny_lora(
    path: Path | str, *, size: str = "tiny", seed: int = 0, rank: int = 4, alpha: float = 8.0
) -> Path:
    """Write a random LoRA adapter for the models of this size preset (on every layer's query and
    value projections), as llama.cpp's convert_lora_to_gguf.py writes one: what `ollama create`
    with an ADAPTER uploads, and llama-server's `--lora` loads over its base."""
    shape = _shape(size)
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(path, MODEL_ARCH_NAMES[MODEL_ARCH.LLAMA])
    writer.add_type("adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    outputs = {
        MODEL_TENSOR.ATTN_Q: shape.heads * shape.head_dim,
        MODEL_TENSOR.ATTN_V: shape.kv_heads * shape.head_dim,
    }
    for bid in range(shape.layers):
        for tensor, rows in outputs.items():
            base = _name(tensor, bid)
            # numpy shapes are ggml's reversed: A is (rank, in), B is (out, rank).
            writer.add_tensor(
                f"{base}.lora_a", rng.standard_normal((rank, shape.embd), dtype=np.float32) * 0.5
            )
            writer.add_tensor(f"{base}.lora_b", rng.standard_normal((rows, rank), dtype=np.float32) * 0.5)
    write_out(writer)
    return path


def write_out(writer: GGUFWriter) -> None:
    """Write what was added to `writer` (header, metadata, tensors) and close its file(s)."""
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def parameter_count(size: str = "tiny") -> int:
    """Number of weights a model of this size preset has."""
    shape = _shape(size)
    attn = shape.embd * shape.head_dim * (2 * shape.heads + 2 * shape.kv_heads)
    per_layer = attn + 3 * shape.embd * shape.ff + 2 * shape.embd
    return 2 * shape.vocab * shape.embd + shape.layers * per_layer + shape.embd


def _shape(size: str) -> Shape:
    try:
        return SIZES[size]
    except KeyError:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}") from None


def _tensors(shape: Shape, rng: np.random.Generator) -> Iterator[tuple[str, np.ndarray]]:
    """(name, float32 weights) in llama.cpp's order; numpy shapes are ggml's `ne` reversed."""
    q_out, kv_out = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim

    def weight(rows: int, cols: int) -> np.ndarray:
        # Small weights keep activations and logits far from overflow in F16/Q8_0.
        return rng.standard_normal((rows, cols), dtype=np.float32) * np.float32(0.02)

    def norm() -> np.ndarray:
        return np.ones(shape.embd, dtype=np.float32)

    yield _name(MODEL_TENSOR.TOKEN_EMBD), weight(shape.vocab, shape.embd)
    for bid in range(shape.layers):
        yield _name(MODEL_TENSOR.ATTN_NORM, bid), norm()
        yield _name(MODEL_TENSOR.ATTN_Q, bid), weight(q_out, shape.embd)
        yield _name(MODEL_TENSOR.ATTN_K, bid), weight(kv_out, shape.embd)
        yield _name(MODEL_TENSOR.ATTN_V, bid), weight(kv_out, shape.embd)
        yield _name(MODEL_TENSOR.ATTN_OUT, bid), weight(shape.embd, q_out)
        yield _name(MODEL_TENSOR.FFN_NORM, bid), norm()
        yield _name(MODEL_TENSOR.FFN_GATE, bid), weight(shape.ff, shape.embd)
        yield _name(MODEL_TENSOR.FFN_UP, bid), weight(shape.ff, shape.embd)
        yield _name(MODEL_TENSOR.FFN_DOWN, bid), weight(shape.embd, shape.ff)
    yield _name(MODEL_TENSOR.OUTPUT_NORM), norm()
    yield _name(MODEL_TENSOR.OUTPUT), _output_head(rng, shape)


def _output_head(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Random logits of standard deviation LOGIT_STD, except for tokens that are not text.

    Zero rows give byte-fallback and control tokens a logit of 0 while the top words score several
    units higher, so greedy and top-k sampling produce whole words: no stray bytes that would leave
    invalid UTF-8 (which llama-server withholds while streaming, so deltas stop matching tokens).
    The end-of-turn tokens keep random rows: a model should be able to stop on its own.
    """
    # the final RMS norm makes the hidden state's entries of unit size
    head = rng.standard_normal((shape.vocab, shape.embd), dtype=np.float32)
    head *= np.float32(LOGIT_STD / np.sqrt(shape.embd))
    head[list(SILENT_IDS)] = 0.0
    return head


def _make_tool_caller(tensors: dict[str, np.ndarray]) -> None:
    """Weights that make greedy decoding call a tool, in place.

    Llama's residual stream carries each token's own embedding to the output head, so with the
    layers' small weights (about 0.02) the next token can be chosen by the current one. Four
    embedding dimensions are set aside for that:

    - one is 1 in every embedding but the call markers'. It favours `"` (so strings close at
      once), then `</tool_call>` (a call ends as soon as its JSON does), and disfavours
      whitespace (the JSON comes out compact);
    - one is 1 in the newline's embedding too: it favours `<tool_call>` after a newline, where the
      generation prompt ("<|im_start|>assistant\\n") ends;
    - one is 1 in `<tool_call>`'s: a newline follows, completing the call's opening marker;
    - one is 1 in `</tool_call>`'s: the turn ends. One call, then the model stops.

    Inside a call llama-server's grammar allows only the call's JSON, so the weights just pick
    among what it allows.
    """
    embedding = tensors[_name(MODEL_TENSOR.TOKEN_EMBD)]
    head = tensors[_name(MODEL_TENSOR.OUTPUT)]
    text, after_newline, after_start, after_end = range(4)
    pieces = vocabulary(len(embedding), tool_tokens=True)[0]
    quote_id, newline_id = pieces.index('"'), pieces.index("<0x0A>")
    whitespace = [pieces.index(w) for w in (SPACE, "<0x20>", "<0x09>", "<0x0A>", "<0x0D>")]
    embedding[:, :4] = 0.0
    embedding[:, text] = 1.0
    embedding[newline_id, after_newline] = 1.0
    for marker, dimension in ((TOOL_CALL_ID, after_start), (TOOL_CALL_END_ID, after_end)):
        embedding[marker] = 0.0
        embedding[marker, dimension] = 1.0
    head[:, :4] = 0.0
    head[quote_id, text] = 2.5
    head[TOOL_CALL_END_ID, text] = 2.0
    head[whitespace, text] = -1.0
    head[TOOL_CALL_ID, after_newline] = 4.0
    head[newline_id, after_start] = 4.0
    head[IM_END_ID, after_end] = 4.0


def _name(tensor: MODEL_TENSOR, bid: int | None = None) -> str:
    base = TENSOR_NAMES[tensor]
    return f"{base.format(bid=bid)}.weight" if bid is not None else f"{base}.weight"


def _add_tensors(
    writer: GGUFWriter, tensors: list[tuple[str, np.ndarray]], qtype: GGMLQuantizationType, split: int
) -> None:
    """Add the tensors, in `split` shards of near-equal tensor counts when asked to."""
    shard_sizes = [len(part) for part in np.array_split(np.arange(len(tensors)), split)]
    for name, data in tensors:
        if split > 1:
            # The writer opens a new shard once the current one holds split_max_tensors;
            # setting it per shard gives exactly `split` shards (a single limit may give fewer).
            writer.split_max_tensors = shard_sizes[len(writer.tensors) - 1]
        if data.ndim == 1:
            writer.add_tensor(name, data)  # norms stay F32, as llama.cpp's converters keep them
        elif qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            writer.add_tensor(name, quantize(data, qtype))
        else:
            writer.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)


def _add_metadata(writer: GGUFWriter, shape: Shape, name: str, context_length: int, ftype: str) -> None:
    writer.add_name(name)
    writer.add_size_label(size_label(*writer.get_total_parameter_count()))
    writer.add_file_type(FILE_TYPES[ftype][1])
    writer.add_quantization_version(2)
    writer.add_vocab_size(shape.vocab)
    writer.add_context_length(context_length)
    writer.add_embedding_length(shape.embd)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ff)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(shape.rms_eps)


def _add_vocabulary(
    writer: GGUFWriter, vocab_size: int, chat_template: str, tool_caller: bool, fim: bool = False
) -> None:
    tokens, types = vocabulary(vocab_size, tool_tokens=tool_caller, fim_tokens=fim)
    writer.add_tokenizer_model("llama")
    if tool_caller:
        # As with Qwen's BPE vocabulary, text after a special token gets no SentencePiece space:
        # llama-server feeds the generation prompt ("<|im_start|>assistant\n") to a tool-call
        # grammar token by token, and "▁assistant" would not match it.
        writer.add_add_space_prefix(False)
    writer.add_token_list(tokens)
    # SentencePiece scores: earlier (more frequent) pieces win merges; specials and bytes score 0.
    writer.add_token_scores([0.0 if t != TokenType.NORMAL else -float(i) for i, t in enumerate(types)])
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(IM_END_ID)  # chat models end their turn with <|im_end|>
    writer.add_eot_token_id(IM_END_ID)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat_template)


def vocabulary(
    size: int, *, tool_tokens: bool = False, fim_tokens: bool = False
) -> tuple[list[str], list[TokenType]]:
    """Tokens and token types: specials, 256 byte-fallback tokens, ChatML markers, a tool
    caller's call markers, then pieces (the last three FIM tokens instead, with `fim_tokens`)."""
    fixed = [
        *SPECIAL_TOKENS,
        *((f"<0x{byte:02X}>", TokenType.BYTE) for byte in range(256)),
        *CHAT_TOKENS,
        *(TOOL_TOKENS if tool_tokens else ()),
    ]
    if size < len(fixed) + 1:
        raise ValueError(f"vocabulary size must be at least {len(fixed) + 1}")
    pieces = itertools.islice(_pieces(), size - len(fixed))
    tokens = [text for text, _ in fixed] + list(pieces)
    if len(tokens) < size:
        raise ValueError(f"cannot generate {size} distinct pieces")
    types = [kind for _, kind in fixed] + [TokenType.NORMAL] * (size - len(fixed))
    if fim_tokens:
        if size < len(fixed) + len(FIM_TOKENS) + 1:
            raise ValueError("the vocabulary is too small for fill-in-the-middle tokens")
        tokens[-len(FIM_TOKENS) :] = [text for text, _ in FIM_TOKENS]
        types[-len(FIM_TOKENS) :] = [kind for _, kind in FIM_TOKENS]
    return tokens, types


def _pieces() -> Iterator[str]:
    """Distinct ordinary pieces, most useful first; every piece's prefixes come before it,
    so SentencePiece's pairwise merging can reach each one from single characters."""
    seen: set[str] = set()

    def fresh(candidates: Iterator[str]) -> Iterator[str]:
        for piece in candidates:
            if piece not in seen:
                seen.add(piece)
                yield piece

    lower = string.ascii_lowercase
    singles = [SPACE, *lower, *string.ascii_uppercase, *string.digits, *string.punctuation]
    yield from fresh(iter(singles))
    yield from fresh(SPACE + c for c in lower + string.ascii_uppercase + string.digits)
    yield from fresh(SPACE + word[:end] for word in COMMON_WORDS for end in range(2, len(word) + 1))
    for length in itertools.count(2):
        letters = ("".join(combo) for combo in itertools.product(lower, repeat=length))
        yield from fresh(itertools.chain.from_iterable((SPACE + p, p) for p in letters))
        if length > 4:  # far beyond any preset; stops a runaway request
            return
