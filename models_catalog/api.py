"""Management API routes of the catalog (mounted under /api/manage/ by llamaproxy.manage_api).

Views stay thin: they call the services and let CatalogError become a 4xx naming the field
(the handler is registered on the API in `register_error_handler`, from the app's ready()).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Field, Query, Router, Schema
from ninja.responses import Status

from llamaproxy.http_errors import MAX_DB_INT
from models_catalog import backup, discovery, importer, services
from models_catalog.errors import CatalogError
from models_catalog.models import CatalogModel, ModelFolder
from models_catalog.schemas import (
    NULLABLE_PATCH_FIELDS,
    AliasIn,
    BackupOut,
    DeletedOut,
    DigestOut,
    FolderIn,
    FolderOut,
    ImportIn,
    ImportOut,
    ModelDetailOut,
    ModelOut,
    ModelPatch,
    RestoreOut,
    ScanOut,
)

router = Router(tags=["catalog"])

CAPABILITIES = ("completion", "tools", "vision", "embedding", "rerank", "insert", "thinking")


class ModelFilters(Schema):
    q: str | None = None
    architecture: str | None = None
    quantization: str | None = None
    capability: str | None = None
    state: str | None = None
    kind: str | None = None
    enabled: bool | None = None
    folder: str | None = None  # a folder id or path


def _models() -> QuerySet[CatalogModel]:
    return CatalogModel.objects.select_related("settings", "base", "folder").prefetch_related("aliases")


@router.get("models", response=list[ModelOut], summary="List catalog entries (filterable)")
def list_models(request: HttpRequest, filters: Query[ModelFilters]) -> Any:
    models = _models()
    if filters.q:
        models = models.filter(
            Q(name__icontains=filters.q)
            | Q(display_name__icontains=filters.q)
            | Q(path__icontains=filters.q)
            | Q(aliases__alias__icontains=filters.q)
        ).distinct()
    if filters.capability:
        if filters.capability not in CAPABILITIES:
            raise CatalogError(f"must be one of {', '.join(CAPABILITIES)}", field="capability")
        models = models.filter(**{f"cap_{filters.capability}": True})
    if filters.state:
        if filters.state not in CatalogModel.State.values:
            raise CatalogError(f"must be one of {', '.join(CatalogModel.State.values)}", field="state")
        models = models.filter(state=filters.state)
    if filters.kind:
        models = models.filter(kind=filters.kind)
    if filters.architecture:
        models = models.filter(architecture__iexact=filters.architecture)
    if filters.quantization:
        models = models.filter(quantization__iexact=filters.quantization)
    if filters.enabled is not None:
        models = models.filter(enabled=filters.enabled)
    if filters.folder:
        by = (
            {"folder_id": int(filters.folder)}
            if filters.folder.isdigit() and int(filters.folder) <= MAX_DB_INT
            else {"folder__path": filters.folder}
        )
        models = models.filter(**by)
    return list(models)


@router.get("models/{name}", response=ModelDetailOut, summary="One catalog entry (by name or alias)")
def get_model(request: HttpRequest, name: str) -> Any:
    return _models().get(pk=services.get_model(name).pk)


@router.patch(
    "models/{name}", response=ModelDetailOut, summary="Change an entry's state, aliases or runner settings"
)
def update_model(request: HttpRequest, name: str, payload: ModelPatch) -> Any:
    sent = payload.model_dump(exclude_unset=True)
    for field, value in sent.items():
        if value is None and field not in NULLABLE_PATCH_FIELDS:
            raise CatalogError("cannot be null", field=field)
    model = services.update_model(name, sent)
    return _models().get(pk=model.pk)


@router.post("models/{name}/aliases", response={201: ModelDetailOut}, summary="Add an alias")
def add_alias(request: HttpRequest, name: str, payload: AliasIn) -> Any:
    model = services.add_alias(name, payload.alias)
    return Status(201, _models().get(pk=model.pk))


@router.delete("models/{name}/aliases/{alias}", response=ModelDetailOut, summary="Remove an alias")
def remove_alias(request: HttpRequest, name: str, alias: str) -> Any:
    model = services.remove_alias(name, alias)
    return _models().get(pk=model.pk)


@router.delete(
    "models/{name}", response=DeletedOut, summary="Remove a catalog entry (with delete_files, its file too)"
)
async def delete_model(request: HttpRequest, name: str, delete_files: bool = False) -> Any:
    """The entry goes (its runner stopped first); the file stays, unless llamaproxy made it (a
    blob, a download) or `delete_files` asks for it to be deleted."""
    from runners import scheduler
    from runners.errors import SchedulerError

    model = await sync_to_async(services.get_model, thread_sensitive=True)(name)
    runner = scheduler.get_scheduler().actors.get(model.name)
    if runner is not None and runner.state not in (scheduler.STOPPED, scheduler.FAILED):
        with contextlib.suppress(SchedulerError):
            await scheduler.unload(model.name)
    if delete_files:
        deleted, files = await sync_to_async(services.delete_model_files, thread_sensitive=True)(model.name)
        return {"deleted": deleted, "files": files}
    return {"deleted": await sync_to_async(services.delete_model, thread_sensitive=True)(model.name)}


@router.post(
    "models/{name}/digest", response=DigestOut, summary="Compute (or return) the sha256 digest of the file"
)
def model_digest(request: HttpRequest, name: str) -> Any:
    model = services.get_model(name)
    return {"name": model.name, "digest": services.ensure_digest(model)}


class QuantizeIn(Schema):
    name: str = Field(description="the new model's name")
    type: str = Field(description="Q4_K_M, Q8_0, ... (models_catalog/quantize.py TYPES)")


@router.post(
    "models/{name}/quantize",
    summary="Quantize an F32/F16/BF16 entry's file into a new entry (NDJSON progress lines)",
)
async def quantize_model(request: HttpRequest, name: str, payload: QuantizeIn) -> HttpResponse:
    """Checked first (400/404 naming the field); then streamed: `{"status": "quantizing", from,
    type, completed, total}` per tensor, and `{"status": "success", model, digest}` or
    `{"error"}` at the end. The new entry starts from this one's settings."""
    from models_catalog.quantize import Made, QuantizeError, check_source, quantize_type, quantized_model
    from runners import scheduler
    from runners.errors import SchedulerError

    source = await sync_to_async(services.get_model, thread_sensitive=False)(name)
    try:
        wanted = quantize_type(payload.type)
        source_type = check_source(source.name, source.file_type)
    except QuantizeError as exc:
        raise CatalogError(exc.message.removeprefix("quantize: "), field="type") from None
    new_name = await sync_to_async(services.check_creatable_name, thread_sensitive=False)(payload.name)
    making = quantized_model(
        new_name, Path(source.path), wanted, parameters={}, sampling={}, settings_from=source.name
    )

    async def lines() -> AsyncIterator[bytes]:
        step: dict[str, Any] = {"status": "quantizing", "from": source_type, "type": wanted}
        yield json.dumps({**step, "completed": 0, "total": 0}).encode() + b"\n"
        try:
            async with aclosing(making) as running:
                async for event in running:
                    if isinstance(event, Made):
                        if event.replaced:  # its runner ran the file that was replaced
                            with contextlib.suppress(SchedulerError):
                                await scheduler.unload(new_name)
                        step = {"status": "success", "model": new_name, "digest": event.digest}
                    else:
                        step = {**step, "completed": event.done, "total": event.total}
                    yield json.dumps(step).encode() + b"\n"
        except (QuantizeError, CatalogError) as exc:
            yield json.dumps({"error": exc.message}).encode() + b"\n"

    return StreamingHttpResponse(lines(), content_type="application/x-ndjson")


# --- downloads from Hugging Face (models_catalog/downloads.py) -----------------------------------------


def _hub_ref(text: str, quantization: str | None = None, field: str = "model") -> Any:
    from models_catalog.hub import parse_reference

    ref = parse_reference(text, bare=True, quantization=quantization)
    if ref is None:
        raise CatalogError(
            "not a Hugging Face model: give <owner>/<repo>, hf.co/<owner>/<repo>[:quantization] "
            "or https://huggingface.co/<owner>/<repo>",
            field=field,
        )
    return ref


async def _from_hub(call: Any) -> Any:
    from models_catalog.hub import HubError

    try:
        return await call
    except HubError as exc:
        raise CatalogError(exc.message, field=exc.field, status=exc.status) from None


@router.get("hub/files", summary="The GGUF models a Hugging Face repository offers (by quantization)")
async def hub_files(request: HttpRequest, repo: str) -> Any:
    """`{repo, default, choices: [{label, size, files, projector, downloaded}]}`; `downloaded`
    is the catalog name of the entry that has that choice already."""
    from models_catalog import downloads, hub

    ref = _hub_ref(repo, field="repo")
    options = await _from_hub(downloads.repository_choices(ref.repo))
    if not options:
        raise CatalogError(f"{ref.repo} has no GGUF model files", field="repo", status=404)

    def listed() -> list[dict[str, Any]]:
        return [
            {**c.as_dict(), "downloaded": downloads.downloaded_entry(downloads.hub_plan(ref, c))}
            for c in options
        ]

    return {
        "repo": ref.repo,
        "default": hub.default_choice(options).label,
        "choices": await sync_to_async(listed, thread_sensitive=False)(),
    }


class DownloadIn(Schema):
    model: str = Field(description="<owner>/<repo>, hf.co/<owner>/<repo>[:quantization] or a link")
    quantization: str | None = Field(default=None, description="Q4_K_M, Q8_0, ... or a file name")
    name: str | None = Field(default=None, description="the new entry's name (default: the file's)")


@router.get("downloads", summary="Download jobs, newest first")
async def list_downloads(request: HttpRequest) -> Any:
    from models_catalog import downloads

    return [job.as_dict() for job in downloads.jobs()]


@router.post(
    "downloads",
    response={200: dict[str, Any], 202: dict[str, Any]},
    summary="Download a model from Hugging Face (a job; 202)",
)
async def start_download(request: HttpRequest, payload: DownloadIn) -> Any:
    """202 with the job (poll `downloads/{job_id}`); 200 `{status: "already_downloaded", model}`
    when the catalog has it. The entry gets the alias `hf.co/<repo>[:quantization]`."""
    from models_catalog import downloads

    ref = _hub_ref(payload.model, payload.quantization)
    name = (payload.name or "").strip() or None
    started = await _from_hub(downloads.begin(ref, name=name, detached=True))
    if isinstance(started, str):
        return {"status": "already_downloaded", "model": started}
    return Status(202, started.as_dict())


def _job(job_id: str) -> Any:
    from models_catalog import downloads

    job = downloads.get_job(job_id)
    if job is None:
        raise CatalogError(f"no download job {job_id!r}", field="job_id", status=404)
    return job


@router.get("downloads/{job_id}", summary="One download job")
async def get_download(request: HttpRequest, job_id: str) -> Any:
    return _job(job_id).as_dict()


@router.delete("downloads/{job_id}", summary="Cancel a download (what it fetched is dropped)")
async def cancel_download(request: HttpRequest, job_id: str) -> Any:
    from models_catalog import downloads

    job = _job(job_id)
    downloads.cancel(job, discard=True)
    return job.as_dict()


@router.post("scan", response=ScanOut, summary="Scan the model folders now")
def scan(request: HttpRequest, force: bool = False) -> Any:
    return discovery.scan_models(force=force).as_dict()


@router.get("folders", response=list[FolderOut], summary="The folders a scan covers")
def list_folders(request: HttpRequest) -> Any:
    discovery.catalog_folders()  # rows for LLAMAPROXY_MODELS_DIRS
    return list(ModelFolder.objects.all())


@router.post(
    "folders", response={201: FolderOut}, summary="Add a model folder (scanned from the next scan on)"
)
def add_folder(request: HttpRequest, payload: FolderIn) -> Any:
    return Status(201, services.add_folder(payload.path))


@router.delete(
    "folders/{folder_id}", response={204: None}, summary="Stop scanning a folder (its entries stay)"
)
def remove_folder(request: HttpRequest, folder_id: int) -> Any:
    services.remove_folder(folder_id)
    return Status(204, None)


@router.get("export", summary="The catalog and every setting, as one JSON document (the backup format)")
def export(request: HttpRequest) -> dict[str, Any]:
    return backup.export_catalog()


@router.post("import", response=ImportOut, summary="Import seed / llama-runner config documents (atomic)")
def import_configs(request: HttpRequest, payload: ImportIn) -> Any:
    configs = [importer.ConfigFile(f"configs.{i}", data) for i, data in enumerate(payload.configs)]
    try:
        return importer.import_configs(configs, dry_run=payload.dry_run).as_dict()
    except importer.ConfigImportError as exc:
        field = ".".join(part for part in (exc.source, exc.field) if part)
        raise CatalogError(str(exc), field=field) from None


@router.get("backups", response=list[BackupOut], summary="Backups, newest first")
def list_backups(request: HttpRequest) -> Any:
    return [_backup_out(path.name, path.stat().st_size) for path in backup.list_backups()]


@router.post("backups", response={201: BackupOut}, summary="Write a backup now")
def create_backup(request: HttpRequest) -> Any:
    path = backup.write_backup(reason="manual")
    return Status(201, _backup_out(path.name, path.stat().st_size))


@router.get("backups/{name}", summary="Download a backup", response={200: dict[str, Any]})
def download_backup(request: HttpRequest, name: str) -> HttpResponse:
    path = backup.backup_path(name)
    response = HttpResponse(path.read_bytes(), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{path.name}"'
    return response


@router.post("backups/{name}/restore", response=RestoreOut, summary="Restore the catalog from a backup")
def restore_backup(request: HttpRequest, name: str) -> Any:
    return backup.restore_catalog(backup.load_document(backup.backup_path(name)))


_BACKUP_PARTS = re.compile(r"^catalog-(\d{8}T\d{6}\.\d{6})Z-(.+)\.json$")


def _backup_out(name: str, size: int) -> dict[str, Any]:
    match = _BACKUP_PARTS.match(name)
    stamp, reason = (match[1], match[2]) if match else ("19700101T000000.000000", "")
    created = datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
    return {"name": name, "size": size, "created_at": created, "reason": reason}


def register_error_handler() -> None:
    """Make CatalogError a 4xx in the manage API's error shape (called from the app's ready())."""
    from llamaproxy.manage_api import api, error_response

    def handle(request: HttpRequest, exc: CatalogError) -> HttpResponse:
        return error_response(request, exc.status, str(exc), exc.field)

    api.add_exception_handler(CatalogError, handle)
