"""ASGI entry point: one daphne process serves every face; the local port picks the URLconf.

API faces (OpenAI, Ollama, LM Studio) run through a lean handler whose only middleware is the
face router, so the relay hot path never hops into a thread for session/CSRF middleware.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamaproxy.settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django import db  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from llamaproxy.routing import websocket_urlpatterns  # noqa: E402

LEAN_MIDDLEWARE = ["llamaproxy.middleware.FaceRoutingMiddleware"]


class LeanASGIHandler(ASGIHandler):
    """Django's handler with a reduced middleware stack (API faces authenticate by key)."""

    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=LEAN_MIDDLEWARE):
            super().load_middleware(is_async=is_async)


# Django's per-request database housekeeping is synchronous, so each of these receivers would
# cost every request a hop into a thread. The gateway keeps its SQLite connections open
# instead (one per thread, WAL mode), which is also cheaper.
signals.request_started.disconnect(db.close_old_connections)
signals.request_started.disconnect(db.reset_queries)
signals.request_finished.disconnect(db.close_old_connections)

lean_app = LeanASGIHandler()
api_ports = {port for face, port in settings.LLAMAPROXY_PORTS.items() if port and face != "dashboard"}


async def http_app(scope, receive, send):
    server = scope.get("server") or (None, None)
    if server[1] in api_ports:
        return await lean_app(scope, receive, send)
    return await django_app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
