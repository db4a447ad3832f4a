"""Validation of runner settings changes, shared by the manage API, the admin actions and imports.

Values arrive as plain JSON; the result is clean field values for `RunnerSettings`, or a
CatalogError naming the field (`parameters.ctx_size`, `ttl_seconds`, ...).
"""

from __future__ import annotations

import shlex
from typing import Any

from models_catalog.errors import CatalogError
from models_catalog.models import RunnerSettings
from models_catalog.parameters import ParameterError, canonical_name, validate_parameters, validate_sampling

SETTINGS_FIELDS = (
    "runtime",
    "server_binary",
    "custom_command",
    "parameters",
    "extra_args",
    "sampling",
    "ttl_seconds",
    "pinned",
    "group",
    "exclusive",
    "preload",
)
BOOL_FIELDS = ("pinned", "exclusive", "preload")


def validate_settings_changes(
    changes: dict[str, Any], current: RunnerSettings | None = None
) -> dict[str, Any]:
    """Clean values for the settings fields in `changes`.

    `parameters` and `sampling` are merged into the current values (a `null` value removes a key),
    the way a JSON merge patch works; every other field is replaced.
    """
    clean: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in SETTINGS_FIELDS:
            raise CatalogError("unknown setting", field=name)
        clean[name] = _clean(name, value, current)
    runtime = clean.get("runtime", current.runtime if current else RunnerSettings.Runtime.LLAMA_SERVER)
    command = clean.get("custom_command", current.custom_command if current else "")
    if runtime == RunnerSettings.Runtime.CUSTOM and "{port}" not in command:
        raise CatalogError("a custom command needs the {port} placeholder", field="custom_command")
    return clean


def _clean(name: str, value: Any, current: RunnerSettings | None) -> Any:
    if name == "runtime":
        if value not in RunnerSettings.Runtime.values:
            raise CatalogError(f"must be one of {', '.join(RunnerSettings.Runtime.values)}", field=name)
        return value
    if name in ("parameters", "sampling"):
        return merge_parameters(name, value, getattr(current, name) if current else {})
    if name == "extra_args":
        return clean_extra_args(value)
    if name == "ttl_seconds":
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CatalogError(
                "must be a whole number of seconds, 0 or more (or null for the default)", field=name
            )
        return value
    if name in BOOL_FIELDS:
        if not isinstance(value, bool):
            raise CatalogError("must be true or false", field=name)
        return value
    if name == "custom_command":
        if not isinstance(value, str):
            raise CatalogError("must be a text", field=name)
        try:
            shlex.split(value)
        except ValueError as exc:
            raise CatalogError(f"cannot be split into arguments: {exc}", field=name) from None
        return value.strip()
    if not isinstance(value, str):  # server_binary, group
        raise CatalogError("must be a text", field=name)
    if name == "group" and len(value) > 64:
        raise CatalogError("must be at most 64 characters", field=name)
    return value.strip()


def merge_parameters(name: str, value: Any, current: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CatalogError("must be an object of name → value", field=name)
    merged = dict(current or {})
    for key, item in value.items():
        if item is None:
            merged.pop(key, None)
            merged.pop(canonical_name(key), None)
        else:
            merged[key] = item
    validate = validate_parameters if name == "parameters" else validate_sampling
    try:
        return validate(merged)
    except ParameterError as exc:
        raise CatalogError(str(exc), field=f"{name}.{exc.name}" if exc.name else name) from None


def clean_extra_args(value: Any) -> list[str]:
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise CatalogError(f"cannot be split into arguments: {exc}", field="extra_args") from None
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise CatalogError("must be a list of texts (or one command-line text)", field="extra_args")
    return list(value)
