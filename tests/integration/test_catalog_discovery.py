"""The scan over real GGUF files: metadata, capabilities, split models, projectors, broken files, rescans."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from models_catalog import tasks
from models_catalog.discovery import scan_models
from models_catalog.models import CatalogModel, ModelFolder, RunnerSettings
from models_catalog.testing import make_library, write_gguf_header
from models_catalog.tiny_model import write_tiny_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def library(tmp_path: Path, settings: Any, events: list[dict[str, Any]]) -> dict[str, Path]:
    root = tmp_path / "models"
    settings.LLAMAPROXY_MODELS_DIRS = [root]
    settings.BACKUP_DIR = tmp_path / "backups"
    return make_library(root)


def entry(name: str) -> CatalogModel:
    return CatalogModel.objects.get(name=name)


def test_a_scan_catalogs_every_model_with_its_metadata(library: dict[str, Path]) -> None:
    result = scan_models()

    assert sorted(result.added) == [
        "big-model",
        "corrupt",
        "gemma-3-4b-it-q4_k_m",
        "hermes-tools-q8_0",
        "nomic-embed-text-v1.5.f16",
        "qwen2.5-7b-instruct-q4_k_m",
        "qwen3-embedding-0.6b-q8_0",
        "readme",
        "tiny-chat",
    ]
    qwen = entry("qwen2.5-7b-instruct-q4_k_m")
    assert (qwen.architecture, qwen.display_name, qwen.quantization, qwen.file_type) == (
        "llama",
        "Qwen2.5 7B Instruct",
        "Q4_K_M",
        15,
    )
    assert (qwen.context_length, qwen.embedding_length, qwen.block_count) == (32768, 4096, 32)
    assert (qwen.head_count, qwen.head_count_kv, qwen.size_label) == (32, 8, "7B")
    assert qwen.size_bytes == library["quantized"].stat().st_size
    assert qwen.state == "available" and qwen.kind == "llm" and qwen.source == "scan"
    assert qwen.capabilities == ["completion"]
    assert qwen.metadata["general.architecture"] == "llama"
    assert "tokenizer.ggml.tokens" not in qwen.metadata  # the vocabulary is never stored
    assert qwen.folder == ModelFolder.objects.get(path=str(library["quantized"].parent))


def test_a_model_in_a_nested_folder_gets_the_tiny_models_real_metadata(library: dict[str, Path]) -> None:
    scan_models()

    tiny = entry("tiny-chat")
    assert tiny.path == str(library["tiny"])
    assert (tiny.architecture, tiny.quantization, tiny.context_length, tiny.block_count) == (
        "llama",
        "F32",
        4096,
        2,
    )
    assert tiny.parameter_count and tiny.parameter_count > 100_000
    assert "<|im_start|>" in tiny.chat_template
    assert tiny.capabilities == ["completion"]


def test_tools_and_thinking_come_from_the_chat_template(library: dict[str, Path]) -> None:
    scan_models()

    assert entry("hermes-tools-q8_0").capabilities == ["completion", "tools", "thinking"]
    assert entry("hermes-tools-q8_0").quantization == "Q8_0"


def test_embedding_models_are_found_by_architecture_or_pooling_key(library: dict[str, Path]) -> None:
    scan_models()

    for name in ("nomic-embed-text-v1.5.f16", "qwen3-embedding-0.6b-q8_0"):
        model = entry(name)
        assert model.kind == "embedding"
        assert model.capabilities == ["embedding"]
    assert entry("nomic-embed-text-v1.5.f16").quantization == "F16"


def test_an_mmproj_file_gives_its_folders_model_vision_and_is_no_entry_itself(
    library: dict[str, Path],
) -> None:
    scan_models()

    vision = entry("gemma-3-4b-it-q4_k_m")
    assert vision.cap_vision and "vision" in vision.capabilities
    assert vision.mmproj_path == str(library["mmproj"])
    assert not CatalogModel.objects.filter(path=str(library["mmproj"])).exists()
    assert not entry("qwen2.5-7b-instruct-q4_k_m").cap_vision


def test_a_split_model_is_one_entry_with_the_size_of_all_parts(library: dict[str, Path]) -> None:
    scan_models()

    big = entry("big-model")
    parts = sorted(library["split"].parent.glob("Big-Model-*.gguf"))
    assert len(parts) == 3
    assert big.path == str(parts[0])
    assert big.split_count == 3
    assert big.size_bytes == sum(p.stat().st_size for p in parts)
    assert (
        big.parameter_count == entry("tiny-chat").parameter_count
    )  # same shape, every part's tensors counted
    assert CatalogModel.objects.filter(path__contains="Big-Model").count() == 1


def test_unreadable_files_are_recorded_with_their_error_without_failing_the_scan(
    library: dict[str, Path],
) -> None:
    result = scan_models()

    corrupt, text = entry("corrupt"), entry("readme")
    assert corrupt.state == text.state == "error"
    assert "truncated" in corrupt.error
    assert "not a GGUF file" in text.error
    assert result.errors == {"corrupt": corrupt.error, "readme": text.error}
    assert entry("tiny-chat").state == "available"


def test_a_rescan_of_an_unchanged_folder_changes_nothing(
    library: dict[str, Path], events: list[dict[str, Any]]
) -> None:
    scan_models()
    events.clear()

    result = scan_models()

    assert result.added == result.updated == result.missing == []
    assert result.unchanged == 9
    assert events == []


def test_a_vanished_file_is_marked_missing_and_keeps_its_settings(library: dict[str, Path]) -> None:
    scan_models()
    RunnerSettings.objects.filter(model__name="tiny-chat").update(parameters={"ctx_size": 2048}, pinned=True)
    moved_away = library["tiny"].with_suffix(".away")
    library["tiny"].rename(moved_away)

    result = scan_models()

    assert result.missing == ["tiny-chat"]
    tiny = entry("tiny-chat")
    assert tiny.state == "missing"
    assert tiny.settings.parameters == {"ctx_size": 2048} and tiny.settings.pinned

    moved_away.rename(library["tiny"])
    scan_models()
    assert entry("tiny-chat").state == "available"
    assert entry("tiny-chat").settings.parameters == {"ctx_size": 2048}


def test_a_file_moved_to_another_folder_keeps_its_entry_and_settings(library: dict[str, Path]) -> None:
    scan_models()
    RunnerSettings.objects.filter(model__name="tiny-chat").update(parameters={"threads": 3})
    target = library["quantized"].parent / "elsewhere" / "tiny-chat.gguf"
    target.parent.mkdir()
    shutil.move(library["tiny"], target)

    result = scan_models()

    assert result.added == [] and result.missing == []
    tiny = entry("tiny-chat")
    assert tiny.path == str(target) and tiny.state == "available"
    assert tiny.settings.parameters == {"threads": 3}


def test_a_changed_file_is_read_again(library: dict[str, Path]) -> None:
    scan_models()
    write_gguf_header(library["quantized"], name="Qwen2.5 7B Instruct", context_length=131072)
    stat = library["quantized"].stat()
    os.utime(library["quantized"], (stat.st_atime, stat.st_mtime + 10))

    result = scan_models()

    assert result.updated == ["qwen2.5-7b-instruct-q4_k_m"]
    assert entry("qwen2.5-7b-instruct-q4_k_m").context_length == 131072


def test_a_coder_with_fim_tokens_can_insert_and_an_entry_without_an_mtime_is_read_again(
    library: dict[str, Path],
) -> None:
    write_tiny_model(library["tiny"].parent / "tiny-coder.gguf", name="tiny-coder", fim=True)
    scan_models()
    assert "insert" in entry("tiny-coder").capabilities
    assert "insert" not in entry("tiny-chat").capabilities
    # As migration 0005 leaves a language model: its header is read again by the next scan.
    CatalogModel.objects.filter(name="tiny-coder").update(cap_insert=False, mtime=None)

    result = scan_models()

    assert result.updated == ["tiny-coder"]
    assert entry("tiny-coder").cap_insert and entry("tiny-coder").mtime is not None


def test_names_stay_unique_when_two_folders_hold_the_same_file_name(
    library: dict[str, Path], tmp_path: Path, settings: Any
) -> None:
    other = tmp_path / "other"
    write_tiny_model(other / "tiny-chat.gguf", seed=5)
    settings.LLAMAPROXY_MODELS_DIRS = [tmp_path / "models", other]

    scan_models()
    first = {m.name: m.path for m in CatalogModel.objects.filter(name__startswith="tiny-chat")}
    scan_models(force=True)
    again = {m.name: m.path for m in CatalogModel.objects.filter(name__startswith="tiny-chat")}

    assert first == again == {"tiny-chat": str(library["tiny"]), "tiny-chat-2": str(other / "tiny-chat.gguf")}


def test_a_folder_added_in_the_catalog_is_scanned_too(library: dict[str, Path], tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    write_tiny_model(extra / "Extra-Model.gguf", seed=3)
    ModelFolder.objects.create(path=str(extra))

    scan_models()

    assert entry("extra-model").folder.path == str(extra)
    assert ModelFolder.objects.get(path=str(extra)).last_scanned_at is not None


def test_a_missing_folder_is_reported_on_the_folder_not_raised(
    library: dict[str, Path], tmp_path: Path
) -> None:
    ModelFolder.objects.create(path=str(tmp_path / "gone"))

    result = scan_models()

    assert result.folder_errors == {str(tmp_path / "gone"): "the folder does not exist"}
    assert ModelFolder.objects.get(path=str(tmp_path / "gone")).last_scan_error == "the folder does not exist"


def test_a_scan_that_changes_the_catalog_publishes_catalog_changed(
    library: dict[str, Path], events: list[dict[str, Any]]
) -> None:
    scan_models()

    assert [e["type"] for e in events] == ["catalog.changed"]
    assert "tiny-chat" in events[0]["added"]


def test_the_celery_task_runs_the_scan_service(library: dict[str, Path]) -> None:
    assert tasks.scan_models.name == "models_catalog.tasks.scan_models"

    result = tasks.scan_models.run()

    assert "tiny-chat" in result["added"]
    assert CatalogModel.objects.count() == 9


def test_the_scan_models_command_prints_what_it_found(
    library: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("scan_models")

    out = capsys.readouterr().out
    assert "+ tiny-chat" in out
    assert "! readme: not a GGUF file" in out
    assert "9 added" in out


def test_whisper_ggml_models_are_catalogued_for_whisper_server(library: dict[str, Path]) -> None:
    from models_catalog.testing import write_whisper_ggml

    write_whisper_ggml(library["quantized"].parent / "whisper" / "ggml-tiny.en.bin")

    scan_models()

    whisper = entry("ggml-tiny.en")
    assert (whisper.kind, whisper.architecture, whisper.size_label, whisper.quantization) == (
        "whisper",
        "whisper",
        "tiny",
        "F16",
    )
    assert whisper.settings.runtime == "whisper-server"
    assert whisper.capabilities == []
