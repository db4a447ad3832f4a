"""Backups: a round trip through `backup` and `restore`, validation, rotation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from models_catalog import services
from models_catalog.backup import export_catalog, list_backups, restore_catalog, write_backup
from models_catalog.discovery import scan_models
from models_catalog.errors import CatalogError
from models_catalog.models import AppSetting, CatalogModel, ModelFolder
from models_catalog.testing import make_library

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def quiet_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models_catalog.events.publish_sync", lambda event, groups=(): None)


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
    AppSetting.objects.create(key="default_model", value="tiny-chat")
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
    AppSetting.objects.all().delete()

    call_command("restore", str(path))

    assert state() == before
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
