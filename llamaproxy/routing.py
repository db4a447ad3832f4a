from django.urls import path

from llamaproxy.consumers import StatusConsumer

websocket_urlpatterns = [path("ws/status", StatusConsumer.as_asgi())]
