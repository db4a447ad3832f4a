"""Header-only GGUF reading, metadata and capabilities, and the file rules of a scan (no database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import GGUFReader

from models_catalog.gguf_header import ArrayLength, GGUFHeaderError, read_header
from models_catalog.gguf_metadata import (
    MetadataError,
    quantization_name,
    read_metadata,
    template_has_thinking,
    template_has_tools,
)
from models_catalog.model_files import find_model_files, model_name_for_file, pair_projector
from models_catalog.parameters import ParameterError, split_parameters, validate_parameters, validate_sampling
from models_catalog.testing import TOOLS_TEMPLATE, make_library, write_gguf_header, write_whisper_ggml
from models_catalog.tiny_model import parameter_count, write_tiny_model


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_library(tmp_path_factory.mktemp("library"))


def test_the_header_reader_agrees_with_the_gguf_package(library: dict[str, Path]) -> None:
    ours = read_header(library["tiny"])
    reference = GGUFReader(library["tiny"])

    for key, field in reference.fields.items():
        if key.startswith("GGUF."):
            continue
        value = ours.kv[key]
        if isinstance(value, ArrayLength):
            assert value.count == len(field.data)
        else:
            assert value == pytest.approx(field.contents()), key
    assert [t.name for t in ours.tensors] == [t.name for t in reference.tensors]
    assert sum(t.elements for t in ours.tensors) == sum(int(t.n_elements) for t in reference.tensors)


def test_the_tiny_model_reads_as_a_llama_chat_model(library: dict[str, Path]) -> None:
    metadata = read_metadata([library["tiny"]])

    assert metadata.architecture == "llama"
    assert metadata.display_name == "tiny-chat"
    assert metadata.quantization == "F32" and metadata.file_type == 0
    assert (metadata.context_length, metadata.embedding_length, metadata.block_count) == (4096, 64, 2)
    assert (metadata.head_count, metadata.head_count_kv) == (4, 2)
    assert metadata.parameter_count == parameter_count("tiny")
    assert metadata.kind == "llm" and metadata.cap_completion
    assert not (metadata.cap_tools or metadata.cap_thinking or metadata.cap_embedding)


def test_a_split_model_counts_the_parameters_of_every_part(library: dict[str, Path]) -> None:
    parts = sorted(library["split"].parent.glob("Big-Model-*.gguf"))

    metadata = read_metadata(parts)

    assert metadata.split_count == 3
    assert metadata.parameter_count == parameter_count("tiny")


@pytest.mark.parametrize(
    ("file_type", "name"),
    [
        (0, "F32"),
        (1, "F16"),
        (7, "Q8_0"),
        (15, "Q4_K_M"),
        (17, "Q5_K_M"),
        (18, "Q6_K"),
        (32, "BF16"),
        (None, ""),
        (999, ""),
    ],
)
def test_file_types_are_named_as_llama_cpp_names_quantizations(file_type: int | None, name: str) -> None:
    assert quantization_name(file_type) == name


def test_a_header_without_a_file_type_is_named_by_its_tensors(tmp_path: Path) -> None:
    path = write_gguf_header(tmp_path / "nameless.gguf", file_type=None, size_label=None)

    metadata = read_metadata([path])

    assert metadata.quantization == "F32"  # the one 8x8 tensor
    assert metadata.size_label == "0.06K"  # computed from the tensors, as llama.cpp names sizes


def test_tools_and_thinking_are_read_from_the_chat_template() -> None:
    assert template_has_tools(TOOLS_TEMPLATE) and template_has_thinking(TOOLS_TEMPLATE)
    assert template_has_thinking("{% if enable_thinking %}x{% endif %}")
    assert template_has_thinking("{{ message.reasoning_content }}")
    assert not template_has_tools("{{ messages }}") and not template_has_thinking("{{ messages }}")


def test_embedding_models_are_recognised_by_architecture_and_by_pooling(library: dict[str, Path]) -> None:
    bert = read_metadata([library["embedding"]])
    pooled = read_metadata([library["pooled"]])

    assert (bert.kind, bert.cap_embedding, bert.cap_completion) == ("embedding", True, False)
    assert (pooled.kind, pooled.cap_embedding, pooled.architecture) == ("embedding", True, "qwen3")


def test_a_rank_pooled_model_is_a_reranker_not_an_embedding_model(tmp_path: Path) -> None:
    path = write_gguf_header(
        tmp_path / "bge-reranker-v2-m3-Q8_0.gguf",
        arch="qwen3",
        file_type=7,
        pooling_type=4,
        chat_template=TOOLS_TEMPLATE,
    )
    found = read_metadata([path])

    assert (found.kind, found.cap_rerank, found.cap_embedding) == ("embedding", True, False)
    assert not (found.cap_completion or found.cap_tools or found.cap_thinking)
    assert not read_metadata(
        [write_gguf_header(tmp_path / "e.gguf", arch="qwen3", pooling_type=1)]
    ).cap_rerank


@pytest.mark.parametrize(
    ("tokens", "extra", "insert"),
    [
        (("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"), {}, True),  # Qwen2.5-Coder
        (
            ("<\uff5cfim\u2581begin\uff5c>", "<\uff5cfim\u2581hole\uff5c>", "<\uff5cfim\u2581end\uff5c>"),
            {},
            True,
        ),
        (("\u2581<PRE>", "\u2581<SUF>", "\u2581<MID>"), {}, True),  # CodeLlama
        (("<fim_prefix>", "<fim_suffix>"), {}, False),  # no middle token
        (("<|fim_prefix|>x", "x<|fim_suffix|>", "<|fim_middle|>>"), {}, False),  # inside others, not whole
        (
            (),
            {
                "tokenizer.ggml.fim_pre_token_id": 1,
                "tokenizer.ggml.suffix_token_id": 2,
                "tokenizer.ggml.fim_mid_token_id": 3,
            },
            True,
        ),
        (("<|fim_prefix|>", "<|fim_suffix|>"), {"tokenizer.ggml.fim_mid_token_id": 3}, True),
    ],
)
def test_fill_in_the_middle_is_found_by_token_ids_or_texts_as_llama_cpp_finds_them(
    tmp_path: Path, tokens: tuple[str, ...], extra: dict, insert: bool
) -> None:
    path = write_gguf_header(
        tmp_path / "coder.gguf", arch="qwen2", tokens=tokens, extra=extra, vocabulary=40000
    )
    found = read_metadata([path])
    assert found.cap_insert is insert
    assert read_header(path, find_tokens=["<|fim_prefix|>", "tok7", "tok"]).tokens_found == (
        {"tok7", "<|fim_prefix|>"} if "<|fim_prefix|>" in tokens else {"tok7"}
    )


def test_an_embedding_model_with_fim_tokens_does_not_insert(tmp_path: Path) -> None:
    tokens = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
    path = write_gguf_header(tmp_path / "embed.gguf", arch="qwen3", pooling_type=1, tokens=tokens)
    assert not read_metadata([path]).cap_insert


def test_a_projector_is_recognised_by_its_clip_architecture(library: dict[str, Path]) -> None:
    assert read_metadata([library["mmproj"]]).is_projector


def test_a_whisper_ggml_file_reads_as_a_whisper_model(tmp_path: Path) -> None:
    metadata = read_metadata([write_whisper_ggml(tmp_path / "ggml-base.bin", n_audio_layer=6)])

    assert (metadata.kind, metadata.architecture, metadata.size_label) == ("whisper", "whisper", "base")
    assert metadata.quantization == "F16" and not metadata.cap_completion


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"hello, I am a text file pretending to be a model\n", "not a GGUF file"),
        (b"GGUF" + (9).to_bytes(4, "little") + bytes(16), "unsupported GGUF version 9"),
        (
            b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (5).to_bytes(8, "little"),
            "truncated",
        ),
    ],
)
def test_broken_files_give_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)

    with pytest.raises(MetadataError, match=message):
        read_metadata([path])


def test_a_truncated_copy_of_a_real_model_is_an_error_not_a_crash(library: dict[str, Path]) -> None:
    data = library["tiny"].read_bytes()
    for cut in (30, 1000, 5000, 9000):
        library["corrupt"].write_bytes(data[:cut])
        with pytest.raises(GGUFHeaderError):
            read_header(library["corrupt"])


def test_a_big_endian_header_is_read_too(tmp_path: Path) -> None:
    from gguf import GGUFEndian, GGUFWriter

    path = tmp_path / "be.gguf"
    writer = GGUFWriter(path, "llama", endianess=GGUFEndian.BIG)
    writer.add_context_length(2048)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()

    header = read_header(path)
    assert header.byte_order == ">" and header.kv["llama.context_length"] == 2048


@pytest.mark.parametrize(
    ("file_name", "name"),
    [
        ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "qwen2.5-7b-instruct-q4_k_m"),
        ("Big-Model-00001-of-00003.gguf", "big-model"),
        ("My Model: v2.GGUF", "my-model-v2"),
        ("ggml-tiny.en.bin", "ggml-tiny.en"),
    ],
)
def test_catalog_names_are_the_lowercase_stem_without_the_split_suffix(file_name: str, name: str) -> None:
    assert model_name_for_file(file_name) == name


def test_the_folder_walk_groups_split_parts_and_sets_projectors_apart(library: dict[str, Path]) -> None:
    contents = find_model_files(library["tiny"].parents[2])

    split = next(g for g in contents.models if "Big-Model" in g.path)
    assert len(split.parts) == 3 and split.path.endswith("-00001-of-00003.gguf") and not split.error
    assert contents.projectors == [str(library["mmproj"])]
    assert str(library["tiny"]) in [g.path for g in contents.models]
    assert not any(g.path.endswith("notes.txt") for g in contents.models)


def test_a_split_model_with_a_part_missing_is_reported(tmp_path: Path) -> None:
    parts = write_tiny_model(tmp_path / "Gappy.gguf", split=3)
    parts[1].unlink()

    (group,) = find_model_files(tmp_path).models

    assert group.error == "split model incomplete: part 2 of 3 missing"


def test_a_projector_pairs_with_the_model_whose_name_it_shares(tmp_path: Path) -> None:
    folder = str(tmp_path)
    projectors = [f"{folder}/mmproj-gemma-3-4b-f16.gguf", f"{folder}/mmproj-qwen2.5-vl-7b-f16.gguf"]

    assert pair_projector(f"{folder}/Qwen2.5-VL-7B-Q4_K_M.gguf", projectors) == projectors[1]
    assert pair_projector(f"{folder}/gemma-3-4b-it-Q8_0.gguf", projectors) == projectors[0]
    assert pair_projector(f"{folder}/only.gguf", projectors[:1]) == projectors[0]
    assert pair_projector(f"{folder}/sub/other.gguf", projectors) == ""


def test_parameter_errors_name_the_parameter() -> None:
    with pytest.raises(ParameterError) as error:
        validate_parameters({"ctx-size": "lots"})
    assert error.value.name == "ctx_size"

    assert validate_parameters({"flash-attn": True, "ngl": 99}) == {"flash_attn": "on", "n_gpu_layers": 99}
    assert split_parameters({"ctx_size": 4096, "temp": 0.6, "top_k": 20}) == (
        {"ctx_size": 4096},
        {"temperature": 0.6, "top_k": 20},
    )


def test_stop_sequences_are_a_list_of_texts_and_one_text_is_a_list_of_one() -> None:
    assert validate_sampling({"stop": ["<|im_end|>", "\n\n"]}) == {"stop": ["<|im_end|>", "\n\n"]}
    assert validate_sampling({"stop": "###", "num_keep": 5}) == {"stop": ["###"], "n_keep": 5}
    assert validate_sampling({"stop": []}) == {}  # no stop sequences: no default
    for bad, words in [([1], "a list of texts"), ({"a": 1}, "a list of texts"), (["ok", ""], "empty text")]:
        with pytest.raises(ParameterError, match=words) as error:
            validate_sampling({"stop": bad})
        assert error.value.name == "stop"


def test_mirostat_is_0_1_or_2() -> None:
    assert validate_sampling({"mirostat": "2", "mirostat_tau": 5, "mirostat_eta": 0.1}) == {
        "mirostat": 2,
        "mirostat_tau": 5.0,
        "mirostat_eta": 0.1,
    }
    with pytest.raises(ParameterError, match="at most 2"):
        validate_sampling({"mirostat": 3})
