"""Whisper ggml models: header metadata, catalog detection, and the tiny random-weight writer."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from models_catalog.gguf_metadata import MetadataError, read_metadata
from models_catalog.model_files import find_model_files
from models_catalog.tiny_whisper import (
    N_VOCAB_ENGLISH,
    TinyWhisperError,
    WhisperDims,
    read_donor,
    tensor_shapes,
    write_tiny_whisper_model,
)
from models_catalog.whisper_metadata import (
    WHISPER_HPARAMS,
    WHISPER_MAGIC,
    WhisperInfo,
    WhisperMetadataError,
    is_vad_model,
    looks_like_whisper_model,
    parse_header,
)

# n_vocab, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx, n_text_state,
# n_text_head, n_text_layer, n_mels, ftype: whisper.cpp's published models
OFFICIAL = {
    "tiny": (51865, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1),
    "tiny.en": (51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1),
    "base": (51865, 1500, 512, 8, 6, 448, 512, 8, 6, 80, 1),
    "small.en": (51864, 1500, 768, 12, 12, 448, 768, 12, 12, 80, 1),
    "medium": (51865, 1500, 1024, 16, 24, 448, 1024, 16, 24, 80, 1),
    "large": (51865, 1500, 1280, 20, 32, 448, 1280, 20, 32, 80, 1),
    "large-v3": (51866, 1500, 1280, 20, 32, 448, 1280, 20, 32, 128, 1),
    "large-v3-turbo": (51866, 1500, 1280, 20, 32, 448, 1280, 20, 4, 128, 1),
}


def header(hparams: tuple[int, ...]) -> bytes:
    return struct.pack("<I11i", WHISPER_MAGIC, *hparams)


def info(hparams: tuple[int, ...]) -> WhisperInfo:
    return WhisperInfo(dict(zip(WHISPER_HPARAMS, hparams, strict=True)))


def fake_donor(path: Path, n_mels: int = 80, tokens: int = 300) -> Path:
    """A whisper test model's layout (header, mel filters, vocabulary, no tensors), small."""
    n_fft = 201
    body = header((51864, 1500, 384, 6, 4, 448, 384, 6, 4, n_mels, 1))
    body += struct.pack("<ii", n_mels, n_fft) + struct.pack(
        f"<{n_mels * n_fft}f", *([0.5] * (n_mels * n_fft))
    )
    body += struct.pack("<i", tokens)
    for i in range(tokens):
        word = f"t{i}".encode()
        body += struct.pack("<I", len(word)) + word
    path.write_bytes(body)
    return path


@pytest.mark.parametrize(("variant", "hparams"), list(OFFICIAL.items()))
def test_each_published_whisper_size_is_named_from_its_header(variant: str, hparams: tuple[int, ...]) -> None:
    parsed = parse_header(header(hparams))

    assert parsed.variant == variant
    assert parsed.size == variant.split("-")[0].split(".")[0]
    assert parsed.multilingual == (not variant.endswith(".en"))


def test_multilingual_models_know_99_or_100_languages_and_english_only_ones_one() -> None:
    assert info(OFFICIAL["tiny"]).languages == 99
    assert info(OFFICIAL["large-v3"]).languages == 100
    assert info(OFFICIAL["tiny.en"]).languages == 1


def test_an_unusual_depth_is_named_by_its_width() -> None:
    hparams = list(OFFICIAL["base"])
    hparams[4] = 5  # five encoder layers: no published size has that
    assert info(tuple(hparams)).size == "base"


def test_the_quantization_version_folded_into_ftype_is_ignored() -> None:
    hparams = list(OFFICIAL["base"])
    hparams[10] = 2007
    parsed = info(tuple(hparams))

    assert (parsed.ftype, parsed.quantization) == (7, "Q8_0")


def test_parameter_counts_grow_with_the_size_as_published() -> None:
    counts = {name: info(h).parameter_count for name, h in OFFICIAL.items()}

    assert 37e6 < counts["tiny"] < 40e6
    assert 72e6 < counts["base"] < 75e6
    assert 760e6 < counts["medium"] < 770e6
    assert 1.5e9 < counts["large-v3"] < 1.6e9
    assert 800e6 < counts["large-v3-turbo"] < 815e6


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GGUF" + bytes(60), "no ggml magic"),
        (struct.pack("<I3i", WHISPER_MAGIC, 1, 2, 3), "truncated"),
        (header((51865, 1500, 384, 6, 0, 448, 384, 6, 4, 80, 1)), "n_audio_layer"),
        (header((51865, 1500, 384, 6, 4, 448, 512, 6, 4, 80, 1)), "n_audio_state != n_text_state"),
    ],
)
def test_a_broken_header_is_an_error_saying_why(data: bytes, message: str) -> None:
    with pytest.raises(WhisperMetadataError, match=message):
        parse_header(data)


def test_a_voice_activity_model_is_not_taken_for_a_whisper_model(tmp_path: Path) -> None:
    vad = struct.pack("<Ii", WHISPER_MAGIC, 10) + b"silero-16k" + bytes(50)
    (tmp_path / "ggml-silero-v5.1.2.bin").write_bytes(vad)
    (tmp_path / "ggml-base.bin").write_bytes(header(OFFICIAL["base"]) + bytes(16))

    assert is_vad_model(vad) and not looks_like_whisper_model(vad)
    assert [Path(g.path).name for g in find_model_files(tmp_path).models] == ["ggml-base.bin"]


def test_the_catalog_metadata_of_a_whisper_file_says_size_languages_and_weights(tmp_path: Path) -> None:
    path = tmp_path / "ggml-small.en-q8_0.bin"
    hparams = list(OFFICIAL["small.en"])
    hparams[10] = 7
    path.write_bytes(header(tuple(hparams)) + bytes(32))

    metadata = read_metadata([path])

    assert (metadata.kind, metadata.architecture, metadata.size_label) == ("whisper", "whisper", "small")
    assert (metadata.display_name, metadata.quantization) == ("whisper small.en", "Q8_0")
    assert metadata.parameter_count and 240e6 < metadata.parameter_count < 245e6
    assert metadata.extra["whisper.multilingual"] is False
    assert metadata.extra["whisper.n_audio_layer"] == 12
    assert metadata.extra["whisper.variant"] == "small.en"
    assert not metadata.cap_completion


def test_a_truncated_whisper_file_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "ggml-tiny.bin"
    path.write_bytes(struct.pack("<I2i", WHISPER_MAGIC, 51865, 1500))

    with pytest.raises(MetadataError, match="truncated"):
        read_metadata([path])


def test_the_tiny_model_has_every_tensor_whisper_cpp_expects_with_f16_matrices() -> None:
    shapes = list(tensor_shapes(WhisperDims()))
    names = [name for name, _, _ in shapes]

    assert len(names) == len(set(names)) == 7 + 15 * 4 + 4 + 24 * 4  # as whisper.cpp creates them
    types = {name: ftype for name, _, ftype in shapes}
    assert types["encoder.conv1.weight"] == types["decoder.token_embedding.weight"] == 1
    assert types["encoder.positional_embedding"] == types["encoder.conv1.bias"] == 0


def test_the_tiny_model_borrows_the_donors_filters_and_vocabulary(tmp_path: Path) -> None:
    donor = fake_donor(tmp_path / "donor.bin")
    path = write_tiny_whisper_model(tmp_path / "out" / "ggml-tiny-random.bin", donor=donor, seed=7)

    data = path.read_bytes()
    parts = read_donor(donor)
    offset = 4 + 11 * 4
    assert data[offset : offset + len(parts.filters)] == parts.filters
    offset += len(parts.filters)
    assert data[offset : offset + len(parts.vocabulary)] == parts.vocabulary
    metadata = read_metadata([path])
    assert (metadata.kind, metadata.size_label, metadata.quantization) == ("whisper", "tiny", "F16")
    assert metadata.extra["whisper.multilingual"] is True
    tensors_bytes = sum(
        4 * (3 + len(shape)) + len(name) + (2 if ftype else 4) * math.prod(shape)
        for name, shape, ftype in tensor_shapes(WhisperDims())
    )
    assert len(data) == offset + len(parts.vocabulary) + tensors_bytes


def test_the_tiny_model_is_the_same_bytes_for_the_same_seed_and_can_be_english_only(tmp_path: Path) -> None:
    donor = fake_donor(tmp_path / "donor.bin")
    first = write_tiny_whisper_model(tmp_path / "a.bin", donor=donor, seed=1).read_bytes()
    second = write_tiny_whisper_model(tmp_path / "b.bin", donor=donor, seed=1).read_bytes()
    english = write_tiny_whisper_model(tmp_path / "c.bin", donor=donor, seed=1, multilingual=False)

    assert first == second
    assert parse_header(english.read_bytes()[:48]).hparams["n_vocab"] == N_VOCAB_ENGLISH
    assert read_metadata([english]).display_name == "whisper tiny.en"


def test_a_missing_donor_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(TinyWhisperError, match="install_llama_server --whisper"):
        write_tiny_whisper_model(tmp_path / "x.bin", donor=tmp_path / "nowhere.bin")
