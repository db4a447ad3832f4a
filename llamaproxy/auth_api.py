"""Dashboard login: the CSRF cookie, who is logged in, log in / out, and the first-run page that
creates the first user. Mounted under /api/manage/auth/ without the API's own auth."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from ninja import Field, Router, Schema
from ninja.utils import check_csrf

router = Router(tags=["auth"], auth=None)


class Credentials(Schema):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1)


class NewUser(Credentials):
    email: str = ""


def _error(request: HttpRequest, status: int, message: str, field: str | None = None) -> HttpResponse:
    from llamaproxy.manage_api import error_response

    return error_response(request, status, message, field)


def dashboard_port_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Logins are sessions, and sessions live on the dashboard port: the management API on an
    API port (no session middleware there) takes admin keys only."""

    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if not hasattr(request, "session"):
            return _error(request, 404, "logins are on the dashboard port; send an admin API key here")
        return view(request, *args, **kwargs)

    return guarded


def _csrf_rejected(request: HttpRequest) -> HttpResponse | None:
    """Login and setup change the session, so they need the CSRF token like every form."""
    if check_csrf(request) is not None:
        return _error(request, 403, "CSRF check failed: reload the page and try again")
    return None


def whoami(request: HttpRequest) -> dict[str, Any]:
    user = request.user
    return {
        "authenticated": bool(user.is_authenticated),
        "username": user.get_username() if user.is_authenticated else None,
        "is_staff": bool(user.is_authenticated and user.is_staff),
        "needs_setup": not User.objects.exists(),
        "csrf_token": get_token(request),
    }


@router.get(
    "auth/me", summary="The logged-in user, whether a first user must be created; sets the CSRF cookie"
)
@dashboard_port_only
def me(request: HttpRequest) -> dict[str, Any]:
    return whoami(request)


@router.post("auth/login", summary="Log in with a Django user (staff users manage llamaproxy)")
@dashboard_port_only
def log_in(request: HttpRequest, payload: Credentials) -> Any:
    if (rejected := _csrf_rejected(request)) is not None:
        return rejected
    user = authenticate(request, username=payload.username, password=payload.password)
    if user is None:
        return _error(request, 401, "wrong username or password", "password")
    if not user.is_staff:
        return _error(request, 403, "this user is not staff: ask an admin to grant access", "username")
    login(request, user)
    return whoami(request)


@router.post("auth/logout", summary="Log out")
@dashboard_port_only
def log_out(request: HttpRequest) -> Any:
    if (rejected := _csrf_rejected(request)) is not None:
        return rejected
    logout(request)
    return whoami(request)


@router.post("auth/setup", summary="First run only: create the first (super)user and log in")
@dashboard_port_only
def first_user(request: HttpRequest, payload: NewUser) -> Any:
    if (rejected := _csrf_rejected(request)) is not None:
        return rejected
    try:
        validate_password(payload.password)
    except ValidationError as exc:
        return _error(request, 400, " ".join(exc.messages), "password")
    with transaction.atomic():
        if User.objects.exists():
            return _error(request, 409, "a user already exists: log in instead")
        user = User.objects.create_superuser(payload.username.strip(), payload.email or "", payload.password)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return whoami(request)
