from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from llamaproxy.health import collect_health


async def health(request: HttpRequest) -> JsonResponse:
    healthy, body = await collect_health()
    body["face"] = getattr(request, "face", "dashboard")
    return JsonResponse(body, status=200 if healthy else 503)


def dashboard_index(request: HttpRequest) -> HttpResponse:
    """The built Vue app when there is one; otherwise a page that says how to reach the rest."""
    index = settings.FRONTEND_DIST / "index.html"
    if index.is_file():
        return FileResponse(index.open("rb"), content_type="text/html")
    return render(request, "llamaproxy/no_frontend.html", {"ports": settings.LLAMAPROXY_PORTS})
