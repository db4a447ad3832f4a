"""Requests refused before any view answers them, in the shape of the face they came to.

Django renders these as HTML pages of its own: a body over the size limit or another bad request
(`handler400`), a method a route does not take (django-ninja's 405). Each face's URLconf names
its renderers, `handler400` as Django looks it up and `handler405`, which FaceRoutingMiddleware
applies to a 405 that carries no body of the face's own.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import import_module

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import get_callable

ErrorRenderer = Callable[[HttpRequest, int, str], HttpResponse]

# SQLite's integers are signed 64-bit: a larger id or offset in a request would fail in the
# database driver, so request schemas bound numbers that reach a query by it.
MAX_DB_INT = 2**63 - 1


def client_error(exception: Exception | None) -> tuple[int, str]:
    """Status and message for what Django turns into a 400 (a SuspiciousOperation)."""
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return 413, f"the request body is larger than {limit} bytes (LLAMAPROXY_MAX_REQUEST_BODY)"
    return 400, f"bad request: {exception}" if exception and str(exception) else "bad request"


def bad_request_with(render: ErrorRenderer) -> Callable[..., HttpResponse]:
    """A `handler400` rendering with `render(request, status, message)`."""

    def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        status, message = client_error(exception)
        return render(request, status, message)

    return bad_request


def method_not_allowed_with(render: ErrorRenderer) -> Callable[[HttpRequest, HttpResponse], HttpResponse]:
    """A `handler405` rendering with `render`; the refusal's Allow header is kept."""

    def method_not_allowed(request: HttpRequest, refused: HttpResponse) -> HttpResponse:
        allowed = refused.get("Allow", "")
        response = render(request, 405, f"{request.method} is not allowed on {request.path}; use {allowed}")
        if allowed:
            response["Allow"] = allowed
        return response

    return method_not_allowed


@cache
def handler405(urlconf: str) -> Callable[[HttpRequest, HttpResponse], HttpResponse] | None:
    dotted = getattr(import_module(urlconf), "handler405", None)
    return get_callable(dotted) if dotted else None


def in_face_shape(request: HttpRequest, urlconf: str, response: HttpResponse) -> HttpResponse:
    """`response`, or for a bare 405 refusal (django-ninja's, text/html) the face's own."""
    if response.status_code == 405 and isinstance(response, HttpResponseNotAllowed):
        handler = handler405(urlconf)
        if handler is not None:
            return handler(request, response)
    return response
