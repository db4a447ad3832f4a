"""Port 8080: dashboard (the Vue app and its assets), admin, management API, playground, health."""

from django.contrib import admin
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import path, re_path

from llamaproxy import views
from llamaproxy.manage_api import api as manage_api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/manage/", manage_api.urls),
    path("api/playground/v1/chat/completions", views.playground_chat, name="playground-chat"),
    re_path(r"^api/playground/v1/audio/(?P<task>transcriptions|translations)$", views.playground_audio),
    path("health", views.health, name="health"),
    # The admin's CSS/JS, found in the installed apps (a local service has no separate web server).
    re_path(r"^static/(?P<path>.+)$", serve_static, {"insecure": True}),
    path("assets/<path:path>", views.frontend_asset, name="frontend-asset"),
    path("", views.dashboard_index, name="dashboard"),
    # Client-side routes of the Vue app (/models/x, /activity, ...): everything else that is not
    # a server route gets index.html.
    re_path(r"^(?!admin/|api/|v1/|health$|ws/|static/|assets/)(?P<path>.+)$", views.dashboard_index),
]

handler400 = "llamaproxy.views.bad_request"
handler404 = "llamaproxy.views.not_found"
handler405 = "llamaproxy.views.method_not_allowed"
handler500 = "llamaproxy.views.server_error"
