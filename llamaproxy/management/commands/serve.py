"""`manage.py serve`: Redis (embedded unless REDIS_URL), the Celery worker with beat, daphne on
every enabled port; Ctrl-C or SIGTERM stops them all, runners included."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from llamaproxy.manage_api import local_admin_token
from llamaproxy.supervisor import ChildDied, Supervisor, busy_ports, face_urls

FACE_TITLES = {
    "dashboard": "Dashboard, admin, manage API",
    "api": "OpenAI API",
    "ollama": "Ollama API",
    "lmstudio": "LM Studio API",
}


class Command(BaseCommand):
    help = "Start llamaproxy: Redis, the Celery worker with beat, and the gateway on every port."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--debug", action="store_true", help="verbose logs from every process")
        parser.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard port")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["no_dashboard"]:
            os.environ["LLAMAPROXY_DASHBOARD_PORT"] = "0"
            settings.LLAMAPROXY_PORTS["dashboard"] = 0
        if not any(settings.LLAMAPROXY_PORTS.values()):
            raise CommandError("every port is turned off; nothing to serve")
        problems = busy_ports()
        if problems:
            raise CommandError("; ".join(problems))
        if options["debug"]:
            os.environ["LLAMAPROXY_DEBUG"] = "true"

        call_command("migrate", interactive=False, verbosity=0)
        local_admin_token()  # written now so local `manage.py` commands can reach the gateway
        supervisor = Supervisor(debug=options["debug"])
        stop = threading.Event()
        received: list[str] = []

        def on_signal(signum: int, _frame: object) -> None:
            received.append(signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        exit_code = 0
        try:
            if settings.REDIS_EMBEDDED:
                supervisor.start_redis()
            supervisor.start_worker()
            supervisor.start_gateway()
            status, body = supervisor.wait_for_gateway()
            self.print_banner(status, body)
            while not stop.wait(0.5):
                supervisor.raise_if_child_died()
        except ChildDied as exc:
            self.stderr.write(f"llamaproxy: {exc}; stopping everything")
            exit_code = 1
        except Exception as exc:  # start-up failed: say why, then clean up what did start
            self.stderr.write(f"llamaproxy: {exc}")
            exit_code = 1
        finally:
            self.stdout.write(f"Stopping llamaproxy{' (' + received[0] + ')' if received else ''}...")
            supervisor.stop_all()
            self.stdout.write("Stopped.")
        if exit_code:
            raise SystemExit(exit_code)

    def print_banner(self, status: int, body: dict) -> None:
        self.stdout.write(self.style.SUCCESS("llamaproxy is running"))
        for face, url in face_urls().items():
            self.stdout.write(f"  {FACE_TITLES[face]:<30} {url}")
        redis_where = (
            "embedded, " + str(settings.REDIS_SOCKET) if settings.REDIS_EMBEDDED else settings.REDIS_URL
        )
        self.stdout.write(f"  {'Redis':<30} {redis_where}")
        self.stdout.write(f"  {'Data':<30} {settings.LLAMAPROXY_HOME}")
        self.stdout.write(f"  {'Logs':<30} {settings.LOG_DIR}")
        if status != 200:
            failing = ", ".join(body.get("failing", []))
            self.stdout.write(self.style.WARNING(f"  health: {failing} not ready (see /health)"))
        self.stdout.write("Press Ctrl-C to stop.")
