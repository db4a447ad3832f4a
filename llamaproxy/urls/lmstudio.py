"""Port 1234: the LM Studio face, plus the OpenAI routes under /v1."""

from django.urls import path

from llamaproxy import views
from proxies import openai_face
from proxies.lmstudio import views as lmstudio

urlpatterns = [
    path("health", views.health, name="health"),
    path("", lmstudio.api.urls),
    path("", openai_face.api.urls),
]

handler404 = "proxies.openai_face.not_found"
handler500 = "proxies.openai_face.server_error"
handler400 = "proxies.openai_face.bad_request"
handler405 = "proxies.openai_face.method_not_allowed"
