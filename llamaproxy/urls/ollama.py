"""Port 11434: the Ollama face, plus the OpenAI routes under /v1."""

from django.urls import path

from llamaproxy import views
from proxies import openai_face
from proxies.ollama import views as ollama

urlpatterns = [
    path("", ollama.root, name="ollama-root"),
    path("health", views.health, name="health"),
    path("", ollama.api.urls),
    path("", openai_face.api.urls),
]

handler404 = "proxies.ollama.views.not_found"
handler500 = "proxies.ollama.views.server_error"
handler400 = "proxies.ollama.views.bad_request"
handler405 = "proxies.ollama.views.method_not_allowed"
