from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from llamaproxy.health import collect_health
from llamaproxy.http_errors import client_error, method_not_allowed_with

ASSET_CACHE = "public, max-age=31536000, immutable"  # Vite puts a content hash in each name


async def health(request: HttpRequest) -> JsonResponse:
    healthy, body = await collect_health()
    body["face"] = getattr(request, "face", "dashboard")
    return JsonResponse(body, status=200 if healthy else 503)


def _file_under(root: Path, relative: str) -> Path | None:
    """`root/relative` when it is a file inside root (no `..`, no symlink out of it)."""
    try:
        base = root.resolve()
        target = (base / relative).resolve()
    except (OSError, ValueError):
        return None
    if not target.is_relative_to(base) or not target.is_file():
        return None
    return target


@csrf_exempt  # (it only reads: any other method is a 405, not a CSRF page)
@require_safe
def dashboard_index(request: HttpRequest, path: str = "") -> HttpResponse:
    """The Vue app for every client-side route (and the few files at the top of dist/);
    without a build, a page that says how to reach the rest."""
    dist = Path(settings.FRONTEND_DIST)
    if path and "/" not in path and path != "index.html":
        top_file = _file_under(dist, path)
        if top_file is not None:
            return FileResponse(top_file.open("rb"))
    index = dist / "index.html"
    if index.is_file():
        response = FileResponse(index.open("rb"), content_type="text/html; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        return response
    return render(request, "llamaproxy/no_frontend.html", {"ports": settings.LLAMAPROXY_PORTS})


def frontend_asset(request: HttpRequest, path: str) -> HttpResponse:
    """The built JS/CSS (`frontend/dist/assets/...`), safe against path traversal."""
    target = _file_under(Path(settings.FRONTEND_DIST) / "assets", path)
    if target is None:
        raise Http404("no such asset")
    response = FileResponse(target.open("rb"))
    response["Cache-Control"] = ASSET_CACHE
    return response


async def _playground_refusal(request: HttpRequest) -> HttpResponse | None:
    """The Playground's gate, in OpenAI's error shape: POST, from a staff user logged in to the
    dashboard, with the CSRF token (checked here rather than by the middleware, whose refusal
    is an HTML page); a request let through is recorded under the "playground" face."""
    from ninja.utils import check_csrf

    from proxies.openai_face import openai_error

    if request.method != "POST":
        return openai_error(405, "use POST")
    user = await request.auser()
    if not (user.is_authenticated and user.is_staff):
        return openai_error(401, "log in to the dashboard first")
    if check_csrf(request) is not None:
        return openai_error(403, "CSRF check failed: reload the dashboard and try again")
    request.face = "playground"
    return None


@csrf_exempt  # (checked by _playground_refusal)
async def playground_chat(request: HttpRequest) -> HttpResponse:
    """The Playground's chat: the OpenAI face's chat completions behind the dashboard login, so the
    browser needs no API key and no CORS (and the CSRF token is checked, as for any form)."""
    from proxies.gateway import (
        FaceError,
        acquire_runner,
        apply_sampling_defaults,
        new_context,
        record_failure,
        resolve_model,
    )
    from proxies.openai_face import face_error_response, parse_body, send_to_runner
    from proxies.openai_schemas import ChatCompletionRequest

    if (refusal := await _playground_refusal(request)) is not None:
        return refusal
    ctx = new_context(request, "chat/completions")
    try:
        payload, parsed = parse_body(request, ChatCompletionRequest)
        ctx.stream = bool(getattr(parsed, "stream", False))
        model = await resolve_model(parsed.model, None)
        payload["model"] = model.name
        apply_sampling_defaults(payload, model, path="/v1/chat/completions")
        lease = await acquire_runner(model, ctx)
    except FaceError as exc:
        record_failure(ctx, exc)
        return face_error_response(exc)
    body = json.dumps(payload).encode()
    return await send_to_runner(
        lease, ctx, "POST", "/v1/chat/completions", body, {"content-type": "application/json"}
    )


@csrf_exempt  # (checked by _playground_refusal)
async def playground_audio(request: HttpRequest, task: str) -> HttpResponse:
    """The Playground's audio box: the OpenAI face's /v1/audio/transcriptions and /translations
    behind the dashboard login (with the CSRF token, as for the chat)."""
    from proxies.audio import audio_endpoint

    if (refusal := await _playground_refusal(request)) is not None:
        return refusal
    return await audio_endpoint(request, translate=task == "translations", authorized=True)


# The dashboard port's error pages: its JSON routes (/api/...) answer in the management API's
# shape, the rest (the app's pages, the admin) with Django's own pages.


def _manage_error(request: HttpRequest, status: int, message: str) -> HttpResponse:
    from llamaproxy.manage_api import error_response

    return error_response(request, status, message)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return _manage_error(request, 404, f"unknown endpoint {request.method} {request.path}")
    if request.path.startswith("/v1/"):  # an OpenAI client given the dashboard's port
        api_port = settings.LLAMAPROXY_PORTS.get("api")
        where = f"the OpenAI API is on port {api_port}" if api_port else "the OpenAI API port is turned off"
        return _manage_error(request, 404, f"this is the dashboard's port: {where}")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """A failure of ours (logged with its traceback by Django): JSON on the API paths too."""
    if _is_api(request):
        return _manage_error(request, 500, "internal error in llamaproxy; see logs/gateway.log")
    return defaults.server_error(request)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return _manage_error(request, *client_error(exception))
    return defaults.bad_request(request, exception)


_api_method_not_allowed = method_not_allowed_with(_manage_error)


def method_not_allowed(request: HttpRequest, refused: HttpResponse) -> HttpResponse:
    return _api_method_not_allowed(request, refused) if _is_api(request) else refused
