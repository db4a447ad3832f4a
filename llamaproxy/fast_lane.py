"""The relay's busiest routes, dispatched without URL resolving, middleware or django-ninja's
operation wrapper (together about a tenth of the gateway's CPU per request).

The table is derived from the URLconfs themselves at start-up: for every API port, each of
FAST_PATHS is resolved as Django would, and it is taken into the lane only when it lands on a
POST operation of one of FAST_VIEWS. A route that resolves elsewhere (another face's own
handler, or django-ninja internals that changed) simply stays on the normal path, which
remains the reference: the lane calls the same view, sets what the face middleware sets, and
turns exceptions into responses with the same django-ninja API the view belongs to.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve, set_urlconf

log = logging.getLogger(__name__)

FAST_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages")


@dataclass(frozen=True)
class Lane:
    face: str
    urlconf: str
    view: Callable[[HttpRequest], Awaitable[HttpResponseBase]]
    api: Any  # the NinjaAPI whose exception handlers the normal path would apply


def fast_views() -> set[Callable]:
    from proxies import llama_endpoints, openai_face

    return {
        openai_face.chat_completions,
        openai_face.completions,
        openai_face.embeddings,
        llama_endpoints.responses,
        llama_endpoints.messages,
    }


def _post_operation(resolved_view: Callable) -> Any:
    """The django-ninja operation a resolved URL runs for POST, or None."""
    from ninja.operation import PathView

    for cell in getattr(resolved_view, "__closure__", None) or ():
        path_view = cell.cell_contents
        if isinstance(path_view, PathView):
            return path_view._find_operation(SimpleNamespace(method="POST"))
    return None


def build_routes(ports: dict[str, int]) -> dict[tuple[str, str], Lane]:
    """`(server port, path)` → Lane, for the API faces' ports."""
    views = fast_views()
    routes: dict[tuple[str, str], Lane] = {}
    for face, port in ports.items():
        if not port or face == "dashboard":
            continue
        urlconf = settings.FACE_URLCONFS[face]
        for path in FAST_PATHS:
            try:
                match = resolve(path, urlconf)
            except Resolver404:
                continue
            operation = _post_operation(match.func)
            if operation is not None and operation.view_func in views and not match.kwargs:
                routes[(str(port), path)] = Lane(face, urlconf, operation.view_func, operation.api)
    return routes


class FastLane:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Lane] | None = None

    @property
    def routes(self) -> dict[tuple[str, str], Lane]:
        if self._routes is None:
            self._routes = build_routes(settings.LLAMAPROXY_PORTS)
            log.debug("fast lane: %s", sorted(self._routes))
        return self._routes

    def lane(self, request: HttpRequest) -> Lane | None:
        if request.method != "POST":
            return None
        return self.routes.get((request.META.get("SERVER_PORT", ""), request.path_info))

    async def run(self, lane: Lane, request: HttpRequest) -> HttpResponseBase:
        request.urlconf = lane.urlconf
        request.face = lane.face
        try:
            return await lane.view(request)
        except Exception as exc:
            try:  # as django-ninja's operation does...
                return lane.api.on_exception(request, exc)
            except Exception as unhandled:  # ...and then Django's handler, for what it re-raises
                set_urlconf(lane.urlconf)  # whose handler500 is the face's
                return await sync_to_async(response_for_exception, thread_sensitive=False)(request, unhandled)


fast_lane = FastLane()
