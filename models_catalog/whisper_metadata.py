"""What a whisper.cpp model file (legacy ggml format) says about itself. Pure functions.

The file starts with the magic 0x67676d6c ("ggml" little-endian, bytes `lmgg`) and eleven int32
hyperparameters; that is all the catalog needs: the size (tiny … large, from the layer count as
whisper.cpp itself decides it, or from the width), multilingual or English-only (`n_vocab`),
the weight type, and the parameter count (computed from the dimensions, no tensor is read).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

WHISPER_MAGIC = 0x67676D6C
WHISPER_HPARAMS = (
    "n_vocab",
    "n_audio_ctx",
    "n_audio_state",
    "n_audio_head",
    "n_audio_layer",
    "n_text_ctx",
    "n_text_state",
    "n_text_head",
    "n_text_layer",
    "n_mels",
    "ftype",
)
HEADER_BYTES = 4 + 4 * len(WHISPER_HPARAMS)
# whisper.cpp names the model by its encoder depth; the width names it when the depth is unusual.
SIZES_BY_LAYERS = {4: "tiny", 6: "base", 12: "small", 24: "medium", 32: "large"}
SIZES_BY_STATE = {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}
MULTILINGUAL_MIN_VOCAB = 51865  # whisper.cpp's is_multilingual()
QUANT_VERSION_FACTOR = 1000  # GGML_QNT_VERSION_FACTOR: the quantization version is folded into ftype
# ggml_ftype (not llama.cpp's file types: the k-quants differ)
FTYPE_NAMES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
}


class WhisperMetadataError(ValueError):
    """Not a readable whisper model: the message says why."""


@dataclass(frozen=True)
class WhisperInfo:
    hparams: dict[str, int]

    @property
    def ftype(self) -> int:
        return self.hparams["ftype"] % QUANT_VERSION_FACTOR

    @property
    def quantization(self) -> str:
        return FTYPE_NAMES.get(self.ftype, "")

    @property
    def multilingual(self) -> bool:
        return self.hparams["n_vocab"] >= MULTILINGUAL_MIN_VOCAB

    @property
    def languages(self) -> int:
        """How many languages the model knows (whisper.cpp's num_languages()); 1 for English-only."""
        n_vocab = self.hparams["n_vocab"]
        return n_vocab - 51765 - 1 if self.multilingual else 1

    @property
    def size(self) -> str:
        by_layers = SIZES_BY_LAYERS.get(self.hparams["n_audio_layer"])
        return by_layers or SIZES_BY_STATE.get(self.hparams["n_text_state"], "")

    @property
    def variant(self) -> str:
        """The size with what sets a model apart: large-v3, large-v3-turbo, tiny.en …"""
        size = self.size
        if size == "large":
            if self.hparams["n_text_layer"] == 4:
                size = "large-v3-turbo"
            elif self.hparams["n_vocab"] == 51866:
                size = "large-v3"
        elif self.hparams["n_text_layer"] == 2 and size:
            size = f"distil-{size}"
        if size and not self.multilingual:
            size += ".en"
        return size

    @property
    def parameter_count(self) -> int:
        h = self.hparams
        a, t = h["n_audio_state"], h["n_text_state"]

        def block(n: int, attentions: int) -> int:
            mlp = 2 * n + (n * 4 * n + 4 * n) + (4 * n * n + n)
            attention = 2 * n + 4 * n * n + 3 * n  # layer norm, q k v out, q v out biases
            return mlp + attentions * attention

        encoder = (
            a * h["n_audio_ctx"]
            + (3 * h["n_mels"] * a + a)
            + (3 * a * a + a)
            + 2 * a
            + h["n_audio_layer"] * block(a, 1)
        )
        decoder = t * h["n_text_ctx"] + t * h["n_vocab"] + 2 * t + h["n_text_layer"] * block(t, 2)
        return encoder + decoder

    def as_metadata(self) -> dict[str, int | str | bool]:
        """The `metadata` JSON of a catalog entry: every hyperparameter, plus what they mean."""
        extra: dict[str, int | str | bool] = {f"whisper.{k}": v for k, v in self.hparams.items()}
        extra["whisper.size"] = self.size
        extra["whisper.variant"] = self.variant
        extra["whisper.multilingual"] = self.multilingual
        extra["whisper.languages"] = self.languages
        return extra


def has_whisper_magic(data: bytes) -> bool:
    return len(data) >= 4 and struct.unpack_from("<I", data)[0] == WHISPER_MAGIC


def is_vad_model(data: bytes) -> bool:
    """whisper.cpp's voice-activity models (ggml-silero-*.bin) share the magic; a model type string follows."""
    if not has_whisper_magic(data) or len(data) < 8:
        return False
    (length,) = struct.unpack_from("<i", data, 4)
    return 0 < length <= 64 and data[8 : 8 + length].startswith(b"silero")


def looks_like_whisper_model(data: bytes) -> bool:
    """The start of a file (64 bytes or more) is a whisper speech-to-text model's."""
    return has_whisper_magic(data) and not is_vad_model(data)


def parse_header(data: bytes) -> WhisperInfo:
    """The hyperparameters at the start of a whisper ggml file."""
    if not has_whisper_magic(data):
        raise WhisperMetadataError("not a whisper ggml model (no ggml magic)")
    if len(data) < HEADER_BYTES:
        raise WhisperMetadataError("the whisper model header is truncated")
    values = struct.unpack_from(f"<{len(WHISPER_HPARAMS)}i", data, 4)
    hparams = dict(zip(WHISPER_HPARAMS, values, strict=True))
    wrong = [name for name, value in hparams.items() if name != "ftype" and value <= 0] + (
        ["ftype"] if hparams["ftype"] < 0 else []
    )
    if wrong:
        raise WhisperMetadataError(f"the whisper model header is invalid ({', '.join(wrong)})")
    if hparams["n_audio_state"] != hparams["n_text_state"]:
        raise WhisperMetadataError("the whisper model header is invalid (n_audio_state != n_text_state)")
    return WhisperInfo(hparams)


def read_header(source: Path | BinaryIO) -> WhisperInfo:
    if isinstance(source, Path):
        with source.open("rb") as handle:
            return parse_header(handle.read(HEADER_BYTES))
    return parse_header(source.read(HEADER_BYTES))
