"""Catalog backups: the whole catalog and its settings as one JSON document.

The same document is the manage API's export. A backup is written before every import, restore
and bulk change, into BACKUP_DIR, and only the newest BACKUP_KEEP are kept. A restore validates
the whole document first and then makes the catalog what it says, in one transaction; entries
are matched by name (then by file) so that rows other apps point at survive.

The runtime settings (llamaproxy.models.RuntimeSettings: limits and the default model) travel in
`runtime_settings`. Documents of version 1 carried some of them as `app_settings`
(`default_model`, `max_loaded_models`, `default_ttl`); a restore of one sets those it names and
leaves the others as they are.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils.dateparse import parse_datetime
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from llamaproxy.runtime import LIMIT_FIELDS, LimitError, clean_limit, publish_settings_changed
from models_catalog.discovery import configured_folder_paths
from models_catalog.errors import CatalogError
from models_catalog.events import catalog_changed
from models_catalog.gguf_metadata import pooling_name
from models_catalog.models import HEADER_FIELDS, CatalogModel, ModelAlias, ModelFolder, RunnerSettings
from models_catalog.settings_validation import SETTINGS_FIELDS, validate_settings_changes

FORMAT = "llamaproxy-catalog"
VERSION = 2  # 2: `runtime_settings` replaced `app_settings`
LEGACY_APP_SETTINGS = ("default_model", "max_loaded_models", "default_ttl")
BACKUP_NAME_RE = re.compile(r"^catalog-\d{8}T\d{6}\.\d{6}Z-[a-z0-9._-]{1,60}\.json$")
FILE_FIELDS = (
    "kind",
    "state",
    "error",
    "source",
    "size_bytes",
    "mtime",
    "split_count",
    "digest",
    "digest_mtime",
    *HEADER_FIELDS,
)


# --- the document's shape (validated on restore) ----------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SettingsDoc(_Strict):
    runtime: str = RunnerSettings.Runtime.LLAMA_SERVER
    server_binary: str = ""
    custom_command: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    extra_args: list[str] = Field(default_factory=list)
    sampling: dict[str, Any] = Field(default_factory=dict)
    ttl_seconds: int | None = Field(default=None, ge=0)
    pinned: bool = False
    group: str = Field(default="", max_length=64)
    exclusive: bool = False
    preload: bool = False


class ModelDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")  # file fields are many and optional

    name: str = Field(min_length=1, max_length=200)
    path: str = Field(min_length=1, max_length=1024)
    base: str | None = None
    enabled: bool = True
    tools_override: bool | None = None
    aliases: list[str] = Field(default_factory=list)
    settings: SettingsDoc = Field(default_factory=SettingsDoc)
    file: dict[str, Any] = Field(default_factory=dict)


class FolderDoc(_Strict):
    path: str = Field(min_length=1)
    enabled: bool = True


class RuntimeSettingsDoc(_Strict):
    """The stored overrides; null = the environment's value applies."""

    max_loaded_models: int | None = None
    memory_budget: int | None = None
    default_ttl: int | None = None
    default_model: str | None = None
    request_timeout: float | None = None


class CatalogDoc(BaseModel):
    model_config = ConfigDict(extra="ignore")

    format: Literal["llamaproxy-catalog"]
    version: int = Field(ge=1, le=VERSION)
    created_at: str | None = None
    reason: str = ""
    runtime_settings: RuntimeSettingsDoc | None = None
    app_settings: dict[str, Any] = Field(default_factory=dict)  # version 1
    folders: list[FolderDoc] = Field(default_factory=list)
    models: list[ModelDoc] = Field(default_factory=list)


# --- export and backup files -----------------------------------------------------------------------


def export_catalog(reason: str = "export") -> dict[str, Any]:
    models = (
        CatalogModel.objects.select_related("settings", "base").prefetch_related("aliases").order_by("name")
    )
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "reason": reason,
        "runtime_settings": _runtime_settings_doc(),
        "folders": [{"path": f.path, "enabled": f.enabled} for f in ModelFolder.objects.all()],
        "models": [_model_doc(m) for m in models],
    }


def _runtime_settings_doc() -> dict[str, Any]:
    from llamaproxy.models import RuntimeSettings

    row = RuntimeSettings.objects.filter(pk=1).first()
    return {name: getattr(row, name) if row else None for name in LIMIT_FIELDS}


def _model_doc(model: CatalogModel) -> dict[str, Any]:
    try:
        runner = model.settings
    except RunnerSettings.DoesNotExist:
        runner = RunnerSettings()
    file = {field: getattr(model, field) for field in FILE_FIELDS}
    file["mtime"] = model.mtime.isoformat() if model.mtime else None
    return {
        "name": model.name,
        "path": model.path,
        "base": model.base.name if model.base else None,
        "enabled": model.enabled,
        "tools_override": model.tools_override,
        "aliases": [a.alias for a in model.aliases.all()],
        "settings": {field: getattr(runner, field) for field in SETTINGS_FIELDS},
        "file": file,
    }


def backup_dir() -> Path:
    path = Path(settings.BACKUP_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_backup(reason: str = "manual") -> Path:
    """Write the catalog to a new timestamped file in BACKUP_DIR and rotate old ones."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", reason.lower()).strip("-")[:60] or "manual"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = backup_dir() / f"catalog-{stamp}-{slug}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(export_catalog(reason), indent=1, ensure_ascii=False))
    os.replace(temporary, path)  # a reader never sees half a backup
    rotate_backups()
    return path


def list_backups() -> list[Path]:
    """Backups, newest first."""
    return sorted(
        (p for p in backup_dir().glob("catalog-*.json") if BACKUP_NAME_RE.match(p.name)), reverse=True
    )


def rotate_backups(keep: int | None = None) -> list[Path]:
    keep = settings.BACKUP_KEEP if keep is None else keep
    removed = list_backups()[max(keep, 1) :]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def backup_path(name: str) -> Path:
    """The backup called `name` in BACKUP_DIR; CatalogError for anything else (no paths from outside)."""
    if not BACKUP_NAME_RE.match(name):
        raise CatalogError(f"{name!r} is not a backup name", field="name", status=404)
    path = backup_dir() / name
    if not path.is_file():
        raise CatalogError(f"no backup called {name!r}", field="name", status=404)
    return path


def load_document(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise CatalogError(f"cannot read {path}: {exc.strerror or exc}", field="file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{path} is not valid JSON: {exc}", field="file") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: a backup is a JSON object", field="file")
    return data


# --- restore ----------------------------------------------------------------------------------------


def validate_document(data: Any) -> CatalogDoc:
    """The parsed document, or CatalogError naming the first bad key (e.g. `models.2.settings.ttl_seconds`)."""
    try:
        doc = CatalogDoc.model_validate(data)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        location = ".".join(str(part) for part in first["loc"])
        raise CatalogError(first["msg"], field=location or None) from None
    names: set[str] = set()
    aliases: set[str] = set()
    base_paths: set[str] = set()
    for index, model in enumerate(doc.models):
        where = f"models.{index}"
        if model.name in names or model.name in aliases:
            raise CatalogError(f"the name {model.name!r} is used twice", field=f"{where}.name")
        names.add(model.name)
        for alias in model.aliases:
            if alias in names or alias in aliases:
                raise CatalogError(f"the alias {alias!r} is used twice", field=f"{where}.aliases")
            aliases.add(alias)
        if model.base is None:
            if model.path in base_paths:
                raise CatalogError(
                    f"two entries without a base share the file {model.path}", field=f"{where}.path"
                )
            base_paths.add(model.path)
        try:
            model.settings = SettingsDoc(**validate_settings_changes(model.settings.model_dump()))
        except CatalogError as exc:
            raise CatalogError(exc.message, field=f"{where}.settings.{exc.field}") from None
    _validate_runtime_settings(doc)
    clash = names & aliases
    if clash:
        raise CatalogError(f"{sorted(clash)[0]!r} is both a name and an alias", field="models")
    for index, model in enumerate(doc.models):
        if model.base is not None and model.base not in names:
            raise CatalogError(
                f"the base {model.base!r} is not in the document", field=f"models.{index}.base"
            )
    return doc


def _validate_runtime_settings(doc: CatalogDoc) -> None:
    """Limits checked as the dashboard checks them; a version 1 `app_settings` becomes them."""
    if doc.runtime_settings is not None:
        where, values = "runtime_settings", doc.runtime_settings.model_dump()
    else:
        where = "app_settings"
        values = {k: v for k, v in doc.app_settings.items() if k in LEGACY_APP_SETTINGS}
    cleaned = {}
    for name, value in values.items():
        try:
            cleaned[name] = clean_limit(name, value)
        except LimitError as exc:
            raise CatalogError(str(exc).removeprefix(f"{name}: "), field=f"{where}.{name}") from None
    if doc.runtime_settings is not None:
        doc.runtime_settings = RuntimeSettingsDoc(**cleaned)
    else:
        doc.app_settings = cleaned


def restore_catalog(data: Any, *, reason: str = "restore") -> dict[str, int]:
    """Make the catalog what the document says (validated first; atomic; a backup is written first)."""
    doc = validate_document(data)
    write_backup(reason=f"before-{reason}")
    with transaction.atomic():
        counts = _restore(doc)
        transaction.on_commit(lambda: catalog_changed(reason, **counts))
        if _restore_runtime_settings(doc):
            transaction.on_commit(lambda: publish_settings_changed(reason))
    return counts


def _restore_runtime_settings(doc: CatalogDoc) -> bool:
    """Make RuntimeSettings what the document says (validated already); True when it changed."""
    from llamaproxy.models import RuntimeSettings

    # A version 1 document sets only the keys its `app_settings` has.
    values = doc.runtime_settings.model_dump() if doc.runtime_settings else dict(doc.app_settings)
    if not values:
        return False
    row = RuntimeSettings.objects.select_for_update().filter(pk=1).first() or RuntimeSettings(pk=1)
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    if not changed:
        return False
    for name, value in changed.items():
        setattr(row, name, value)
    row.save()  # invalidates the cached limits once the transaction commits
    return True


def _restore(doc: CatalogDoc) -> dict[str, int]:
    existing = {m.name: m for m in CatalogModel.objects.all()}
    by_path = {m.path: m for m in existing.values() if m.base_id is None}
    matched: dict[str, CatalogModel] = {}
    for model in doc.models:
        entry = existing.get(model.name)
        if entry is None and model.base is None:  # renamed since the backup: match by file
            entry = by_path.get(model.path)
            if entry is not None and entry.name in {m.name for m in doc.models}:
                entry = None
        if entry is not None and entry.pk not in {e.pk for e in matched.values()}:
            matched[model.name] = entry
    keep = {e.pk for e in matched.values()}
    removed = len(existing) - len(keep)
    CatalogModel.objects.exclude(pk__in=keep).delete()
    # Free names and paths first so that swaps between entries cannot trip the unique constraints.
    for entry in matched.values():
        CatalogModel.objects.filter(pk=entry.pk).update(
            name=f"__restore-{entry.pk}", path=f"__restore-{entry.pk}"
        )
    ModelAlias.objects.all().delete()

    entries: dict[str, CatalogModel] = {}
    for model in sorted(doc.models, key=lambda m: m.base is not None):  # bases before variants
        entry = matched.get(model.name) or CatalogModel()
        entry.name, entry.path, entry.enabled, entry.tools_override = (
            model.name,
            model.path,
            model.enabled,
            model.tools_override,
        )
        entry.base = entries.get(model.base) if model.base else None
        _apply_file_fields(entry, model.file)
        entry.save()
        entries[model.name] = entry
        RunnerSettings.objects.update_or_create(model=entry, defaults=model.settings.model_dump())
        ModelAlias.objects.bulk_create([ModelAlias(alias=a, model=entry) for a in model.aliases])

    configured = set(configured_folder_paths())
    folder_paths = {f.path for f in doc.folders}
    ModelFolder.objects.exclude(path__in=folder_paths | configured).delete()
    for folder in doc.folders:
        ModelFolder.objects.update_or_create(path=folder.path, defaults={"enabled": folder.enabled})
    for entry in entries.values():
        folder = _folder_for(entry.path)
        if folder is not None and entry.folder_id != folder.pk:
            CatalogModel.objects.filter(pk=entry.pk).update(folder=folder)

    return {"models": len(entries), "deleted": removed, "folders": len(doc.folders)}


def _apply_file_fields(entry: CatalogModel, file: dict[str, Any]) -> None:
    for name in FILE_FIELDS:
        if name not in file:
            continue
        value = file[name]
        if name == "mtime" and isinstance(value, str):
            value = parse_datetime(value)
        try:
            value = CatalogModel._meta.get_field(name).clean(value, entry)
        except DjangoValidationError:
            continue  # a bad file field is refreshed by the next scan; the settings are what matter
        setattr(entry, name, value)
    if (
        "cap_rerank" not in file
        and pooling_name((entry.metadata or {}).get(f"{entry.architecture}.pooling_type")) == "rank"
    ):
        # A backup from before the rerank capability lists a reranker as an embedding model.
        entry.cap_rerank, entry.cap_embedding = True, False


def _folder_for(path: str) -> ModelFolder | None:
    best: ModelFolder | None = None
    for folder in ModelFolder.objects.all():
        if path.startswith(folder.path.rstrip(os.sep) + os.sep) and (
            best is None or len(folder.path) > len(best.path)
        ):
            best = folder
    return best
