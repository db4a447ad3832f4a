"""Pick the URLconf of the API face from the local port a request arrived on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from asgiref.sync import markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse

from llamaproxy.http_errors import in_face_shape


def urlconf_for_port(port: int) -> str:
    for face, face_port in settings.LLAMAPROXY_PORTS.items():
        if face_port and face_port == port:
            return settings.FACE_URLCONFS[face]
    return settings.ROOT_URLCONF


class FaceRoutingMiddleware:
    """Async-only so the proxy hot path never hops through a thread."""

    async_capable = True
    sync_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            port = int(request.META.get("SERVER_PORT") or 0)
        except ValueError:
            port = 0
        urlconf = urlconf_for_port(port)
        request.urlconf = urlconf
        request.face = next((f for f, u in settings.FACE_URLCONFS.items() if u == urlconf), "dashboard")
        return in_face_shape(request, urlconf, await self.get_response(request))
