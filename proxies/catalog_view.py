"""The faces' read-only view of the catalog: names, aliases and what lists need, kept in memory.

Refreshed at most every few seconds, and on the next request after this process changed the
catalog (its `catalog.changed`, heard locally) or after a name it does not know, so resolving a
request's `model` costs no query yet never answers from before a write whose response went out.
"""

from __future__ import annotations

from dataclasses import dataclass

from asgiref.sync import sync_to_async

from llamaproxy.events import listen_locally
from llamaproxy.freshness import Freshness
from models_catalog.lookup import resolve_name

REFRESH_SECONDS = 3.0


@dataclass(frozen=True)
class ModelView:
    name: str
    kind: str
    enabled: bool
    state: str
    path: str
    size_bytes: int
    mtime: float | None
    created: int
    architecture: str
    display_name: str
    size_label: str
    parameter_count: int | None
    quantization: str
    file_type: int | None
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    chat_template: str
    metadata: dict
    capabilities: tuple[str, ...]
    digest: str
    aliases: tuple[str, ...]
    parameters: dict
    sampling: dict
    error: str = ""  # why the file could not be read (state "error")
    extra_args: tuple[str, ...] = ()


class CatalogView:
    def __init__(self) -> None:
        self.models: dict[str, ModelView] = {}
        self.aliases: dict[str, str] = {}
        self.freshness = Freshness(REFRESH_SECONDS)

    def invalidate(self) -> None:
        """Thread-safe: the next resolve or list reads the catalog again."""
        self.freshness.changed()

    def _load(self) -> tuple[dict[str, ModelView], dict[str, str]]:
        from models_catalog.models import CatalogModel, ModelAlias

        models: dict[str, ModelView] = {}
        alias_rows = list(ModelAlias.objects.values_list("alias", "model__name"))
        aliases_of: dict[str, list[str]] = {}
        for alias, name in alias_rows:
            aliases_of.setdefault(name, []).append(alias)
        for row in CatalogModel.objects.select_related("settings").all():
            model_settings = getattr(row, "settings", None)
            models[row.name] = ModelView(
                name=row.name,
                kind=row.kind,
                enabled=row.enabled,
                state=row.state,
                path=row.path,
                size_bytes=row.size_bytes,
                mtime=row.mtime.timestamp() if row.mtime else None,
                created=int(row.created_at.timestamp()),
                architecture=row.architecture,
                display_name=row.display_name,
                size_label=row.size_label,
                parameter_count=row.parameter_count,
                quantization=row.quantization,
                file_type=row.file_type,
                context_length=row.context_length,
                embedding_length=row.embedding_length,
                block_count=row.block_count,
                head_count=row.head_count,
                head_count_kv=row.head_count_kv,
                chat_template=row.chat_template,
                metadata=row.metadata or {},
                capabilities=tuple(row.capabilities),
                digest=row.digest,
                aliases=tuple(sorted(aliases_of.get(row.name, []))),
                parameters=dict(model_settings.parameters) if model_settings else {},
                sampling=dict(model_settings.sampling) if model_settings else {},
                error=row.error,
                extra_args=tuple(model_settings.extra_args or ()) if model_settings else (),
            )
        return models, dict(alias_rows)

    async def refresh(self, force: bool = False) -> None:
        if not (force or self.freshness.stale()):
            return
        begun = self.freshness.begin()
        models, aliases = await sync_to_async(self._load, thread_sensitive=False)()
        if self.freshness.accept(begun):  # (not when a read begun later landed first)
            self.models, self.aliases = models, aliases

    async def resolve(self, requested: str) -> ModelView | None:
        await self.refresh()
        name = resolve_name(requested, self.models, self.aliases)
        if name is None:
            # A model added a moment ago (scan, import) should not wait for the refresh.
            await self.refresh(force=True)
            name = resolve_name(requested, self.models, self.aliases)
        return self.models.get(name) if name else None

    async def listed(self) -> list[ModelView]:
        await self.refresh()
        return [m for m in self.models.values() if m.enabled and m.state == "available"]


catalog_view = CatalogView()


def _heard(event: dict) -> None:
    if event.get("type") == "catalog.changed":
        catalog_view.invalidate()


listen_locally(_heard)


def default_model_name() -> str | None:
    from llamaproxy.runtime import current_limits  # the dashboard's or an import's, else the env's

    return current_limits().default_model or None
