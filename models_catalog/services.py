"""Catalog operations that the manage API, the admin, the commands and the gateway call.

Every change is validated first and written in one transaction; bulk changes write a backup
before they touch anything; every committed change publishes `catalog.changed`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from models_catalog.discovery import configured_folder_paths, normalize_folder_path
from models_catalog.errors import CatalogError
from models_catalog.events import catalog_changed
from models_catalog.gguf_metadata import template_has_tools
from models_catalog.lookup import resolve_name
from models_catalog.model_files import split_parts
from models_catalog.models import CatalogModel, ModelAlias, ModelFolder, RunnerSettings
from models_catalog.parameters import LLAMA_SERVER_PARAMS, SAMPLING_PARAMS, canonical_name, lora_files
from models_catalog.settings_validation import SETTINGS_FIELDS, merge_parameters, validate_settings_changes

MODEL_FIELDS = ("enabled", "aliases", "tools_override")
DIGEST_CHUNK = 4 * 1024 * 1024


# --- finding entries -------------------------------------------------------------------------


def resolve_model(requested: str) -> CatalogModel | None:
    """The entry a client's `model` string names (name, alias, `:tag`, any case), or None."""
    names = set(CatalogModel.objects.values_list("name", flat=True))
    aliases = dict(ModelAlias.objects.values_list("alias", "model__name"))
    name = resolve_name(requested, names, aliases)
    return CatalogModel.objects.select_related("settings").get(name=name) if name else None


def get_model(name: str) -> CatalogModel:
    """The entry called `name` (or with that alias); CatalogError 404 when there is none."""
    model = resolve_model(name)
    if model is None:
        raise CatalogError(f"no model called {name!r}", field="name", status=404)
    return model


def settings_of(model: CatalogModel) -> RunnerSettings:
    try:
        return model.settings
    except RunnerSettings.DoesNotExist:
        settings, _ = RunnerSettings.objects.get_or_create(model=model)
        return settings


# --- one entry ---------------------------------------------------------------------------------


def update_model(name: str, changes: dict[str, Any]) -> CatalogModel:
    """Apply a partial update (entry fields and settings fields, flat) to one entry."""
    unknown = set(changes) - set(MODEL_FIELDS) - set(SETTINGS_FIELDS)
    if unknown:
        raise CatalogError("cannot be changed here", field=sorted(unknown)[0])
    model = get_model(name)
    settings = settings_of(model)
    clean = validate_settings_changes({k: v for k, v in changes.items() if k in SETTINGS_FIELDS}, settings)
    if "enabled" in changes and not isinstance(changes["enabled"], bool):
        raise CatalogError("must be true or false", field="enabled")
    if "tools_override" in changes and changes["tools_override"] not in (True, False, None):
        raise CatalogError("must be true, false or null", field="tools_override")
    aliases = None
    if "aliases" in changes:
        aliases = validate_aliases(model, changes["aliases"])
    with transaction.atomic():
        for field, value in clean.items():
            setattr(settings, field, value)
        settings.save()
        if "enabled" in changes:
            model.enabled = changes["enabled"]
        if "tools_override" in changes:
            model.tools_override = changes["tools_override"]
            model.cap_tools = tools_capability(model)
        model.save()
        if aliases is not None:
            model.aliases.exclude(alias__in=aliases).delete()
            for alias in aliases:
                ModelAlias.objects.get_or_create(alias=alias, model=model)
        transaction.on_commit(lambda: catalog_changed("update", names=[model.name]))
    model.refresh_from_db()
    return model


def create_variant(
    base_name: str,
    name: str,
    parameters: dict[str, Any],
    sampling: dict[str, Any],
    adapters: Iterable[str] = (),
) -> tuple[CatalogModel, CatalogModel | None]:
    """A variant of `base_name` called `name`: its file, its runner settings with `parameters`
    and `sampling` merged over them and `adapters` (LoRA files) added (Ollama's `/api/create`
    from an existing model). Returns the entry and the one it replaced (see `_created`)."""
    base = get_model(base_name)
    name = _creatable_name(name, base)
    parameters = _file_template_unset(parameters, base.chat_template)
    settings = new_settings(settings_of(base), parameters, sampling, adapters)
    return _created(name, lambda: base.new_variant(name, CatalogModel.Source.MANUAL), settings)


def create_from_file(
    name: str,
    path: str,
    parameters: dict[str, Any],
    sampling: dict[str, Any],
    digest: str = "",
    adapters: Iterable[str] = (),
    settings_from: str | None = None,
) -> tuple[CatalogModel, CatalogModel | None]:
    """An entry called `name` for the GGUF file at `path`, an uploaded blob outside the model
    folders (Ollama's `/api/create` from files, or a quantized file), with default runner
    settings (or those of the model `settings_from`, the one it was quantized from) and
    `parameters`/`sampling` over them; `digest`, when the caller knows the file's sha256,
    spares hashing it again."""
    from models_catalog.discovery import read_entry_file

    name = _creatable_name(name)
    source_settings = settings_of(get_model(settings_from)) if settings_from else None
    owners = CatalogModel.objects.filter(path=path, base__isnull=True)
    entry = CatalogModel(name=name, path=path, source=CatalogModel.Source.MANUAL)
    other = owners.exclude(name=name).first()
    if other is not None:
        entry.chat_template = other.chat_template  # (what was read from the file)
    else:
        read_entry_file(entry)
        if entry.state != CatalogModel.State.AVAILABLE:
            raise CatalogError(
                f"the file is not a model llamaproxy can read: {entry.error or entry.state}", field="files"
            )
        if digest:
            entry.digest, entry.digest_mtime = digest, os.stat(path).st_mtime
    settings = new_settings(
        source_settings, _file_template_unset(parameters, entry.chat_template), sampling, adapters
    )

    def make() -> CatalogModel:
        # Asked once the model this replaces is gone (its variants may have the file now):
        # another model with the file makes this its variant (one entry without a base per file).
        owner = owners.first()
        return owner.new_variant(name, CatalogModel.Source.MANUAL) if owner is not None else entry

    return _created(name, make, settings)


def _file_template_unset(parameters: dict[str, Any], file_template: str) -> dict[str, Any]:
    """A `chat_template` that is the GGUF file's own (an `ollama show --modelfile` sent back
    to `ollama create`) is no template of the model's own: the runner uses the file's."""
    template = parameters.get("chat_template")
    if isinstance(template, str) and file_template and template.strip() == file_template.strip():
        return {**parameters, "chat_template": None}
    return parameters


def check_creatable_name(name: str) -> str:
    """`name` when a created model may take it (before work that makes its file); CatalogError
    otherwise."""
    return _creatable_name(name)


def _creatable_name(name: str, base: CatalogModel | None = None) -> str:
    """`name` when a created model may take it: a free name, or one that a model created so
    already has (Ollama replaces a model it creates over); any other name in use is refused."""
    name = name.strip()
    if not name or len(name) > 200:
        raise CatalogError("a model name must have 1 to 200 characters", field="model")
    existing = resolve_model(name)
    if existing is not None:
        if existing.name != name or existing.source != CatalogModel.Source.MANUAL:
            raise CatalogError(f"{name!r} is already the name of another model", field="model", status=409)
        if base is not None and existing.pk in (base.pk, base.base_id):
            raise CatalogError(f"{name!r} cannot be made from itself", field="from", status=409)
    return name


def new_settings(
    source: RunnerSettings | None,
    parameters: dict[str, Any],
    sampling: dict[str, Any],
    adapters: Iterable[str] = (),
) -> RunnerSettings:
    """Unsaved settings: a copy of `source` (or the defaults) with parameters and sampling merged
    and each LoRA adapter file added to the runner's arguments (`--lora FILE`)."""
    settings = RunnerSettings()
    for field in SETTINGS_FIELDS if source is not None else ():
        value = getattr(source, field)
        setattr(settings, field, value.copy() if isinstance(value, dict | list) else value)
    clean = validate_settings_changes({"parameters": parameters, "sampling": sampling}, settings)
    for field, value in clean.items():
        setattr(settings, field, value)
    for adapter in adapters:
        settings.extra_args = [*(settings.extra_args or []), "--lora", adapter]
    return settings


def _created(name: str, make: Any, settings: RunnerSettings) -> tuple[CatalogModel, CatalogModel | None]:
    """Save the entry `make()` gives with `settings`, in place of a created model of that name;
    returns it and the entry it replaced (deleted, its fields still there to read)."""
    replaced_adapters: list[str] = []
    heir = None
    with transaction.atomic():
        replaced = CatalogModel.objects.filter(name=name).first()
        if replaced is not None:
            replaced_adapters = lora_files(settings_of(replaced).extra_args)
            heir = delete_entry(replaced)
        entry = make()
        entry.save()
        settings.model = entry
        settings.save()
        changed = [entry.name] + ([heir.name] if heir is not None else [])
        transaction.on_commit(lambda: catalog_changed("update", names=changed))
    if replaced is not None:
        from models_catalog.blobs import prune_adapters

        prune_file(replaced.path)
        prune_adapters(replaced_adapters)
    return entry, replaced


def tools_capability(model: CatalogModel) -> bool:
    if model.tools_override is not None:
        return model.tools_override
    return not (model.cap_embedding or model.cap_rerank) and template_has_tools(model.chat_template)


def validate_aliases(model: CatalogModel, aliases: Any) -> list[str]:
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise CatalogError("must be a list of names", field="aliases")
    clean: list[str] = []
    for alias in aliases:
        alias = alias.strip()
        check_alias_free(model, alias)
        if alias not in clean:
            clean.append(alias)
    return clean


def check_alias_free(model: CatalogModel, alias: str) -> None:
    if not alias or len(alias) > 200:
        raise CatalogError("an alias must have 1 to 200 characters", field="aliases")
    if alias == model.name:
        raise CatalogError(f"{alias!r} is the model's own name", field="aliases")
    if CatalogModel.objects.filter(name=alias).exclude(pk=model.pk).exists():
        raise CatalogError(f"{alias!r} is already another model's name", field="aliases", status=409)
    owner = ModelAlias.objects.filter(alias=alias).exclude(model=model).select_related("model").first()
    if owner is not None:
        raise CatalogError(
            f"{alias!r} is already an alias of {owner.model.name}", field="aliases", status=409
        )


def add_alias(name: str, alias: str) -> CatalogModel:
    model = get_model(name)
    alias = alias.strip()
    check_alias_free(model, alias)
    with transaction.atomic():
        ModelAlias.objects.get_or_create(alias=alias, model=model)
        transaction.on_commit(lambda: catalog_changed("update", names=[model.name]))
    return model


def remove_alias(name: str, alias: str) -> CatalogModel:
    model = get_model(name)
    deleted, _ = model.aliases.filter(alias=alias).delete()
    if not deleted:
        raise CatalogError(f"{model.name} has no alias {alias!r}", field="alias", status=404)
    catalog_changed("update", names=[model.name])
    return model


def delete_model(name: str) -> str:
    """Remove a catalog entry with its settings; the file stays (a scan finds it again, with
    defaults), unless it is a blob uploaded for `ollama create` or a file downloaded from Hugging
    Face that no entry uses any more (its LoRA adapters' blobs likewise)."""
    from models_catalog.blobs import prune_adapters

    model = get_model(name)
    deleted = model.name
    adapters = lora_files(settings_of(model).extra_args)
    heir = delete_entry(model)
    prune_file(model.path)
    prune_adapters(adapters)  # a file uploaded for `ollama create` goes with its last entry
    catalog_changed("delete", names=[deleted])
    if heir is not None:
        catalog_changed("update", names=[heir.name])
    return deleted


def delete_model_files(name: str) -> tuple[str, list[str]]:
    """Remove an entry and delete its file from disk: every part of a split model, and its
    projector when no other entry pairs with it (the dashboard's "also delete the file").
    Refused (409, nothing changed) while another entry uses the file, or where the files cannot
    be deleted. Returns the deleted name and the files that went."""
    model = get_model(name)
    sharing = list(
        CatalogModel.objects.filter(path=model.path).exclude(pk=model.pk).values_list("name", flat=True)
    )
    if sharing:
        raise CatalogError(
            f"the file is also the file of {', '.join(sorted(sharing))}: remove those first",
            field="delete_files",
            status=409,
        )
    files = [p for p in split_parts(model.path) if os.path.exists(p)]
    projector = model.mmproj_path
    pairs_others = CatalogModel.objects.filter(mmproj_path=projector).exclude(pk=model.pk).exists()
    if projector and os.path.exists(projector) and not pairs_others:
        files.append(projector)
    for file in files:
        if not os.access(os.path.dirname(file) or ".", os.W_OK):
            raise CatalogError(
                f"cannot delete {file}: its folder is not writable", field="delete_files", status=409
            )
    deleted = delete_model(name)  # (a blob's or a download's files go here already)
    for file in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(file)
    return deleted, files


def prune_file(path: str) -> bool:
    """Delete a file llamaproxy made (an uploaded or quantized blob, a download) once no entry
    uses it; the files of the model folders are never touched."""
    from models_catalog.blobs import prune_blob
    from models_catalog.downloads import prune_download

    return prune_blob(path) or prune_download(path)


def delete_entry(model: CatalogModel) -> CatalogModel | None:
    """Delete one entry and nothing else: a base's variants stay, the oldest of them becoming the
    entry of the file (the others its variants), as Ollama's models made `FROM` another outlive
    it. Returns that heir, if there is one."""
    with transaction.atomic():
        variants = list(model.variants.order_by("created_at", "pk"))
        if not variants:
            model.delete()
            return None
        heir, others = variants[0], variants[1:]
        CatalogModel.objects.filter(pk__in=[v.pk for v in others]).update(base=heir)
        # One entry without a base per file, at every step: the deleted one hangs off its heir
        # for a moment, so that deleting it takes nothing with it.
        CatalogModel.objects.filter(pk=model.pk).update(base=heir)
        CatalogModel.objects.filter(pk=heir.pk).update(base=None)
        CatalogModel.objects.filter(pk=model.pk).delete()
    heir.base = None
    return heir


# --- many entries (the admin's bulk actions) -----------------------------------------------------


def _bulk(reason: str, models: Iterable[CatalogModel]) -> list[CatalogModel]:
    from models_catalog.backup import write_backup

    selected = list(models)
    if selected:
        write_backup(reason=reason)
    return selected


def set_enabled(models: QuerySet[CatalogModel] | Iterable[CatalogModel], enabled: bool) -> int:
    selected = _bulk("enable" if enabled else "disable", models)
    with transaction.atomic():
        count = CatalogModel.objects.filter(pk__in=[m.pk for m in selected]).update(enabled=enabled)
        transaction.on_commit(lambda: catalog_changed("update", names=[m.name for m in selected]))
    return count


def set_parameter(models: QuerySet[CatalogModel] | Iterable[CatalogModel], name: str, value: Any) -> int:
    """Set one llama-server or sampling parameter on every selected entry (`None` or '' removes it)."""
    key = canonical_name(name)
    if key in LLAMA_SERVER_PARAMS:
        group = "parameters"
    elif key in SAMPLING_PARAMS:
        group = "sampling"
    else:
        raise CatalogError(f"{name!r} is not a llama-server or sampling parameter", field="parameter")
    if value == "":
        value = None
    merge_parameters(group, {key: value}, {})  # validates the value once, before anything changes
    selected = _bulk(f"set-{key}", models)
    with transaction.atomic():
        for model in selected:
            settings = settings_of(model)
            setattr(settings, group, merge_parameters(group, {key: value}, getattr(settings, group)))
            settings.save(update_fields=[group])
        transaction.on_commit(lambda: catalog_changed("update", names=[m.name for m in selected]))
    return len(selected)


def copy_settings(source: CatalogModel, targets: Iterable[CatalogModel]) -> int:
    """Give every target the source's runner settings (all of them: runtime, parameters, sampling, ...)."""
    selected = [t for t in _bulk(f"copy-from-{source.name}", targets) if t.pk != source.pk]
    values = {field: getattr(settings_of(source), field) for field in SETTINGS_FIELDS}
    with transaction.atomic():
        for model in selected:
            settings = settings_of(model)
            for field, value in values.items():
                setattr(settings, field, value.copy() if isinstance(value, dict | list) else value)
            settings.save()
        transaction.on_commit(lambda: catalog_changed("update", names=[m.name for m in selected]))
    return len(selected)


# --- folders ---------------------------------------------------------------------------------------


def add_folder(path: str) -> ModelFolder:
    if not isinstance(path, str) or not path.strip():
        raise CatalogError("a folder path is needed", field="path")
    normalized = normalize_folder_path(path.strip())
    if not os.path.isdir(normalized):
        raise CatalogError(f"{normalized} is not a folder", field="path")
    folder, created = ModelFolder.objects.get_or_create(path=normalized)
    if not created and not folder.enabled:
        folder.enabled = True
        folder.save(update_fields=["enabled"])
    return folder


def remove_folder(folder_id: int) -> None:
    """Stop scanning a folder added by hand; its entries stay (marked missing by the next scan)."""
    folder = ModelFolder.objects.filter(pk=folder_id).first()
    if folder is None:
        raise CatalogError(f"no folder with id {folder_id}", field="id", status=404)
    if folder.path in configured_folder_paths():
        raise CatalogError(
            "this folder comes from LLAMAPROXY_MODELS_DIRS; change the variable instead",
            field="id",
            status=409,
        )
    folder.delete()


# --- digest ----------------------------------------------------------------------------------------


def ensure_digest(model: CatalogModel) -> str:
    """`sha256:<hex>` of the model's file(s), computed once per file version (Ollama's `digest`).

    Reading a large model takes seconds: call it from a task or once per model, never per request.
    """
    parts = split_parts(model.path)
    try:
        mtime = max(os.stat(p).st_mtime for p in parts)
    except (OSError, ValueError):
        raise CatalogError(f"cannot read {model.path}", field="path", status=409) from None
    if model.digest and model.digest_mtime == mtime:
        return model.digest
    digest = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as handle:
            while chunk := handle.read(DIGEST_CHUNK):
                digest.update(chunk)
    value = f"sha256:{digest.hexdigest()}"
    CatalogModel.objects.filter(path=model.path).update(digest=value, digest_mtime=mtime)
    model.digest, model.digest_mtime = value, mtime
    return value
