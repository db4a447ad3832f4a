"""Backups: a round trip through `backup` and `restore`, validation, rotation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from llamaproxy.models import RuntimeSettings
from llamaproxy.runtime import current_limits
from models_catalog import services
from models_catalog.backup import export_catalog, list_backups, restore_catalog, write_backup
from models_catalog.discovery import scan_models
from models_catalog.errors import CatalogError
from models_catalog.models import CatalogModel, ModelFolder
from models_catalog.testing import make_library, write_gguf_header

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("quiet_events")]


@pytest.fixture
def catalog(tmp_path: Path, settings: Any) -> Path:
    root = tmp_path / "models"
    settings.LLAMAPROXY_MODELS_DIRS = [root]
    settings.BACKUP_DIR = tmp_path / "backups"
    make_library(root)
    scan_models()
    services.update_model(
        "tiny-chat", {"parameters": {"ctx_size": 2048}, "sampling": {"temperature": 0.3}, "pinned": True}
    )
    services.add_alias("tiny-chat", "tiny")
    RuntimeSettings.objects.create(pk=1, default_model="tiny-chat", max_loaded_models=2)
    return root


def state() -> str:
    document = export_catalog()
    document.pop("created_at")
    return json.dumps(document, sort_keys=True)


def test_a_backup_restores_the_catalog_exactly_after_changes(catalog: Path, capsys: Any) -> None:
    before = state()
    call_command("backup")
    path = Path(capsys.readouterr().out.split("Backup written: ")[1].strip())
    services.update_model("tiny-chat", {"parameters": {"ctx_size": 8192}, "aliases": [], "enabled": False})
    services.delete_model("hermes-tools-q8_0")
    CatalogModel.objects.filter(name="big-model").update(name="renamed-big")
    RuntimeSettings.objects.filter(pk=1).update(default_model=None, max_loaded_models=None, default_ttl=60)

    call_command("restore", str(path))

    assert state() == before
    assert current_limits().default_model == "tiny-chat" and current_limits().max_loaded_models == 2
    assert RuntimeSettings.objects.get(pk=1).default_ttl is None  # the backup had no override
    tiny = CatalogModel.objects.get(name="tiny-chat")
    assert tiny.settings.parameters == {"ctx_size": 2048} and tiny.settings.pinned
    assert list(tiny.aliases.values_list("alias", flat=True)) == ["tiny"]


def test_restore_keeps_the_rows_of_entries_it_matches(catalog: Path) -> None:
    tiny_id = CatalogModel.objects.get(name="tiny-chat").pk
    document = export_catalog()

    restore_catalog(document)

    assert CatalogModel.objects.get(name="tiny-chat").pk == tiny_id  # runner rows pointing at it survive


def test_restore_takes_a_backup_name_from_the_backup_folder(catalog: Path) -> None:
    path = write_backup("manual")
    services.delete_model("tiny-chat")

    call_command("restore", path.name)

    assert CatalogModel.objects.filter(name="tiny-chat").exists()


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        (lambda d: d.update(format="something-else"), "format"),
        (
            lambda d: d["models"][0]["settings"].update(parameters={"ctx_size": "huge"}),
            "models.0.settings.parameters.ctx_size",
        ),
        (lambda d: d["models"][1].update(name=d["models"][0]["name"]), "models.1.name"),
        (lambda d: d["models"][0]["settings"].update(ttl_seconds=-1), "models.0.settings.ttl_seconds"),
        (lambda d: d["models"][0].update(base="nobody"), "models.0.base"),
        (lambda d: d["runtime_settings"].update(max_loaded_models=0), "runtime_settings.max_loaded_models"),
        (lambda d: d["runtime_settings"].update(colour="blue"), "runtime_settings.colour"),
    ],
)
def test_an_invalid_backup_is_refused_and_changes_nothing(catalog: Path, damage: Any, field: str) -> None:
    document = export_catalog()
    damage(document)
    before = state()

    with pytest.raises(CatalogError) as error:
        restore_catalog(document)

    assert error.value.field == field
    assert state() == before


def test_the_restore_command_names_the_file_and_problem_without_a_traceback(
    catalog: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{broken")

    with pytest.raises(CommandError, match=f"Nothing restored. {bad}: file: .*is not valid JSON"):
        call_command("restore", str(bad))
    with pytest.raises(CommandError, match=re.escape("'nope.json' is not a backup name")):
        call_command("restore", "nope.json")


def test_a_restore_writes_a_backup_of_the_catalog_it_replaces(catalog: Path) -> None:
    restore_catalog(export_catalog())

    assert [p.name.split("-", 2)[2] for p in list_backups()] == ["before-restore.json"]


def test_old_backups_are_rotated(catalog: Path, settings: Any) -> None:
    settings.BACKUP_KEEP = 3
    written = [write_backup(f"n{i}") for i in range(5)]

    assert list_backups() == written[:1:-1]


def test_restore_brings_back_folders_added_by_hand(catalog: Path, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()
    services.add_folder(str(extra))
    document = export_catalog()
    ModelFolder.objects.filter(path=str(extra)).delete()

    restore_catalog(document)

    assert ModelFolder.objects.filter(path=str(extra)).exists()


def test_a_backup_carries_the_runtime_settings_row(catalog: Path) -> None:
    RuntimeSettings.objects.filter(pk=1).update(memory_budget=2 * 1024**3, request_timeout=30.0)

    document = export_catalog()

    assert document["version"] == 2 and "app_settings" not in document
    assert document["runtime_settings"] == {
        "max_loaded_models": 2,
        "memory_budget": 2 * 1024**3,
        "default_ttl": None,
        "default_model": "tiny-chat",
        "request_timeout": 30.0,
    }


def test_a_version_1_backup_with_app_settings_restores_the_limits_it_names(catalog: Path) -> None:
    RuntimeSettings.objects.filter(pk=1).update(memory_budget=4096)
    document = export_catalog()
    document["version"] = 1
    del document["runtime_settings"]
    document["app_settings"] = {"default_model": "hermes-tools-q8_0", "default_ttl": 300, "unknown": 1}

    restore_catalog(document)

    row = RuntimeSettings.objects.get(pk=1)
    assert (row.default_model, row.default_ttl) == ("hermes-tools-q8_0", 300)
    assert (row.max_loaded_models, row.memory_budget) == (2, 4096)  # not named there: kept
    assert current_limits().default_model == "hermes-tools-q8_0"


def test_a_version_1_backup_with_a_bad_app_setting_is_refused_with_the_key_named(catalog: Path) -> None:
    document = export_catalog()
    document["version"] = 1
    del document["runtime_settings"]
    document["app_settings"] = {"max_loaded_models": 0}

    with pytest.raises(CatalogError) as error:
        restore_catalog(document)

    assert error.value.field == "app_settings.max_loaded_models"
    assert RuntimeSettings.objects.get(pk=1).max_loaded_models == 2


def test_a_restore_that_changes_limits_tells_the_scheduler_after_it_commits(
    catalog: Path, quiet_events: list[dict[str, Any]], django_capture_on_commit_callbacks: Any
) -> None:
    document = export_catalog()
    document["runtime_settings"]["max_loaded_models"] = 4

    with django_capture_on_commit_callbacks(execute=True):
        restore_catalog(document)
        assert quiet_events == []  # nothing is announced before the commit

    assert [e["settings"]["max_loaded_models"] for e in quiet_events] == [4]
    assert quiet_events[0]["type"] == "settings.changed"


def test_a_backup_from_before_the_rerank_capability_restores_a_reranker_as_one(catalog: Path) -> None:
    write_gguf_header(catalog / "rerank" / "bge-reranker-v2-m3-Q8_0.gguf", arch="qwen3", pooling_type=4)
    scan_models()
    name = CatalogModel.objects.get(path__endswith="bge-reranker-v2-m3-Q8_0.gguf").name
    document = export_catalog()
    [old] = [m for m in document["models"] if m["name"] == name]
    del old["file"]["cap_rerank"]  # as written before the capability existed
    old["file"]["cap_embedding"] = True

    restore_catalog(document)

    restored = CatalogModel.objects.get(name=name)
    assert (restored.cap_rerank, restored.cap_embedding) == (True, False)
    assert CatalogModel.objects.get(name="tiny-chat").capabilities == ["completion"]
