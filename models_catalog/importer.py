"""Import of the seed project's config files and of the original llama-runner `config.json`.

Three shapes are recognised (several files may be imported together; runtimes in one serve the
models of another):

- `app_config.json`: `models_dirs`, `llama_runtimes`, `default_runtime`, `default_model`,
  `max_loaded_models`, `default_ttl` (other keys, such as ports, belong to LLAMAPROXY_* variables
  and are reported as not imported);
- `models_config.json`: `default_model` and `models.{name}` with `model_path`, `llama_cpp_runtime`,
  `parameters{ctx_size, n_gpu_layers, temp, ...}` and optionally `model_id`, `aliases`, `has_tools`,
  `enabled`, `ttl_seconds`, `pinned`, `group`, `extra_args`;
- llama-runner's `config.json`: `llama-runtimes`, `default_runtime`, `concurrentRunners`,
  `models.{name}.model_path|model_id|llama_cpp_runtime|has_tools|parameters`, `audio.models`.

The global values (`default_model`, `max_loaded_models` / `concurrentRunners`, `default_ttl`)
become runtime settings (llamaproxy.models.RuntimeSettings, the overrides the dashboard edits);
the scheduler hears of them through a `settings.changed` event after the import commits.

Everything is validated into an `ImportPlan` before anything is written; the plan is applied in
one transaction after a backup. Entries are found again by their names and aliases, so a second
import of the same files changes nothing.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from llamaproxy.runtime import LimitError, clean_limit, publish_settings_changed
from models_catalog.discovery import default_runtime, free_name, normalize_folder_path, read_entry_file
from models_catalog.errors import CatalogError
from models_catalog.events import catalog_changed
from models_catalog.model_files import model_name_for_file
from models_catalog.models import CatalogModel, ModelAlias, ModelFolder, RunnerSettings
from models_catalog.parameters import ParameterError, split_parameters
from models_catalog.services import check_alias_free, tools_capability
from models_catalog.settings_validation import clean_extra_args

MODEL_KEYS = {
    "model_path",
    "model_id",
    "llama_cpp_runtime",
    "runtime",
    "has_tools",
    "parameters",
    "aliases",
    "enabled",
    "ttl_seconds",
    "pinned",
    "group",
    "extra_args",
    "port",  # llama-runner: a fixed port for ik_llama; llamaproxy picks ports itself
    "description",
}
LLAMA_RUNNER_KEYS = {"llama-runtimes", "default_runtime", "concurrentRunners", "proxies", "logging", "audio"}
APP_KEYS = {
    "models_dirs",
    "llama_runtimes",
    "llama-runtimes",
    "default_runtime",
    "default_model",
    "max_loaded_models",
    "concurrentRunners",
    "default_ttl",
}


class ConfigImportError(CatalogError):
    """A problem in a config file: which file, which key, what is wrong."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        super().__init__(problem, field=key)

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.field}: {self.message}" if self.field else f"{self.source}: {self.message}"
        )


@dataclass
class ConfigFile:
    label: str  # the file name, or `configs[0]` for documents sent to the API
    data: dict[str, Any]

    @property
    def kind(self) -> str:
        if LLAMA_RUNNER_KEYS & set(self.data):
            return "llama-runner"
        return "models" if "models" in self.data else "app"


@dataclass
class Runtime:
    runtime: str = RunnerSettings.Runtime.LLAMA_SERVER
    server_binary: str = ""
    supports_tools: bool = True


@dataclass
class PlannedModel:
    source: str
    key: str
    names: list[str]  # model_id then the config's key: what clients used
    path: str
    kind: str = CatalogModel.Kind.LLM
    settings: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    tools_override: bool | None = None
    aliases: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return slugify(self.names[0])


@dataclass
class ImportPlan:
    models: list[PlannedModel] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    # Runtime limits (llamaproxy.models.RuntimeSettings fields) the files set.
    runtime_settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    folders_added: list[str] = field(default_factory=list)
    settings_changed: dict[str, Any] = field(default_factory=dict)  # runtime setting → new value
    notes: list[str] = field(default_factory=list)
    backup: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "folders_added": self.folders_added,
            "settings_changed": self.settings_changed,
            "notes": self.notes,
            "backup": self.backup,
        }


def slugify(text: str) -> str:
    return re.sub(r"[\s:/\\]+", "-", text.strip().lower()).strip("-") or "model"


# --- reading ------------------------------------------------------------------------------------------


def read_config_files(paths: list[str | Path]) -> list[ConfigFile]:
    configs = []
    for path in paths:
        label = str(path)
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigImportError(label, "", "no such file") from None
        except OSError as exc:
            raise ConfigImportError(label, "", f"cannot read it: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigImportError(label, "", f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigImportError(label, "", "a config file is a JSON object")
        configs.append(ConfigFile(label, data))
    return configs


def resolve_model_path(value: str) -> str:
    """Config paths: `~` expanded, relative ones taken from the project folder (where config/ lives)."""
    expanded = os.path.expanduser(value.strip())
    if not os.path.isabs(expanded):
        expanded = os.path.join(settings.BASE_DIR, expanded)
    return os.path.normpath(expanded)


# --- validating: files → plan -----------------------------------------------------------------------


def plan_import(configs: list[ConfigFile]) -> ImportPlan:
    """Validate every file and build the plan; raises ConfigImportError at the first problem."""
    plan = ImportPlan()
    runtimes: dict[str, Runtime] = {"llama-server": Runtime(), "default": Runtime()}
    default_runtime_name = "default"
    for config in configs:  # runtimes first: any file's models may use them
        for key in ("llama-runtimes", "llama_runtimes"):
            if key in config.data:
                runtimes.update(_runtimes(config, key))
        if "default_runtime" in config.data:
            default_runtime_name = _text(config, "default_runtime", config.data["default_runtime"])
    if default_runtime_name not in runtimes:
        source = next(c.label for c in configs if "default_runtime" in c.data)
        raise ConfigImportError(
            source, "default_runtime", f"{default_runtime_name!r} is not a runtime defined in llama-runtimes"
        )
    runtimes["default"] = runtimes[default_runtime_name]

    default_model: tuple[ConfigFile, str] | None = None
    for config in configs:
        kind = config.kind
        for key, value in config.data.items():
            if key == "models":
                plan.models += _models(config, value, runtimes)
            elif key == "default_model":
                default_model = (config, _text(config, key, value))
            elif key in ("max_loaded_models", "concurrentRunners"):
                _int(config, key, value, minimum=1)
                plan.runtime_settings["max_loaded_models"] = _limit(config, key, "max_loaded_models", value)
            elif key == "default_ttl":
                _int(config, key, value, minimum=0)
                plan.runtime_settings["default_ttl"] = _limit(config, key, "default_ttl", value)
            elif key == "models_dirs":
                plan.folders += _folders(config, value)
            elif key == "audio" and kind == "llama-runner":
                plan.models += _audio_models(config, value)
            elif key in ("llama-runtimes", "llama_runtimes", "default_runtime"):
                continue
            elif kind == "models":
                raise ConfigImportError(config.label, key, "unknown key (expected default_model or models)")
            else:
                plan.notes.append(f"{config.label}: {key}: not imported (set it with LLAMAPROXY_* variables)")
    _check_unique(plan)
    if default_model is not None:
        config, name = default_model
        planned = next((m for m in plan.models if name in m.names), None)
        if planned is None and not CatalogModel.objects.filter(name=name).exists():
            raise ConfigImportError(config.label, "default_model", f"{name!r} is not one of the models")
        chosen = planned.names[0] if planned else name
        plan.runtime_settings["default_model"] = _limit(config, "default_model", "default_model", chosen)
    return plan


def _runtimes(config: ConfigFile, key: str) -> dict[str, Runtime]:
    value = config.data[key]
    if not isinstance(value, dict):
        raise ConfigImportError(config.label, key, "must be an object of runtime name → command")
    runtimes = {}
    for name, spec in value.items():
        where = f"{key}.{name}"
        supports_tools = True
        if isinstance(spec, dict):
            unknown = set(spec) - {"runtime", "supports_tools"}
            if unknown:
                raise ConfigImportError(
                    config.label,
                    f"{where}.{sorted(unknown)[0]}",
                    "unknown key (expected runtime, supports_tools)",
                )
            if "supports_tools" in spec:
                supports_tools = _bool(config, f"{where}.supports_tools", spec["supports_tools"])
            spec = spec.get("runtime")
            where = f"{where}.runtime"
        command = _text(config, where, spec)
        runtimes[name] = _runtime_for_command(command, supports_tools)
    return runtimes


def _runtime_for_command(command: str, supports_tools: bool) -> Runtime:
    binary = os.path.basename(command)
    if binary.startswith("whisper-server"):
        runtime = RunnerSettings.Runtime.WHISPER_SERVER
    else:
        runtime = RunnerSettings.Runtime.LLAMA_SERVER
    # A bare name means the installed binary; a path means that very binary (e.g. an ik_llama build).
    server_binary = "" if command in ("llama-server", "whisper-server") else os.path.expanduser(command)
    return Runtime(runtime, server_binary, supports_tools)


def _models(config: ConfigFile, value: Any, runtimes: dict[str, Runtime]) -> list[PlannedModel]:
    if not isinstance(value, dict):
        raise ConfigImportError(config.label, "models", "must be an object of model name → settings")
    return [_model(config, name, spec, runtimes) for name, spec in value.items()]


def _model(config: ConfigFile, name: str, spec: Any, runtimes: dict[str, Runtime]) -> PlannedModel:
    where = f"models.{name}"
    if not name.strip():
        raise ConfigImportError(config.label, where, "a model needs a name")
    if not isinstance(spec, dict):
        raise ConfigImportError(config.label, where, "must be an object")
    unknown = set(spec) - MODEL_KEYS
    if unknown:
        raise ConfigImportError(config.label, f"{where}.{sorted(unknown)[0]}", "unknown key")
    if "model_path" not in spec:
        raise ConfigImportError(config.label, f"{where}.model_path", "missing (the GGUF file of this model)")
    path = resolve_model_path(_text(config, f"{where}.model_path", spec["model_path"]))
    model_id = _text(config, f"{where}.model_id", spec["model_id"]) if "model_id" in spec else ""
    names = list(dict.fromkeys(n for n in (model_id, name.strip()) if n))

    runtime_key = "llama_cpp_runtime" if "llama_cpp_runtime" in spec else "runtime"
    runtime_name = (
        _text(config, f"{where}.{runtime_key}", spec[runtime_key]) if runtime_key in spec else "default"
    )
    if runtime_name not in runtimes:
        if runtime_key == "runtime" and runtime_name in RunnerSettings.Runtime.values:
            runtimes[runtime_name] = Runtime(runtime=runtime_name)
        else:
            raise ConfigImportError(
                config.label,
                f"{where}.{runtime_key}",
                f"{runtime_name!r} is not a runtime ({', '.join(sorted(runtimes))})",
            )
    runtime = runtimes[runtime_name]

    raw_parameters = spec.get("parameters", {})
    if not isinstance(raw_parameters, dict):
        raise ConfigImportError(config.label, f"{where}.parameters", "must be an object of name → value")
    try:
        parameters, sampling = split_parameters(raw_parameters)
    except ParameterError as exc:
        raise ConfigImportError(config.label, f"{where}.parameters.{exc.name}", str(exc)) from None
    if "mmproj" in parameters:
        parameters["mmproj"] = resolve_model_path(parameters["mmproj"])

    planned = PlannedModel(source=config.label, key=where, names=names, path=path)
    planned.settings = {
        "runtime": runtime.runtime,
        "server_binary": runtime.server_binary,
        "parameters": parameters,
        "sampling": sampling,
    }
    if "extra_args" in spec:
        try:
            planned.settings["extra_args"] = clean_extra_args(spec["extra_args"])
        except CatalogError as exc:
            raise ConfigImportError(config.label, f"{where}.extra_args", exc.message) from None
    if "ttl_seconds" in spec:
        planned.settings["ttl_seconds"] = _int(config, f"{where}.ttl_seconds", spec["ttl_seconds"], minimum=0)
    if "pinned" in spec:
        planned.settings["pinned"] = _bool(config, f"{where}.pinned", spec["pinned"])
    if "group" in spec:
        planned.settings["group"] = _text(config, f"{where}.group", spec["group"])
    if "enabled" in spec:
        planned.enabled = _bool(config, f"{where}.enabled", spec["enabled"])
    if "has_tools" in spec:
        planned.tools_override = _bool(config, f"{where}.has_tools", spec["has_tools"])
        if planned.tools_override:
            parameters.setdefault("jinja", True)  # llama-server parses tool calls only with --jinja
    elif not runtime.supports_tools:
        planned.tools_override = False
    if "aliases" in spec:
        aliases = spec["aliases"]
        if not isinstance(aliases, list) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise ConfigImportError(config.label, f"{where}.aliases", "must be a list of names")
        planned.aliases = [a.strip() for a in aliases]
    if runtime.runtime == RunnerSettings.Runtime.WHISPER_SERVER:
        planned.kind = CatalogModel.Kind.WHISPER
    return planned


def _audio_models(config: ConfigFile, value: Any) -> list[PlannedModel]:
    if not isinstance(value, dict):
        raise ConfigImportError(config.label, "audio", "must be an object with runtimes and models")
    runtimes = {"default": Runtime(RunnerSettings.Runtime.WHISPER_SERVER)}
    if "runtimes" in value:
        if not isinstance(value["runtimes"], dict):
            raise ConfigImportError(
                config.label, "audio.runtimes", "must be an object of runtime name → settings"
            )
        for name, spec in value["runtimes"].items():
            command = spec.get("runtime") if isinstance(spec, dict) else spec
            command = _text(config, f"audio.runtimes.{name}.runtime", command)
            server_binary = "" if command == "whisper-server" else os.path.expanduser(command)
            runtimes[name] = Runtime(RunnerSettings.Runtime.WHISPER_SERVER, server_binary)
    models = value.get("models", {})
    if not isinstance(models, dict):
        raise ConfigImportError(config.label, "audio.models", "must be an object of model name → settings")
    planned = []
    for name, spec in models.items():
        where = f"audio.models.{name}"
        if not isinstance(spec, dict) or "model_path" not in spec:
            raise ConfigImportError(config.label, f"{where}.model_path", "missing (the whisper model file)")
        runtime_name = spec.get("runtime") or next(iter(runtimes))
        if runtime_name not in runtimes:
            raise ConfigImportError(
                config.label, f"{where}.runtime", f"{runtime_name!r} is not an audio runtime"
            )
        parameters = spec.get("parameters", {})
        if not isinstance(parameters, dict):
            raise ConfigImportError(config.label, f"{where}.parameters", "must be an object of name → value")
        extra_args: list[str] = []
        for key, item in parameters.items():  # whisper-server flags are not llama-server's: passed through
            flag = f"--{key.replace('_', '-')}"
            if item is True:
                extra_args.append(flag)
            elif item not in (None, False):
                extra_args += [flag, str(item)]
        runtime = runtimes[runtime_name]
        planned.append(
            PlannedModel(
                source=config.label,
                key=where,
                names=[name.strip()],
                path=resolve_model_path(_text(config, f"{where}.model_path", spec["model_path"])),
                kind=CatalogModel.Kind.WHISPER,
                settings={
                    "runtime": runtime.runtime,
                    "server_binary": runtime.server_binary,
                    "parameters": {},
                    "sampling": {},
                    "extra_args": extra_args,
                },
            )
        )
    return planned


def _folders(config: ConfigFile, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigImportError(config.label, "models_dirs", "must be a list of folder paths")
    return [normalize_folder_path(resolve_model_path(v)) for v in value]


def _check_unique(plan: ImportPlan) -> None:
    seen: dict[str, PlannedModel] = {}
    for model in plan.models:
        for name in [*model.names, *model.aliases, model.slug]:
            other = seen.get(name)
            if other is not None and other is not model:
                raise ConfigImportError(
                    model.source, model.key, f"the name {name!r} is also used by {other.key} ({other.source})"
                )
            seen[name] = model


def _text(config: ConfigFile, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigImportError(config.label, key, "must be a non-empty text")
    return value.strip()


def _bool(config: ConfigFile, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigImportError(config.label, key, "must be true or false")
    return value


def _limit(config: ConfigFile, key: str, name: str, value: Any) -> Any:
    """A runtime limit validated as the dashboard validates it."""
    try:
        return clean_limit(name, value)
    except LimitError as exc:
        raise ConfigImportError(config.label, key, str(exc).removeprefix(f"{name}: ")) from None


def _int(config: ConfigFile, key: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigImportError(config.label, key, f"must be a whole number, at least {minimum}")
    return value


# --- applying ---------------------------------------------------------------------------------------------


def import_configs(configs: list[ConfigFile], *, dry_run: bool = False) -> ImportResult:
    """Validate, back up, and apply in one transaction; a bad file changes nothing."""
    plan = plan_import(configs)
    result = ImportResult(notes=list(plan.notes))
    if dry_run:
        return result
    from models_catalog.backup import write_backup

    result.backup = write_backup(reason="before-import").name
    with transaction.atomic():
        for folder in plan.folders:
            _, created = ModelFolder.objects.get_or_create(path=folder)
            if created:
                result.folders_added.append(folder)
        for planned in plan.models:
            try:
                _apply_model(planned, result)
            except CatalogError as exc:  # a conflict with the catalog as it is (e.g. an alias in use)
                raise ConfigImportError(planned.source, planned.key, exc.message) from None
        result.settings_changed = _apply_runtime_settings(plan.runtime_settings)
        if result.settings_changed:
            transaction.on_commit(lambda: publish_settings_changed("import"))
        changed = result.created + result.updated
        if changed:
            transaction.on_commit(lambda: catalog_changed("import", names=changed))
    return result


def _apply_runtime_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Write the imported limits into RuntimeSettings (in the caller's transaction); what changed."""
    if not values:
        return {}
    from llamaproxy.models import RuntimeSettings

    row = RuntimeSettings.objects.select_for_update().filter(pk=1).first() or RuntimeSettings(pk=1)
    changed = {name: value for name, value in values.items() if getattr(row, name) != value}
    if changed or row._state.adding:
        for name, value in changed.items():
            setattr(row, name, value)
        row.save()  # invalidates the cached limits once the transaction commits
    return changed


def _find_existing(planned: PlannedModel) -> CatalogModel | None:
    """The entry a config model was imported into before: one of its names, for the same file."""
    by_name = CatalogModel.objects.filter(name__in=planned.names).first()
    if by_name is None:
        alias = ModelAlias.objects.filter(alias__in=planned.names).select_related("model").first()
        by_name = alias.model if alias else None
    if by_name is not None:
        if by_name.path != planned.path:
            raise CatalogError(
                f"the name is already used by {by_name.name} for another file ({by_name.path}); "
                "rename the model in the config, or remove that entry or alias first"
            )
        return by_name
    # A variant made by an earlier import is called by the slug of the config's name.
    return CatalogModel.objects.filter(name=planned.slug, path=planned.path).first()


def _apply_model(planned: PlannedModel, result: ImportResult) -> None:
    entry = _find_existing(planned)
    created = False
    if entry is None:
        base = CatalogModel.objects.filter(path=planned.path, base__isnull=True).first()
        if base is not None and base.source != CatalogModel.Source.IMPORT:
            entry = base  # the scan found this file already: the config's settings go onto its entry
        else:
            entry = _new_entry(planned, base)
            created = True
    before = None if created else _snapshot(entry)
    entry.source = CatalogModel.Source.IMPORT
    entry.enabled = planned.enabled
    entry.tools_override = planned.tools_override  # the config is the truth for what it sets
    entry.cap_tools = tools_capability(entry)
    entry.save()
    runner, _ = RunnerSettings.objects.get_or_create(
        model=entry, defaults={"runtime": default_runtime(entry.kind)}
    )
    for key, value in planned.settings.items():
        setattr(runner, key, value)
    runner.save()
    for alias in [*planned.names, *planned.aliases]:
        if alias == entry.name or entry.aliases.filter(alias=alias).exists():
            continue

        check_alias_free(entry, alias)
        ModelAlias.objects.create(alias=alias, model=entry)
    if created:
        result.created.append(entry.name)
    elif _snapshot(entry) != before:
        result.updated.append(entry.name)
    else:
        result.unchanged.append(entry.name)


def _new_entry(planned: PlannedModel, base: CatalogModel | None) -> CatalogModel:
    taken = set(CatalogModel.objects.values_list("name", flat=True)) | set(
        ModelAlias.objects.values_list("alias", flat=True)
    )
    if base is not None:
        # Another config entry uses this file with other settings: a variant of that entry.
        return base.new_variant(free_name(planned.slug, taken), CatalogModel.Source.IMPORT)
    preferred = model_name_for_file(planned.path)
    entry = CatalogModel(
        name=free_name(preferred, taken),
        path=planned.path,
        source=CatalogModel.Source.IMPORT,
        kind=planned.kind,
    )
    read_entry_file(entry)
    return entry


def _snapshot(entry: CatalogModel) -> tuple[Any, ...]:
    runner = RunnerSettings.objects.filter(model=entry).values().first() or {}
    runner.pop("id", None)
    aliases = sorted(entry.aliases.values_list("alias", flat=True)) if entry.pk else []
    return (
        entry.enabled,
        entry.tools_override,
        entry.source,
        json.dumps(runner, sort_keys=True, default=str),
        aliases,
    )
