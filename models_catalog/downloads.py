"""Downloads of models, run as jobs in the gateway's event loop.

A job fetches the files of one plan into `LLAMAPROXY_DOWNLOADS_DIR` and then makes the catalog
entry for them (source `download`). A plan comes from Hugging Face (models_catalog/hub.py: one
choice of a repository, into `huggingface/<owner>/<repo>/`, the entry named like a scanned file
with the alias Ollama's clients use, `hf.co/<owner>/<repo>:<quantization>`) or from Ollama's
registry (models_catalog/registry.py: a manifest's GGUF layers, into
`ollama/<registry>/<namespace>/<model>/<tag>/`, the entry named as Ollama names the model, with
the settings its layers hold). A projector, downloaded beside its model, pairs with it as in a
model folder; split models come whole; a file whose sha256 is here already is hard-linked.

Every face shares the jobs: `ollama pull` follows one and streams its progress (a second pull of
the same files follows the same job), LM Studio's download API and the dashboard start jobs that
run on their own and are asked for their state. A job that nobody follows any more and that a
pull started stops (what it fetched stays in `.part` files and the next pull goes on from there);
a job cancelled by hand drops them. Jobs live in the gateway's memory: a restart forgets them and
leaves the `.part` files to the next download of those files.

Deleting the last entry of a downloaded file deletes the file, and its folder's projector and
partial files once no entry uses that folder (see `prune_download`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction

from models_catalog import hub
from models_catalog.errors import CatalogError
from models_catalog.hub import Choice, HubError, HubRef

log = logging.getLogger(__name__)

KEEP_FINISHED = 50  # finished jobs kept for their status
SPEED_WINDOW = 5.0  # seconds of progress the speed is measured over


def downloads_dir() -> Path:
    return Path(settings.LLAMAPROXY_DOWNLOADS_DIR)


def repo_dir(repo: str) -> Path:
    return downloads_dir() / "huggingface" / repo


def local_path(repo: str, file: hub.HubFile) -> Path:
    return repo_dir(repo) / file.path


def is_download(path: str | Path) -> bool:
    """Whether `path` is a file this module downloaded (below the downloads folder)."""
    try:
        Path(path).resolve().relative_to(downloads_dir().resolve())
    except ValueError:
        return False
    return True


# --- what is downloaded ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """One file to fetch: where from, what it is (size and sha256 to check), where it goes."""

    url: str
    file: hub.HubFile
    target: Path


@dataclass(frozen=True)
class Plan:
    """What one download brings: the model's file(s) and its projector, and how the catalog
    entry is made of them. Made from a Hugging Face choice (`hub_plan`) or, for the Ollama face,
    an Ollama registry manifest (models_catalog/registry.py)."""

    source: str  # "huggingface" or "ollama"
    repo: str  # shown: "acme/Tiny-GGUF", "library/llama3.2"
    label: str  # shown: the quantization or the tag
    alias: str  # the name clients asked for and use: `hf.co/<repo>:<tag>`, `llama3.2:1b`
    files: tuple[Remote, ...]  # the model's parts first, then its projector
    refused: Callable[[httpx.Response], HubError] = field(compare=False)  # for `hub.fetch`
    name: str = ""  # the entry's own name ("" = the file's, as a scan names it)
    parameters: dict[str, Any] = field(default_factory=dict, compare=False)  # runner parameters
    sampling: dict[str, Any] = field(default_factory=dict, compare=False)  # sampling defaults

    @property
    def model_path(self) -> Path:
        return self.files[0].target


def _client(token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        headers=hub.hub_headers(token),
        follow_redirects=True,
        timeout=httpx.Timeout(30.0, connect=10.0),
    )


async def repository_choices(repo: str) -> list[Choice]:
    async with _client(settings.LLAMAPROXY_HF_TOKEN) as client:
        return hub.choices(await hub.list_files(client, settings.LLAMAPROXY_HF_ENDPOINT, repo))


def hub_plan(ref: HubRef, choice: Choice) -> Plan:
    endpoint = settings.LLAMAPROXY_HF_ENDPOINT
    return Plan(
        source="huggingface",
        repo=ref.repo,
        label=choice.label,
        alias=ref.name,
        files=tuple(
            Remote(hub.file_url(endpoint, ref.repo, f.path), f, local_path(ref.repo, f)) for f in choice.files
        ),
        refused=hub.refusal_of(ref.repo),
    )


async def plan(ref: HubRef) -> Plan:
    """The files `ref` names, asked of the hub (HubError when the repository or the
    quantization is not there)."""
    options = await repository_choices(ref.repo)
    return hub_plan(ref, hub.select(options, ref))


def downloaded_entry(plan: Plan) -> str | None:
    """The catalog name of the entry that has the plan's files already, if one does."""
    from models_catalog.models import CatalogModel

    path = str(plan.model_path)
    entry = CatalogModel.objects.filter(path=path, base__isnull=True).first()
    return entry.name if entry is not None and os.path.exists(path) else None


async def begin(ref: HubRef, *, name: str | None = None, detached: bool = True) -> Job | str:
    """What a pull or a download request for a Hugging Face model gets: the name of the entry
    that has what `ref` names already (its alias added if it had not), else the job that
    downloads it. HubError when the hub has no such model; CatalogError when `name` is taken."""
    existing = await sync_to_async(aliased_entry, thread_sensitive=False)(ref.name)
    if existing is not None:
        return existing
    if name:
        name = await sync_to_async(check_free_name, thread_sensitive=False)(name)
    return await begin_plan(await plan(ref), name=name, detached=detached)


async def registry_manifest(ref: Any) -> tuple[Any, dict[str, bytes]]:
    """The manifest of the Ollama registry model `ref` (models_catalog/registry.py) and its small
    layers' contents (params, system, messages); HubError when the registry has no such model."""
    from models_catalog import registry

    async with _client() as client:
        manifest = await registry.fetch_manifest(client, settings.LLAMAPROXY_OLLAMA_REGISTRY, ref)
        contents = {
            kind: await registry.fetch_small(client, settings.LLAMAPROXY_OLLAMA_REGISTRY, ref, layer)
            for kind, layer in manifest.small.items()
        }
    return manifest, contents


def registry_plan(ref: Any, manifest: Any, parameters: dict[str, Any], sampling: dict[str, Any]) -> Plan:
    """The download of a registry model: its GGUF and projector layers into
    `ollama/<registry host>/<namespace>/<model>/<tag>/`, an entry named as Ollama names it
    (`/` as `-`, with Ollama's name as an alias) and the settings its layers hold."""
    from urllib.parse import urlparse

    from models_catalog import registry

    base = ref.base_url(settings.LLAMAPROXY_OLLAMA_REGISTRY)
    host = ref.host or urlparse(settings.LLAMAPROXY_OLLAMA_REGISTRY).netloc.replace(":", "_")
    folder = downloads_dir() / "ollama" / host / ref.namespace / ref.model / ref.tag
    layers = [(manifest.model, f"{ref.model}-{ref.tag}.gguf")]
    if manifest.projector is not None:
        layers.append((manifest.projector, f"mmproj-{ref.model}-{ref.tag}.gguf"))
    files = tuple(
        Remote(
            f"{base}/blobs/{layer.digest}",
            hub.HubFile(file_name, layer.size, layer.sha256),
            folder / file_name,
        )
        for layer, file_name in layers
    )
    return Plan(
        source="ollama",
        repo=f"{ref.namespace}/{ref.model}",
        label=ref.tag,
        alias=ref.name,
        files=files,
        name=ref.entry_name,
        parameters=parameters,
        sampling=sampling,
        refused=registry.refusal_of(ref.name),
    )


async def begin_plan(found: Plan, *, name: str | None = None, detached: bool = True) -> Job | str:
    """The job that downloads `found`, or the name of the entry that has its files already."""
    if await sync_to_async(downloaded_entry, thread_sensitive=False)(found) is not None:
        return await sync_to_async(register, thread_sensitive=False)(found, name)
    return start(found, name=name, detached=detached)


def check_free_name(name: str) -> str:
    """`name` when no model has it (as its name or an alias); CatalogError 409 otherwise."""
    from models_catalog import services

    name = name.strip()
    if not name or len(name) > 200:
        raise CatalogError("a model name must have 1 to 200 characters", field="name")
    if services.resolve_model(name) is not None:
        raise CatalogError(f"{name!r} is already the name of a model", field="name", status=409)
    return name


def aliased_entry(name: str) -> str | None:
    """The entry whose name or alias is `name` (any case, not a near match), while its file is
    there: what a pull of that name finds already done."""
    from models_catalog.models import CatalogModel, ModelAlias

    entry = CatalogModel.objects.filter(name__iexact=name).first()
    if entry is None:
        alias = ModelAlias.objects.filter(alias__iexact=name).select_related("model").first()
        entry = alias.model if alias is not None else None
    if entry is None or not os.path.exists(entry.path):
        return None
    return entry.name


# --- jobs -------------------------------------------------------------------------------------------


@dataclass
class FileProgress:
    remote: Remote
    done: int = 0

    @property
    def file(self) -> hub.HubFile:
        return self.remote.file


@dataclass
class Job:
    id: str
    plan: Plan
    name: str | None  # the entry's name, when one was asked for
    detached: bool  # runs on whether or not anyone follows it
    files: list[FileProgress]
    status: str = "downloading"  # completed, failed, cancelled
    error: str = ""
    error_status: int = 0
    model: str = ""  # the entry made
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    completed_at: datetime | None = None
    followers: int = 0
    task: asyncio.Task[None] | None = None
    _samples: list[tuple[float, int]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def total(self) -> int:
        return sum(f.file.size for f in self.files)

    @property
    def done(self) -> int:
        return sum(f.done for f in self.files)

    @property
    def finished(self) -> bool:
        return self.status != "downloading"

    def progressed(self, index: int, done: int) -> None:
        self.files[index].done = done
        now = time.monotonic()
        self._samples = [s for s in self._samples if now - s[0] <= SPEED_WINDOW]
        self._samples.append((now, self.done))
        self.notify()

    def notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def speed(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "job_id": self.id,
            "status": self.status,
            "source": self.plan.source,
            "repo": self.plan.repo,
            "quantization": self.plan.label,
            "alias": self.plan.alias,
            "model": self.model or None,
            "files": [{"path": f.file.path, "size": f.file.size, "downloaded": f.done} for f in self.files],
            "total_size_bytes": self.total,
            "downloaded_bytes": self.done,
            "started_at": _iso(self.started_at),
        }
        if self.status == "downloading":
            speed = self.speed()
            data["bytes_per_second"] = round(speed, 1)
            if speed > 0:
                eta = datetime.now(UTC) + timedelta(seconds=(self.total - self.done) / speed)
                data["estimated_completion"] = _iso(eta)
        if self.completed_at is not None:
            data["completed_at"] = _iso(self.completed_at)
        if self.error:
            data["error"] = self.error
        return data


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


JOBS: dict[str, Job] = {}


def get_job(job_id: str) -> Job | None:
    return JOBS.get(job_id)


def jobs() -> list[Job]:
    return sorted(JOBS.values(), key=lambda j: j.started_at, reverse=True)


def start(plan: Plan, *, name: str | None = None, detached: bool = True) -> Job:
    """The job that downloads the plan's files: a running one for the same files, else a new
    one. Call from the gateway's event loop."""
    for job in JOBS.values():
        if not job.finished and job.plan.model_path == plan.model_path:
            job.detached = job.detached or detached
            return job
    job = Job(
        id=f"job_{secrets.token_hex(5)}",
        plan=plan,
        name=name,
        detached=detached,
        files=[FileProgress(r) for r in plan.files],
    )
    JOBS[job.id] = job
    job.task = asyncio.get_running_loop().create_task(_run(job), name=f"download {job.id}")
    _forget_old()
    return job


def _forget_old() -> None:
    finished = [j for j in jobs() if j.finished]
    for job in finished[KEEP_FINISHED:]:
        JOBS.pop(job.id, None)


def cancel(job: Job, *, discard: bool) -> None:
    """Stop a running job; with `discard`, what it fetched so far goes too."""
    if job.finished or job.task is None:
        return
    job.task.cancel()
    job.status, job.error = "cancelled", "cancelled"
    job.completed_at = datetime.now(UTC)
    if discard:
        for progress in job.files:
            target = progress.remote.target
            target.with_name(target.name + ".part").unlink(missing_ok=True)
    job.notify()


async def _run(job: Job) -> None:
    try:
        targets = [p.remote.target for p in job.files]
        need = sum(p.file.size for p in job.files if not p.remote.target.exists())
        need -= sum(_part_size(t) for t in targets)
        folder = downloads_dir()
        folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(folder).free
        if need > free:
            raise HubError(
                f"not enough disk space in {folder}: {need} more bytes needed, {free} free", status=507
            )
        token = settings.LLAMAPROXY_HF_TOKEN if job.plan.source == "huggingface" else None
        async with _client(token) as client:
            for index, progress in enumerate(job.files):
                target = progress.remote.target
                if not target.exists():
                    await sync_to_async(_link_known, thread_sensitive=False)(progress.file, target)
                if target.exists() and target.stat().st_size == progress.file.size:
                    job.progressed(index, progress.file.size)
                    continue
                await hub.fetch(
                    client,
                    progress.remote.url,
                    progress.file,
                    target,
                    lambda done, index=index: job.progressed(index, done),
                    job.plan.refused,
                )
        job.model = await sync_to_async(register, thread_sensitive=False)(job.plan, job.name)
        job.status = "completed"
    except asyncio.CancelledError:
        job.status, job.error = "cancelled", job.error or "cancelled"
        raise
    except (HubError, CatalogError) as exc:
        job.status, job.error, job.error_status = "failed", exc.message, exc.status
    except Exception as exc:
        log.exception("download %s failed", job.id)
        job.status, job.error, job.error_status = "failed", f"{type(exc).__name__}: {exc}", 500
    finally:
        job.completed_at = job.completed_at or datetime.now(UTC)
        job.notify()


def _link_known(file: hub.HubFile, target: Path) -> None:
    """A file with this sha256 that is here already (a blob, a model whose digest is known: the
    same weights under another tag) becomes the target by a hard link, so it is not fetched
    again; where linking is not possible it is fetched."""
    from models_catalog.blobs import find_blob

    if not file.sha256:
        return
    known = find_blob(f"sha256:{file.sha256}")
    if known is None or known.stat().st_size != file.size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.link(known, target)


def _part_size(target: Path) -> int:
    try:
        return target.with_name(target.name + ".part").stat().st_size
    except OSError:
        return 0


@contextlib.asynccontextmanager
async def following(job: Job) -> AsyncIterator[Job]:
    """Follow a job (a pull streaming its progress). When the last follower of a job that a pull
    started goes before it ends, the job stops; its `.part` files stay for the next pull."""
    job.followers += 1
    try:
        yield job
    finally:
        job.followers -= 1
        if job.followers == 0 and not job.detached and not job.finished:
            cancel(job, discard=False)


# --- the catalog side ---------------------------------------------------------------------------------


def register(plan: Plan, name: str | None = None) -> str:
    """Make the catalog entry for the plan's downloaded files (or find the one that has them)
    and give it the plan's alias when that is not its name; returns its name."""
    from models_catalog import services
    from models_catalog.discovery import free_name, read_entry_file
    from models_catalog.events import catalog_changed
    from models_catalog.model_files import model_name_for_file
    from models_catalog.models import CatalogModel, ModelAlias

    first = plan.files[0]
    path = str(first.target)
    entry = CatalogModel.objects.filter(path=path, base__isnull=True).first()
    if entry is None:
        taken = set(CatalogModel.objects.values_list("name", flat=True))
        taken |= set(ModelAlias.objects.values_list("alias", flat=True))
        name = check_free_name(name) if name else None
        entry = CatalogModel(
            name=name or free_name(plan.name or model_name_for_file(path), taken),
            path=path,
            source=CatalogModel.Source.DOWNLOAD,
        )
        read_entry_file(entry)
        if entry.state != CatalogModel.State.AVAILABLE:
            raise HubError(
                f"{first.file.path} is not a model llamaproxy can read: {entry.error or entry.state}", 502
            )
        if first.file.sha256 and entry.split_count == 1:
            entry.digest, entry.digest_mtime = f"sha256:{first.file.sha256}", os.stat(path).st_mtime
        settings_ = services.new_settings(None, plan.parameters, plan.sampling)
        with transaction.atomic():
            entry.save()
            settings_.model = entry
            settings_.save()
    if plan.alias.lower() != entry.name.lower():
        try:
            services.check_alias_free(entry, plan.alias)
        except CatalogError:
            pass  # the name is someone else's: the entry is reached by its own name
        else:
            ModelAlias.objects.get_or_create(alias=plan.alias, model=entry)
    catalog_changed("download", names=[entry.name])
    return entry.name


def prune_download(path: str) -> bool:
    """Delete a downloaded model's files once no entry uses them; then its folder's projector and
    partial files once no entry has a file there, and the folders left empty."""
    from models_catalog.model_files import split_parts
    from models_catalog.models import CatalogModel

    if not path or not is_download(path) or CatalogModel.objects.filter(path=path).exists():
        return False
    for part in split_parts(path):
        Path(part).unlink(missing_ok=True)
    folder = Path(path).parent
    if not CatalogModel.objects.filter(path__startswith=f"{folder}{os.sep}").exists():
        for leftover in folder.iterdir() if folder.is_dir() else ():
            if leftover.is_file() and (leftover.name.endswith(".part") or "mmproj" in leftover.name.lower()):
                leftover.unlink(missing_ok=True)
    root = downloads_dir().resolve()
    with contextlib.suppress(OSError):
        while folder.resolve() != root and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    return True
