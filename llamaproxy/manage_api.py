"""The management API (`/api/manage/`, on the dashboard and OpenAI ports).

Errors are `{"error": {"message": ..., "field": ...}}` with a 4xx status; a logged-in staff
user (dashboard session) or the local admin token / an admin API key may call it.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyHeader, HttpBearer
from ninja.security.session import SessionAuthIsStaff


def local_admin_token() -> str:
    """A token in the data dir (0600) that local `manage.py` commands use to reach the gateway."""
    path = settings.LLAMAPROXY_HOME / "admin_token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _token_ok(token: str) -> bool:
    if secrets.compare_digest(token, local_admin_token()):
        return True
    try:
        from proxies.keys import key_is_admin
    except ImportError:
        return False
    return key_is_admin(token)


class AdminBearer(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return "token" if _token_ok(token) else None


class AdminHeaderKey(APIKeyHeader):
    param_name = "X-Api-Key"

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        return "token" if key and _token_ok(key) else None


class StaffSession(SessionAuthIsStaff):
    """A logged-in staff user; the CSRF check applies only when a session cookie is sent."""

    def _get_key(self, request: HttpRequest) -> str | None:
        # API ports have no session middleware (no `request.user`): only keys count there.
        if settings.SESSION_COOKIE_NAME not in request.COOKIES or not hasattr(request, "user"):
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        if not hasattr(request, "user"):  # an API port: no sessions there
            return None
        return super().authenticate(request, key)


api = NinjaAPI(
    title="llamaproxy management API",
    version="1",
    urls_namespace="manage",
    auth=[AdminBearer(), AdminHeaderKey(), StaffSession()],
    docs_url="/docs",
)


def error_response(request: HttpRequest, status: int, message: str, field: str | None = None) -> HttpResponse:
    error: dict[str, Any] = {"message": message}
    if field:
        error["field"] = field
    return api.create_response(request, {"error": error}, status=status)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    first = exc.errors[0] if exc.errors else {}
    location = [str(p) for p in first.get("loc", []) if p not in ("body", "query", "path", "payload", "data")]
    field = ".".join(location) or None
    message = first.get("msg", "invalid input")
    return error_response(request, 400, f"{field}: {message}" if field else message, field)


@api.exception_handler(OverflowError)
def _overflow(request: HttpRequest, exc: OverflowError) -> HttpResponse:
    """A number too large for the database (an id in the path, say) is the client's mistake."""
    return error_response(request, 400, "a number in the request is out of range")


@api.exception_handler(AuthenticationError)
def _auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    return error_response(request, 401, "log in or send an admin API key")


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    return error_response(request, exc.status_code, str(exc))


def _register_routers() -> None:
    from models_catalog.api import router as catalog_router
    from proxies.api import router as proxies_router
    from runners.api import router as runners_router

    api.add_router("/", catalog_router)
    api.add_router("/", runners_router)
    api.add_router("/", proxies_router)

    from llamaproxy.auth_api import router as auth_router
    from llamaproxy.settings_api import router as settings_router
    from llamaproxy.system_api import router as system_router

    api.add_router("/", auth_router)
    api.add_router("/", settings_router)
    api.add_router("/", system_router)


_register_routers()
