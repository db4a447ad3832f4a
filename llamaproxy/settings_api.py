"""Runtime settings (limits and defaults the dashboard edits) and the parameter metadata that the
model settings form is built from. Mounted under /api/manage/."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema

from llamaproxy.models import RuntimeSettings
from llamaproxy.runtime import (
    LIMIT_FIELDS,
    LimitError,
    clean_limit,
    current_limits,
    env_limits,
    overrides,
    publish_settings_changed,
)
from models_catalog.parameters import LLAMA_SERVER_PARAMS, SAMPLING_PARAMS, Param

router = Router(tags=["settings"])


class SettingsOut(Schema):
    effective: dict[str, Any]
    overrides: dict[str, Any]
    environment: dict[str, Any]


class SettingsPatch(Schema):
    """Each field given replaces its override; null clears it (the environment's value applies)."""

    max_loaded_models: int | None = None
    memory_budget: int | str | None = None
    default_ttl: int | str | None = None
    default_model: str | None = None
    request_timeout: float | str | None = None


def settings_state() -> dict[str, Any]:
    return {
        "effective": current_limits().as_dict(),
        "overrides": overrides(),
        "environment": env_limits().as_dict(),
    }


@router.get(
    "settings", response=SettingsOut, summary="Limits and defaults in force, overrides and env values"
)
def get_settings(request: HttpRequest) -> dict[str, Any]:
    return settings_state()


@router.patch("settings", response=SettingsOut, summary="Change limits and defaults (null = environment's)")
def patch_settings(request: HttpRequest, payload: SettingsPatch) -> dict[str, Any] | HttpResponse:
    from llamaproxy.manage_api import error_response

    given = payload.model_fields_set & set(LIMIT_FIELDS)
    try:
        cleaned = {name: clean_limit(name, getattr(payload, name)) for name in sorted(given)}
    except LimitError as exc:
        return error_response(request, 400, str(exc), exc.field)
    with transaction.atomic():
        row = RuntimeSettings.load()
        for name, value in cleaned.items():
            setattr(row, name, value)
        row.save()
    publish_settings_changed("dashboard")
    return settings_state()


def _describe(name: str, spec: Param) -> dict[str, Any]:
    return {
        "name": name,
        "flag": spec.flag,
        "kind": spec.kind.__name__.lower(),  # int, float, bool, str, list, messages
        "help": spec.help,
        "choices": list(spec.choices) if spec.choices else None,
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        "multiline": spec.multiline,
    }


@router.get("parameters", summary="The runner parameters and sampling defaults a model may set")
def parameter_metadata(request: HttpRequest) -> dict[str, list[dict[str, Any]]]:
    return {
        "parameters": [_describe(name, spec) for name, spec in LLAMA_SERVER_PARAMS.items()],
        "sampling": [_describe(name, spec) for name, spec in SAMPLING_PARAMS.items()],
    }


@router.post("restore-upload", summary="Restore the catalog from an uploaded backup document (atomic)")
def restore_uploaded_backup(request: HttpRequest, document: dict[str, Any]) -> dict[str, Any]:
    from models_catalog.backup import restore_catalog

    return restore_catalog(document, reason="restore-upload")
