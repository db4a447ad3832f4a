"""The scan: find model files in the catalog's folders and bring the catalog up to date.

Headers are read only for files that are new or changed (size or mtime), so a rescan of an
unchanged library is a walk and a stat per file. Files that vanished are marked missing, never
deleted, so nobody's settings are lost; an unreadable file becomes an entry in the error state
with the reason. The Celery task, `manage.py scan_models` and the manage API all call `scan_models`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from models_catalog.events import catalog_changed
from models_catalog.gguf_metadata import MetadataError, ModelMetadata, read_metadata
from models_catalog.model_files import (
    ModelFileGroup,
    find_model_files,
    is_projector_name,
    model_name_for_file,
    pair_projector,
    split_parts,
)
from models_catalog.models import HEADER_FIELDS, CatalogModel, ModelAlias, ModelFolder, RunnerSettings

log = logging.getLogger(__name__)

# Fields a scan derives from the file; everything else on an entry belongs to people.
FILE_FIELDS = (
    "kind",
    *HEADER_FIELDS,
    "split_count",
    "size_bytes",
    "mtime",
    "state",
    "error",
    "folder_id",
)


@dataclass
class ScanResult:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # name → why its file cannot be read
    unchanged: int = 0
    folders: int = 0
    folder_errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.missing)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.updated)} updated, {self.unchanged} unchanged, "
            f"{len(self.missing)} missing, {len(self.errors)} unreadable "
            f"({self.folders} folders, {self.seconds:.2f}s)"
        )


@dataclass
class _Found:
    group: ModelFileGroup
    folder_id: int | None
    size: int = 0
    mtime: datetime | None = None


def normalize_folder_path(path: str | Path) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def configured_folder_paths() -> list[str]:
    return [normalize_folder_path(p) for p in settings.LLAMAPROXY_MODELS_DIRS]


def catalog_folders() -> list[ModelFolder]:
    """The folders a scan covers: LLAMAPROXY_MODELS_DIRS (rows made on demand) and enabled rows added by hand."""
    for path in configured_folder_paths():
        ModelFolder.objects.get_or_create(path=path)
    configured = set(configured_folder_paths())
    return [f for f in ModelFolder.objects.all() if f.enabled or f.path in configured]


def scan_models(*, force: bool = False) -> ScanResult:
    """Scan every catalog folder (and imported files outside them); `force` re-reads unchanged files."""
    try:
        return _scan(force)
    except IntegrityError:
        # Another scan (beat and an on-demand one) added the same files first: go again over its result.
        return _scan(force)


def _scan(force: bool) -> ScanResult:
    started = time.perf_counter()
    result = ScanResult()
    folders = catalog_folders()
    result.folders = len(folders)
    found, projectors = _walk(folders, result)

    entries = list(CatalogModel.objects.all())
    by_path: dict[str, list[CatalogModel]] = {}
    for entry in entries:
        by_path.setdefault(entry.path, []).append(entry)
    for path, path_entries in by_path.items():  # imported entries outside the folders
        if path not in found and os.path.exists(path):
            found[path] = _Found(ModelFileGroup(path, split_parts(path)), folder_id=path_entries[0].folder_id)

    metadata: dict[str, ModelMetadata | str] = {}
    for path, item in found.items():
        if not _stat(item):
            metadata[path] = "cannot read the file"
            continue
        base = next((e for e in by_path.get(path, []) if e.base_id is None), None)
        if force or base is None or not _unchanged(base, item):
            metadata[path] = _read(item.group)
    for path, read in list(metadata.items()):  # projectors not named mmproj are found by their architecture
        if isinstance(read, ModelMetadata) and read.is_projector:
            projectors.append(path)
            del metadata[path]
            found.pop(path)

    with transaction.atomic():
        _apply(found, metadata, projectors, by_path, entries, result)
        now = timezone.now()
        for folder in folders:
            error = result.folder_errors.get(folder.path, "")
            ModelFolder.objects.filter(pk=folder.pk).update(last_scanned_at=now, last_scan_error=error)
    result.seconds = time.perf_counter() - started
    if result.changed:
        catalog_changed("scan", added=result.added, updated=result.updated, missing=result.missing)
    log.info("model scan: %s", result.summary())
    return result


def _walk(folders: list[ModelFolder], result: ScanResult) -> tuple[dict[str, _Found], list[str]]:
    found: dict[str, _Found] = {}
    projectors: list[str] = []
    for folder in folders:
        root = Path(folder.path)
        if not root.is_dir():
            result.folder_errors[folder.path] = "the folder does not exist"
            continue
        contents = find_model_files(root)
        if contents.errors:
            result.folder_errors[folder.path] = "; ".join(contents.errors[:5])
        projectors += contents.projectors
        for group in contents.models:
            found.setdefault(group.path, _Found(group, folder.pk))  # nested folders: the first one wins
    return found, projectors


def _stat(item: _Found) -> bool:
    try:
        stats = [os.stat(part) for part in item.group.parts]
    except OSError:
        return False
    item.size = sum(s.st_size for s in stats)
    item.mtime = datetime.fromtimestamp(max(s.st_mtime for s in stats), tz=UTC)
    return True


def _unchanged(entry: CatalogModel, item: _Found) -> bool:
    return (
        entry.state == CatalogModel.State.AVAILABLE
        and entry.size_bytes == item.size
        and entry.mtime is not None
        and item.mtime is not None
        and abs((entry.mtime - item.mtime).total_seconds()) < 0.001
    )


def _read(group: ModelFileGroup) -> ModelMetadata | str:
    if group.error:
        return group.error
    try:
        return read_metadata([Path(p) for p in group.parts])
    except MetadataError as exc:
        return str(exc)


def _apply(
    found: dict[str, _Found],
    metadata: dict[str, ModelMetadata | str],
    projectors: list[str],
    by_path: dict[str, list[CatalogModel]],
    entries: list[CatalogModel],
    result: ScanResult,
) -> None:
    taken = {e.name for e in entries} | set(ModelAlias.objects.values_list("alias", flat=True))
    by_name = {e.name: e for e in entries}
    original_path = {e.pk: e.path for e in entries}
    new_entries: list[CatalogModel] = []
    for path in sorted(found):
        item = found[path]
        path_entries = by_path.get(path, [])
        if not any(e.base_id is None for e in path_entries):
            moved = _moved_entry(path, by_name, found)
            if moved is not None:
                # A file moved to another folder: its entry, settings and variants follow it.
                path_entries = by_path.pop(moved.path, [moved])
                for entry in path_entries:
                    entry.path = path
                if path not in metadata:
                    metadata[path] = _read(item.group)
        if not path_entries:
            entry = CatalogModel(name=free_name(model_name_for_file(path), taken), path=path)
            taken.add(entry.name)
            _fill(entry, item, metadata[path], projectors)
            new_entries.append(entry)
            continue
        for entry in path_entries:
            before = {f: getattr(entry, f) for f in FILE_FIELDS}
            _fill(entry, item, metadata.get(path), projectors)
            changed = [f for f, value in before.items() if getattr(entry, f) != value]
            if entry.path != original_path[entry.pk]:
                changed.append("path")
            if changed:
                entry.save(update_fields=[*changed, "updated_at"])
                result.updated.append(entry.name)
            else:
                result.unchanged += 1
            if entry.state == CatalogModel.State.ERROR:
                result.errors[entry.name] = entry.error

    for entry in entries:
        if entry.path not in found and entry.state != CatalogModel.State.MISSING:
            entry.state, entry.error = CatalogModel.State.MISSING, ""
            entry.save(update_fields=["state", "error", "updated_at"])
            result.missing.append(entry.name)

    created = CatalogModel.objects.bulk_create(new_entries, batch_size=500)
    RunnerSettings.objects.bulk_create(
        [RunnerSettings(model=entry, runtime=default_runtime(entry.kind)) for entry in created],
        batch_size=500,
    )
    for entry in created:
        result.added.append(entry.name)
        if entry.state == CatalogModel.State.ERROR:
            result.errors[entry.name] = entry.error


def _moved_entry(
    path: str, by_name: dict[str, CatalogModel], found: dict[str, _Found]
) -> CatalogModel | None:
    candidate = by_name.get(model_name_for_file(path))
    if (
        candidate is not None
        and candidate.base_id is None
        and candidate.path not in found
        and not os.path.exists(candidate.path)
    ):
        return candidate
    return None


def free_name(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    number = 2
    while f"{name}-{number}" in taken:
        number += 1
    return f"{name}-{number}"


def read_entry_file(entry: CatalogModel) -> None:
    """Fill one entry from its file (for entries made outside a scan, e.g. by an import)."""
    item = _Found(ModelFileGroup(entry.path, split_parts(entry.path)), folder_id=entry.folder_id)
    if not os.path.exists(entry.path):
        entry.state, entry.error = CatalogModel.State.MISSING, ""
        return
    if not _stat(item):
        entry.state, entry.error = CatalogModel.State.ERROR, "cannot read the file"
        return
    directory = os.path.dirname(entry.path)
    try:
        names = os.listdir(directory)
    except OSError:
        names = []
    projectors = [
        os.path.join(directory, n) for n in names if is_projector_name(n) and n.lower().endswith(".gguf")
    ]
    _fill(entry, item, _read(item.group), projectors)


def refresh_entries(entries: list[CatalogModel]) -> int:
    """Re-read the files of some entries (the admin's "rescan" action); returns how many changed."""
    changed = 0
    with transaction.atomic():
        for entry in entries:
            before = {f: getattr(entry, f) for f in FILE_FIELDS}
            read_entry_file(entry)
            fields = [f for f, value in before.items() if getattr(entry, f) != value]
            if fields:
                entry.save(update_fields=[*fields, "updated_at"])
                changed += 1
    if changed:
        catalog_changed("scan", updated=[e.name for e in entries])
    return changed


def default_runtime(kind: str) -> str:
    if kind == CatalogModel.Kind.WHISPER:
        return RunnerSettings.Runtime.WHISPER_SERVER
    return RunnerSettings.Runtime.LLAMA_SERVER


def _fill(entry: CatalogModel, item: _Found, read: ModelMetadata | str | None, projectors: list[str]) -> None:
    """Copy what the file says onto the entry; `read` None means the file is unchanged since last time."""
    entry.size_bytes, entry.mtime = item.size, item.mtime
    if item.folder_id is not None:
        entry.folder_id = item.folder_id
    if isinstance(read, str):
        entry.state, entry.error = CatalogModel.State.ERROR, read
        return
    if isinstance(read, ModelMetadata):
        apply_metadata(entry, read)
    entry.state, entry.error = CatalogModel.State.AVAILABLE, ""
    entry.mmproj_path = pair_projector(entry.path, projectors) if entry.kind == CatalogModel.Kind.LLM else ""
    entry.cap_vision = bool(entry.mmproj_path)


def apply_metadata(entry: CatalogModel, metadata: ModelMetadata) -> None:
    entry.kind = metadata.kind
    entry.architecture = metadata.architecture
    entry.display_name = metadata.display_name
    entry.size_label = metadata.size_label
    entry.parameter_count = metadata.parameter_count
    entry.file_type = metadata.file_type
    entry.quantization = metadata.quantization
    entry.context_length = metadata.context_length
    entry.embedding_length = metadata.embedding_length
    entry.block_count = metadata.block_count
    entry.head_count = metadata.head_count
    entry.head_count_kv = metadata.head_count_kv
    entry.chat_template = metadata.chat_template
    entry.metadata = metadata.extra
    entry.split_count = metadata.split_count
    entry.cap_completion = metadata.cap_completion
    entry.cap_embedding = metadata.cap_embedding
    entry.cap_rerank = metadata.cap_rerank
    entry.cap_insert = metadata.cap_insert
    entry.cap_thinking = metadata.cap_thinking
    entry.cap_tools = metadata.cap_tools if entry.tools_override is None else entry.tools_override
