"""Celery tasks of the catalog: thin wrappers around the services (beat runs the scan every 5 minutes)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from models_catalog import discovery, services
from models_catalog.errors import CatalogError
from models_catalog.models import CatalogModel


@shared_task(name="models_catalog.tasks.scan_models")
def scan_models(force: bool = False) -> dict[str, Any]:
    return discovery.scan_models(force=force).as_dict()


@shared_task(name="models_catalog.tasks.compute_digest")
def compute_digest(model_id: int) -> str | None:
    """Ollama's `digest` for one entry (reads the whole file: seconds for a large model)."""
    try:
        model = CatalogModel.objects.get(pk=model_id)
        return services.ensure_digest(model)
    except (CatalogModel.DoesNotExist, CatalogError):
        return None
