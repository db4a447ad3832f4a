"""Port 8585: the OpenAI face, raw upstream passthrough, metrics, management API, health."""

from django.urls import path

from llamaproxy import views
from llamaproxy.manage_api import api as manage_api
from proxies import llama_endpoints, openai_face

urlpatterns = [
    path("health", views.health, name="health"),
    path("metrics", openai_face.metrics_view, name="metrics"),
    path("upstream/<str:model>/<path:path>", openai_face.upstream_passthrough, name="upstream"),
    path("api/manage/", manage_api.urls),
    path("", openai_face.api.urls),
    path("", llama_endpoints.native_api.urls),  # /completion, /infill, /tokenize ... (this port only)
]

handler404 = "proxies.openai_face.not_found"
handler500 = "proxies.openai_face.server_error"
handler400 = "proxies.openai_face.bad_request"
handler405 = "proxies.openai_face.method_not_allowed"
