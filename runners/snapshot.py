"""An in-memory view of the catalog for the gateway: what the scheduler and the faces need per
model, read once and refreshed on `catalog.changed`, so the hot path never touches the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from models_catalog.lookup import resolve_name
from runners.memory import ModelShape, estimate_memory_bytes


@dataclass(frozen=True)
class CatalogEntry:
    id: int
    name: str
    kind: str = "llm"
    enabled: bool = True
    state: str = "available"  # the file's: available, missing or error
    error: str = ""
    path: str = ""
    context_length: int | None = None
    size_bytes: int = 0
    memory_estimate: int = 0
    parameters: dict[str, Any] = field(default_factory=dict)
    ttl_seconds: int | None = None  # None = global default, 0 = never
    pinned: bool = False
    group: str = ""
    exclusive: bool = False
    preload: bool = False
    aliases: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    architecture: str = ""
    quantization: str = ""
    shape: ModelShape | None = None

    @property
    def usable(self) -> bool:
        """Enabled and its file is there to start."""
        return self.enabled and self.state == "available"

    def memory_for(self, overrides: dict[str, Any] | None = None) -> int:
        """The estimate at these request-level runner parameters (a bigger context needs more)."""
        if not overrides or self.shape is None:
            return self.memory_estimate
        return estimate_memory_bytes(self.shape, {**self.parameters, **overrides})

    def effective_context(self, overrides: dict[str, Any] | None = None) -> int | None:
        parameters = {**self.parameters, **(overrides or {})}
        if parameters.get("ctx_size"):
            return int(parameters["ctx_size"])
        return self.context_length


@dataclass(frozen=True)
class Catalog:
    entries: dict[str, CatalogEntry] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def resolve(self, requested: str) -> CatalogEntry | None:
        name = resolve_name(requested, self.entries, self.aliases)
        return self.entries.get(name) if name else None


def load_catalog() -> Catalog:
    """Read every catalog model with its settings and aliases (sync ORM; call from a thread)."""
    from models_catalog.models import CatalogModel, ModelAlias

    entries: dict[str, CatalogEntry] = {}
    aliases_by_model: dict[int, list[str]] = {}
    for alias in ModelAlias.objects.all():
        aliases_by_model.setdefault(alias.model_id, []).append(alias.alias)
    for model in CatalogModel.objects.select_related("settings").all():
        settings = _settings_of(model)
        parameters = dict(getattr(settings, "parameters", None) or {})
        entries[model.name] = CatalogEntry(
            id=model.pk,
            name=model.name,
            kind=model.kind,
            enabled=model.enabled,
            state=model.state,
            error=model.error,
            path=model.path,
            context_length=model.context_length,
            size_bytes=model.size_bytes,
            memory_estimate=estimate_memory_bytes(model, parameters),
            parameters=parameters,
            ttl_seconds=getattr(settings, "ttl_seconds", None),
            pinned=bool(getattr(settings, "pinned", False)),
            group=getattr(settings, "group", "") or "",
            exclusive=bool(getattr(settings, "exclusive", False)),
            preload=bool(getattr(settings, "preload", False)),
            aliases=tuple(sorted(aliases_by_model.get(model.pk, []))),
            capabilities=tuple(model.capabilities),
            architecture=model.architecture,
            quantization=model.quantization,
            shape=ModelShape.of(model),
        )
    aliases = {alias: model_name for model_name, e in entries.items() for alias in e.aliases}
    return Catalog(entries=entries, aliases=aliases)


def _settings_of(model: Any) -> Any | None:
    try:
        return model.settings
    except Exception:  # no RunnerSettings row: defaults
        return None
