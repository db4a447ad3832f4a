"""Tiny random-weight whisper models that the real whisper-server loads and transcribes with.

whisper.cpp reads its legacy ggml format: magic, eleven int32 hyperparameters, the mel filter
bank, the vocabulary, then the tensors (each: n_dims, name length, type, dims, name, data).
The mel filters and the vocabulary are borrowed from whisper.cpp's own test model
(`for-tests-ggml-tiny.en.bin`, which has no tensors); the weights are random F16 (the
convolution aborts on F32 weights), small and seeded, so the same arguments give the same bytes.
The text such a model writes is nonsense: assert shapes, never content.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

GGML_MAGIC = 0x67676D6C
N_VOCAB_ENGLISH = 51864  # whisper.cpp: multilingual when n_vocab >= 51865
N_VOCAB_MULTILINGUAL = 51865
F32, F16 = 0, 1
WEIGHT_STD = 0.02
EMBEDDING_STD = 0.5
# Random weights never stop talking on their own, and each request would decode hundreds of
# tokens (several times over, with temperature fallback). From this text position on, the
# decoder's positional embedding points along the end-of-text token's embedding, so each
# segment ends after a few (nonsense) tokens and a request takes a fraction of a second.
END_AFTER_POSITIONS = 8
END_DIRECTION_SCALE = 20.0
END_TOKEN_SCALE = 5.0


class TinyWhisperError(ValueError):
    """The model cannot be written (no donor file, bad dimensions)."""


@dataclass(frozen=True)
class WhisperDims:
    n_vocab: int = N_VOCAB_MULTILINGUAL
    n_audio_ctx: int = 1500
    n_audio_state: int = 64
    n_audio_head: int = 1
    n_audio_layer: int = 4  # 4 layers is whisper.cpp's (and the catalog's) "tiny"
    n_text_ctx: int = 448
    n_text_state: int = 64
    n_text_head: int = 1
    n_text_layer: int = 4  # not 2: whisper.cpp takes 2 text layers for a distilled model
    n_mels: int = 80
    ftype: int = F16

    def hparams(self) -> tuple[int, ...]:
        return (
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        )


@dataclass(frozen=True)
class DonorParts:
    """What a whisper ggml file holds besides its tensors: the mel filters and the vocabulary, raw."""

    n_mels: int
    filters: bytes  # int32 n_mel, int32 n_fft, float32[n_mel * n_fft]
    vocabulary: bytes  # int32 count, then (uint32 length, bytes) per token


def default_donor() -> Path:
    from runners.provisioning import WHISPER_TEST_MODEL, whisper_test_assets_dir

    return whisper_test_assets_dir() / WHISPER_TEST_MODEL


def read_donor(path: Path) -> DonorParts:
    """The mel filters and the vocabulary of a whisper ggml file (e.g. the sdist's test model)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TinyWhisperError(
            f"cannot read the whisper donor model {path}: {exc.strerror or exc}; "
            "run `manage.py install_llama_server --whisper`, which keeps whisper.cpp's test model"
        ) from None
    header_size = 4 + 11 * 4
    if len(data) < header_size + 8 or struct.unpack_from("<I", data)[0] != GGML_MAGIC:
        raise TinyWhisperError(f"{path} is not a whisper ggml model (no ggml magic)")
    offset = header_size
    n_mel, n_fft = struct.unpack_from("<ii", data, offset)
    filters_end = offset + 8 + 4 * n_mel * n_fft
    if n_mel <= 0 or n_fft <= 0 or filters_end + 4 > len(data):
        raise TinyWhisperError(f"{path}: the mel filter bank is truncated")
    (count,) = struct.unpack_from("<i", data, filters_end)
    cursor = filters_end + 4
    for _ in range(count):
        if cursor + 4 > len(data):
            raise TinyWhisperError(f"{path}: the vocabulary is truncated")
        (length,) = struct.unpack_from("<I", data, cursor)
        cursor += 4 + length
    if cursor > len(data):
        raise TinyWhisperError(f"{path}: the vocabulary is truncated")
    return DonorParts(n_mels=n_mel, filters=data[offset:filters_end], vocabulary=data[filters_end:cursor])


def tensor_shapes(dims: WhisperDims) -> Iterator[tuple[str, tuple[int, ...], int]]:
    """(name, ggml shape with ne[0] first, file type) of every tensor whisper.cpp expects, in order."""
    a, t = dims.n_audio_state, dims.n_text_state
    if a != t:
        raise TinyWhisperError("whisper.cpp needs n_audio_state == n_text_state")
    yield "encoder.positional_embedding", (a, dims.n_audio_ctx), F32
    yield "encoder.conv1.weight", (3, dims.n_mels, a), F16
    yield "encoder.conv1.bias", (1, a), F32
    yield "encoder.conv2.weight", (3, a, a), F16
    yield "encoder.conv2.bias", (1, a), F32
    yield "encoder.ln_post.weight", (a,), F32
    yield "encoder.ln_post.bias", (a,), F32
    for i in range(dims.n_audio_layer):
        yield from _block(f"encoder.blocks.{i}", a, cross=False)
    yield "decoder.positional_embedding", (t, dims.n_text_ctx), F32
    yield "decoder.token_embedding.weight", (t, dims.n_vocab), F16
    yield "decoder.ln.weight", (t,), F32
    yield "decoder.ln.bias", (t,), F32
    for i in range(dims.n_text_layer):
        yield from _block(f"decoder.blocks.{i}", t, cross=True)


def _block(prefix: str, n: int, *, cross: bool) -> Iterator[tuple[str, tuple[int, ...], int]]:
    yield f"{prefix}.mlp_ln.weight", (n,), F32
    yield f"{prefix}.mlp_ln.bias", (n,), F32
    yield f"{prefix}.mlp.0.weight", (n, 4 * n), F16
    yield f"{prefix}.mlp.0.bias", (4 * n,), F32
    yield f"{prefix}.mlp.2.weight", (4 * n, n), F16
    yield f"{prefix}.mlp.2.bias", (n,), F32
    for attn in ("attn", "cross_attn") if cross else ("attn",):
        yield f"{prefix}.{attn}_ln.weight", (n,), F32
        yield f"{prefix}.{attn}_ln.bias", (n,), F32
        yield f"{prefix}.{attn}.query.weight", (n, n), F16
        yield f"{prefix}.{attn}.query.bias", (n,), F32
        yield f"{prefix}.{attn}.key.weight", (n, n), F16
        yield f"{prefix}.{attn}.value.weight", (n, n), F16
        yield f"{prefix}.{attn}.value.bias", (n,), F32
        yield f"{prefix}.{attn}.out.weight", (n, n), F16
        yield f"{prefix}.{attn}.out.bias", (n,), F32


def _values(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    count = int(np.prod(shape))
    if name.endswith("ln.weight") or name.endswith("ln_post.weight"):
        return np.ones(count, dtype=np.float32)  # layer norms start as the identity
    if name.endswith(".bias"):
        return np.zeros(count, dtype=np.float32)
    return rng.normal(0.0, EMBEDDING_STD if "embedding" in name else WEIGHT_STD, count).astype(np.float32)


def _write_tensor(out: BinaryIO, name: str, shape: tuple[int, ...], ftype: int, values: np.ndarray) -> None:
    encoded = name.encode()
    out.write(struct.pack("<iii", len(shape), len(encoded), ftype))
    out.write(struct.pack(f"<{len(shape)}i", *shape))
    out.write(encoded)
    out.write(values.astype("<f2" if ftype == F16 else "<f4").tobytes())


def write_tiny_whisper_model(
    path: str | Path,
    *,
    multilingual: bool = True,
    n_state: int = 64,
    n_head: int = 1,
    seed: int = 0,
    donor: str | Path | None = None,
) -> Path:
    """Write a random-weight whisper ggml model (F16, tiny dimensions) and return its path."""
    if n_state <= 0 or n_head <= 0 or n_state % n_head:
        raise TinyWhisperError("n_state must be a positive multiple of n_head")
    parts = read_donor(Path(donor) if donor is not None else default_donor())
    dims = WhisperDims(
        n_vocab=N_VOCAB_MULTILINGUAL if multilingual else N_VOCAB_ENGLISH,
        n_audio_state=n_state,
        n_audio_head=n_head,
        n_text_state=n_state,
        n_text_head=n_head,
        n_mels=parts.n_mels,
    )
    rng = np.random.default_rng(seed)
    end_direction = rng.normal(0.0, 1.0, n_state)
    end_direction -= end_direction.mean()  # layer norm removes the mean: keep the direction out of it
    end_direction /= np.linalg.norm(end_direction)
    eot = 50257 if multilingual else 50256
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with partial.open("wb") as out:
        out.write(struct.pack("<I11i", GGML_MAGIC, *dims.hparams()))
        out.write(parts.filters)
        out.write(parts.vocabulary)
        for name, shape, ftype in tensor_shapes(dims):
            values = _values(name, shape, rng)
            if name == "decoder.positional_embedding":
                rows = values.reshape(shape[1], shape[0])
                rows[END_AFTER_POSITIONS:] += END_DIRECTION_SCALE * end_direction
            elif name == "decoder.token_embedding.weight":
                values.reshape(shape[1], shape[0])[eot] = END_TOKEN_SCALE * end_direction
            _write_tensor(out, name, shape, ftype, values)
    partial.replace(target)
    return target
