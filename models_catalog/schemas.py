"""Request and response schemas of the catalog's manage API routes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema
from pydantic import ConfigDict

from models_catalog.models import CatalogModel, ModelFolder, RunnerSettings


class SettingsOut(Schema):
    runtime: str
    server_binary: str
    custom_command: str
    parameters: dict[str, Any]
    extra_args: list[str]
    sampling: dict[str, Any]
    ttl_seconds: int | None
    pinned: bool
    group: str
    exclusive: bool
    preload: bool


class ModelOut(Schema):
    name: str
    display_name: str
    path: str
    base: str | None = Field(None, description="the entry this one is a variant of (same file, own settings)")
    folder: str | None
    kind: str
    state: str
    error: str
    source: str
    enabled: bool
    aliases: list[str]
    architecture: str
    quantization: str
    file_type: int | None
    size_label: str
    parameter_count: int | None
    size_bytes: int
    mtime: datetime | None
    split_count: int
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    capabilities: list[str]
    tools_override: bool | None
    mmproj_path: str
    digest: str
    settings: SettingsOut | None

    @staticmethod
    def resolve_base(obj: CatalogModel) -> str | None:
        return obj.base.name if obj.base_id else None

    @staticmethod
    def resolve_folder(obj: CatalogModel) -> str | None:
        return obj.folder.path if obj.folder_id else None

    @staticmethod
    def resolve_aliases(obj: CatalogModel) -> list[str]:
        return [a.alias for a in obj.aliases.all()]

    @staticmethod
    def resolve_settings(obj: CatalogModel) -> RunnerSettings | None:
        try:
            return obj.settings
        except RunnerSettings.DoesNotExist:
            return None


class ModelDetailOut(ModelOut):
    chat_template: str
    metadata: dict[str, Any]


class ModelPatch(Schema):
    """Only the fields sent change; `parameters` and `sampling` merge (a null value removes a key)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = None
    aliases: list[str] | None = None
    tools_override: bool | None = None
    runtime: str | None = None
    server_binary: str | None = None
    custom_command: str | None = None
    parameters: dict[str, Any] | None = None
    extra_args: Any = Field(None, description="a list of arguments, or one command-line text")
    sampling: dict[str, Any] | None = None
    ttl_seconds: int | None = Field(None, ge=0)
    pinned: bool | None = None
    group: str | None = Field(None, max_length=64)
    exclusive: bool | None = None
    preload: bool | None = None


# Fields where an explicit null is a value (not "leave as is").
NULLABLE_PATCH_FIELDS = {"tools_override", "ttl_seconds"}


class AliasIn(Schema):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(min_length=1, max_length=200)


class DeletedOut(Schema):
    deleted: str
    files: list[str] = Field(default_factory=list, description="the files deleted with it (delete_files)")


class DigestOut(Schema):
    name: str
    digest: str


class ScanOut(Schema):
    added: list[str]
    updated: list[str]
    missing: list[str]
    errors: dict[str, str]
    unchanged: int
    folders: int
    folder_errors: dict[str, str]
    seconds: float


class FolderOut(Schema):
    id: int
    path: str
    enabled: bool
    configured: bool = Field(description="from LLAMAPROXY_MODELS_DIRS (cannot be removed here)")
    last_scanned_at: datetime | None
    last_scan_error: str
    model_count: int

    @staticmethod
    def resolve_configured(obj: ModelFolder) -> bool:
        from models_catalog.discovery import configured_folder_paths

        return obj.path in configured_folder_paths()

    @staticmethod
    def resolve_model_count(obj: ModelFolder) -> int:
        return obj.models.count()


class FolderIn(Schema):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)


class ImportIn(Schema):
    model_config = ConfigDict(extra="forbid")

    configs: list[dict[str, Any]] = Field(
        min_length=1, description="config documents: app_config, models_config or llama-runner config.json"
    )
    dry_run: bool = False


class ImportOut(Schema):
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    folders_added: list[str]
    settings_changed: dict[str, Any]  # runtime setting (limit) → its new value
    notes: list[str]
    backup: str


class BackupOut(Schema):
    name: str
    size: int
    created_at: datetime
    reason: str


class RestoreOut(Schema):
    models: int
    deleted: int
    folders: int
