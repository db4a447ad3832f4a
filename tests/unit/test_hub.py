"""What a Hugging Face reference names and which of a repository's files make the model it asks
for (models_catalog/hub.py's pure part)."""

from __future__ import annotations

import pytest

from models_catalog.hub import (
    Choice,
    HubError,
    HubFile,
    HubRef,
    choices,
    is_safe_path,
    parse_reference,
    quantization_label,
    select,
)
from models_catalog.lookup import resolve_name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF", HubRef("bartowski/Llama-3.2-1B-Instruct-GGUF")),
        (
            "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q8_0",
            HubRef("bartowski/Llama-3.2-1B-Instruct-GGUF", "Q8_0"),
        ),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:latest", HubRef("bartowski/Llama-3.2-1B-Instruct-GGUF")),
        ("huggingface.co/unsloth/Qwen3-4B-GGUF:iq4_xs", HubRef("unsloth/Qwen3-4B-GGUF", "iq4_xs")),
        ("https://huggingface.co/unsloth/Qwen3-4B-GGUF", HubRef("unsloth/Qwen3-4B-GGUF")),
        ("https://huggingface.co/unsloth/Qwen3-4B-GGUF/", HubRef("unsloth/Qwen3-4B-GGUF")),
        (
            "https://huggingface.co/unsloth/Qwen3-4B-GGUF/blob/main/Qwen3-4B-Q5_K_M.gguf",
            HubRef("unsloth/Qwen3-4B-GGUF", "Qwen3-4B-Q5_K_M.gguf"),
        ),
        ("HF.CO/a/b.c_d-e", HubRef("a/b.c_d-e")),
        ("llama3.2", None),
        ("llama3.2:3b", None),
        ("unsloth/Qwen3-4B-GGUF", None),  # a bare id only where asked for
        ("hf.co/only-one-part", None),
        ("hf.co/a/../b", None),
        ("hf.co/a/b/c", None),
        ("ftp://huggingface.co/a/b", None),
        ("", None),
    ],
)
def test_references_name_a_repository_and_a_tag(text: str, expected: HubRef | None) -> None:
    assert parse_reference(text) == expected


def test_bare_ids_and_a_separate_quantization_are_taken_where_asked_for() -> None:
    assert parse_reference("unsloth/Qwen3-4B-GGUF", bare=True) == HubRef("unsloth/Qwen3-4B-GGUF")
    assert parse_reference("unsloth/Qwen3-4B-GGUF:Q8_0", bare=True) == HubRef("unsloth/Qwen3-4B-GGUF", "Q8_0")
    ref = parse_reference("https://huggingface.co/a/b", quantization="Q6_K")
    assert ref == HubRef("a/b", "Q6_K") and ref.name == "hf.co/a/b:Q6_K"
    assert parse_reference("not a repo", bare=True) is None
    assert HubRef("a/b").name == "hf.co/a/b"


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("Llama-3.2-1B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("Qwen3-4B-UD-Q4_K_XL.gguf", "UD-Q4_K_XL"),
        ("model.IQ4_XS.gguf", "IQ4_XS"),
        ("gemma-3-4b-it-bf16.gguf", "BF16"),
        ("phi-4-fp16.gguf", "F16"),
        ("Q8_0/big-model-Q8_0-00001-of-00003.gguf", "Q8_0"),
        ("BF16/big-model-00001-of-00002.gguf", "BF16"),
        ("gpt-oss-20b-MXFP4.gguf", "MXFP4"),
        ("tiny.gguf", ""),
        ("Qwen2-7B-Instruct.gguf", ""),  # "7B" and "Instruct" are no quantization
    ],
)
def test_a_files_quantization_is_read_from_its_name_or_folder(path: str, label: str) -> None:
    assert quantization_label(path) == label


def files(*paths: str) -> list[HubFile]:
    return [HubFile(p, 100 * (i + 1), f"{i:064x}") for i, p in enumerate(paths)]


def test_choices_group_split_parts_skip_other_files_and_take_the_best_projector_beside_them() -> None:
    repo = files(
        "README.md",
        "model-Q4_K_M.gguf",
        "model-Q8_0.gguf",
        "Q6_K/model-Q6_K-00002-of-00002.gguf",
        "Q6_K/model-Q6_K-00001-of-00002.gguf",
        "mmproj-model-Q8_0.gguf",
        "mmproj-model-f16.gguf",
        "model.safetensors",
    )
    found = {c.label: c for c in choices(repo)}
    assert set(found) == {"Q4_K_M", "Q8_0", "Q6_K"}
    assert [p.path for p in found["Q6_K"].parts] == [
        "Q6_K/model-Q6_K-00001-of-00002.gguf",
        "Q6_K/model-Q6_K-00002-of-00002.gguf",
    ]
    assert found["Q4_K_M"].projector is not None and found["Q4_K_M"].projector.path == "mmproj-model-f16.gguf"
    assert found["Q6_K"].projector == found["Q4_K_M"].projector  # the repository's top serves a folder
    assert found["Q4_K_M"].size == found["Q4_K_M"].parts[0].size + found["Q4_K_M"].projector.size
    assert found["Q8_0"].as_dict()["projector"] == {"path": "mmproj-model-f16.gguf", "size": 700}


def test_two_files_of_one_quantization_are_told_apart_by_name() -> None:
    found = [c.label for c in choices(files("a-Q4_0.gguf", "b-Q4_0.gguf", "c-Q8_0.gguf"))]
    assert found == ["a-Q4_0", "b-Q4_0", "Q8_0"]


def option(label: str, path: str | None = None) -> Choice:
    return Choice(label, (HubFile(path or f"m-{label}.gguf", 1),))


def test_the_default_is_q4_k_m_else_the_nearest_the_repository_has() -> None:
    assert select([option("Q8_0"), option("Q4_K_M")], HubRef("a/b")).label == "Q4_K_M"
    assert select([option("Q8_0"), option("Q6_K"), option("F16")], HubRef("a/b")).label == "Q6_K"
    assert select([option("tiny"), option("other")], HubRef("a/b")).label == "tiny"


def test_a_tag_picks_a_quantization_in_any_case_or_a_file_by_name() -> None:
    options = [option("Q8_0"), option("Q4_K_M", "sub/Model-Q4_K_M.gguf")]
    assert select(options, HubRef("a/b", "q8_0")).label == "Q8_0"
    assert select(options, HubRef("a/b", "Model-Q4_K_M.gguf")).label == "Q4_K_M"
    assert select(options, HubRef("a/b", "sub/model-q4_k_m")).label == "Q4_K_M"
    with pytest.raises(HubError) as missing:
        select(options, HubRef("a/b", "Q2_K"))
    assert missing.value.status == 404 and "has no Q2_K file; it has Q8_0, Q4_K_M" in missing.value.message
    with pytest.raises(HubError) as empty:
        select([], HubRef("a/b"))
    assert "no GGUF model files" in empty.value.message


def test_hugging_face_names_resolve_in_either_spelling_and_any_case() -> None:
    aliases = {"hf.co/Acme/Tiny-GGUF:Q8_0": "tiny-q8_0", "hf.co/Acme/Tiny-GGUF": "tiny-q4_k_m"}
    names = {"tiny-q8_0", "tiny-q4_k_m"}
    assert resolve_name("huggingface.co/Acme/Tiny-GGUF:Q8_0", names, aliases) == "tiny-q8_0"
    assert resolve_name("https://huggingface.co/acme/tiny-gguf:q8_0", names, aliases) == "tiny-q8_0"
    assert resolve_name("hf.co/Acme/Tiny-GGUF:latest", names, aliases) == "tiny-q4_k_m"
    assert resolve_name("hf.co/Acme/Other-GGUF", names, aliases) is None


@pytest.mark.parametrize(
    ("path", "safe"),
    [
        ("model-Q4_K_M.gguf", True),
        ("Q8_0/model-Q8_0-00001-of-00002.gguf", True),
        ("../outside.gguf", False),
        ("Q8_0/../../outside.gguf", False),
        ("/etc/model.gguf", False),
        ("a//b.gguf", False),
        ("./a.gguf", False),
        ("a\\b.gguf", False),
        ("", False),
        (None, False),
    ],
)
def test_only_paths_below_the_repository_are_taken_from_a_listing(path: object, safe: bool) -> None:
    assert is_safe_path(path) is safe
