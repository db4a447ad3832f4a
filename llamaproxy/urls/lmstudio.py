"""Port 1234: the LM Studio face, plus the OpenAI routes under /v1."""

from django.urls import path

from llamaproxy import views
from proxies import openai_face

urlpatterns = [
    path("health", views.health, name="health"),
    path("", openai_face.api.urls),
]

handler404 = "proxies.openai_face.not_found"
handler500 = "proxies.openai_face.server_error"
