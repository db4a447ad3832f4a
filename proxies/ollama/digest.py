"""Ollama's `digest` of a model: the sha256 of its file, computed once and kept in the catalog.

Hashing a multi-gigabyte file takes a while, so listings never wait for a large one: it is
hashed in the background and, until then, the listing shows a stable digest of name, size and
modification time (clients only compare digests for equality).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async

log = logging.getLogger(__name__)

INLINE_HASH_LIMIT = 256 * 1024 * 1024  # files this small are hashed while the client waits
_computed: dict[tuple[str, float | None], str] = {}
_running: dict[tuple[str, float | None], asyncio.Task] = {}


def placeholder_digest(model: Any) -> str:
    key = f"{model.path}\0{model.size_bytes}\0{model.mtime}"
    return hashlib.sha256(key.encode()).hexdigest()


def _ensure_digest(name: str) -> str:
    from models_catalog.models import CatalogModel
    from models_catalog.services import ensure_digest

    return ensure_digest(CatalogModel.objects.get(name=name)).removeprefix("sha256:")


async def _compute(model: Any) -> str:
    digest = await sync_to_async(_ensure_digest, thread_sensitive=False)(model.name)
    _computed[(model.path, model.mtime)] = digest
    return digest


async def digest_of(model: Any, wait: bool = False) -> str:
    """The hex sha256 Ollama shows (no "sha256:" prefix); `models_catalog.services.ensure_digest`
    computes and stores it."""
    if model.digest:
        return model.digest.removeprefix("sha256:")
    key = (model.path, model.mtime)
    if key in _computed:
        return _computed[key]
    if not Path(model.path).is_file():
        return placeholder_digest(model)
    task = _running.get(key)
    if task is None:
        task = asyncio.get_running_loop().create_task(_compute(model))
        _running[key] = task
        task.add_done_callback(lambda _: _running.pop(key, None))
    if wait or model.size_bytes <= INLINE_HASH_LIMIT:
        try:
            return await asyncio.shield(task)
        except Exception:
            log.warning("could not compute the digest of %s", model.name, exc_info=True)
            return placeholder_digest(model)
    return placeholder_digest(model)
