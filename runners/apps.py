import os
import sys

from django.apps import AppConfig


class RunnersConfig(AppConfig):
    name = "runners"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # daphne has no ASGI lifespan: in the gateway, reconcile and preload as soon as its
        # event loop runs (daphne.server creates that loop before it imports the application).
        if os.environ.get("LLAMAPROXY_PROCESS") == "gateway" and "daphne.server" in sys.modules:
            from runners.scheduler import schedule_startup

            schedule_startup(sys.modules["daphne.server"].twisted_loop)
