"""API keys: stored hashed, shown once, accepted as `Authorization: Bearer` or `x-api-key`.

The gateway checks keys against an in-memory copy refreshed every few seconds, so the
request path does not query the database.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.utils import timezone

from llamaproxy.freshness import Freshness
from proxies.models import ApiKey

KEY_PREFIX = "lp-"
REFRESH_SECONDS = 5.0


@dataclass(frozen=True)
class KeyInfo:
    id: int
    name: str
    allowed_models: tuple[str, ...]
    is_admin: bool

    def allows(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


class KeyRejected(Exception):
    """401 (missing or wrong key) or 403 (model not allowed for the key)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    name: str, allowed_models: list[str] | None = None, is_admin: bool = False
) -> tuple[ApiKey, str]:
    """Make a key; the plaintext is returned once and never stored."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        name=name,
        prefix=plaintext[:10],
        key_hash=hash_key(plaintext),
        allowed_models=sorted(set(allowed_models or [])),
        is_admin=is_admin,
    )
    key_cache.invalidate()
    return key, plaintext


def revoke_key(key: ApiKey) -> None:
    key.revoked_at = timezone.now()
    key.save(update_fields=["revoked_at"])
    key_cache.invalidate()


def key_from_headers(headers: dict[str, str] | object) -> str | None:
    auth = headers.get("authorization") or headers.get("Authorization") or ""  # type: ignore[union-attr]
    if auth.lower().startswith("bearer "):
        token = auth[7:].strip()
        if token:
            return token
    api_key = headers.get("x-api-key") or headers.get("X-Api-Key")  # type: ignore[union-attr]
    return api_key.strip() if api_key else None


class KeyCache:
    def __init__(self) -> None:
        self._keys: dict[str, KeyInfo] = {}
        self.freshness = Freshness(REFRESH_SECONDS)

    def invalidate(self) -> None:
        """Thread-safe: a key was made or revoked; the next lookup reads them again."""
        self.freshness.changed()

    def _load(self) -> dict[str, KeyInfo]:
        rows = ApiKey.objects.filter(revoked_at__isnull=True).values_list(
            "id", "name", "key_hash", "allowed_models", "is_admin"
        )
        return {h: KeyInfo(i, n, tuple(a or ()), adm) for i, n, h, a, adm in rows}

    def lookup_sync(self, token: str) -> KeyInfo | None:
        if self.freshness.stale():
            begun = self.freshness.begin()
            keys = self._load()
            if self.freshness.accept(begun):
                self._keys = keys
        return self._keys.get(hash_key(token))

    async def lookup(self, token: str) -> KeyInfo | None:
        if self.freshness.stale():
            begun = self.freshness.begin()
            keys = await sync_to_async(self._load, thread_sensitive=False)()
            if self.freshness.accept(begun):  # (not when a read begun later landed first)
                self._keys = keys
        return self._keys.get(hash_key(token))


key_cache = KeyCache()


async def authenticate(headers: dict[str, str] | object) -> KeyInfo | None:
    """The caller's key; raises KeyRejected when keys are required and this one will not do.

    With keys optional, clients that always send some key (the openai SDK does) still work;
    a known key is used to attribute usage.
    """
    token = key_from_headers(headers)
    info = await key_cache.lookup(token) if token else None
    if settings.LLAMAPROXY_REQUIRE_API_KEY and info is None:
        if token is None:
            raise KeyRejected(401, "missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key'")
        raise KeyRejected(401, "invalid API key")
    return info


def check_model_allowed(info: KeyInfo | None, model: str) -> None:
    if info is not None and not info.allows(model):
        raise KeyRejected(403, f"this API key may not use model '{model}'")


def key_is_admin(token: str) -> bool:
    info = key_cache.lookup_sync(token)
    return bool(info and info.is_admin)
