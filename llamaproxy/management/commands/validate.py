"""`manage.py validate`: the system checks and the live parts, as a readable report."""

from __future__ import annotations

from typing import Any

import httpx
import redis
from django.conf import settings
from django.core.checks import ERROR, run_checks
from django.core.management.base import BaseCommand

from llamaproxy.checks import RUNTIME
from llamaproxy.health import redis_client
from llamaproxy.supervisor import busy_ports, face_urls


class Command(BaseCommand):
    help = "Check the llama-server binary, model folders, ports, Redis and the worker."
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.failures = 0
        self.stdout.write("llamaproxy system validation\n")

        for message in run_checks(include_deployment_checks=True, tags=[RUNTIME]):
            ok = message.level < ERROR
            self.report(ok, message.msg + (f" {message.hint}" if message.hint else ""), warn=ok)
        self.report_binary()
        self.report_models()
        running = self.report_ports()
        self.report_redis()
        self.report_worker(running)

        if self.failures:
            self.stdout.write(self.style.ERROR(f"\n{self.failures} problem(s) found."))
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS("\nAll checks passed."))

    def report(self, ok: bool, text: str, warn: bool = False) -> None:
        if ok and not warn:
            self.stdout.write(f"  {self.style.SUCCESS('OK  ')} {text}")
        elif ok:
            self.stdout.write(f"  {self.style.WARNING('WARN')} {text}")
        else:
            self.failures += 1
            self.stdout.write(f"  {self.style.ERROR('FAIL')} {text}")

    def report_binary(self) -> None:
        from runners.provisioning import binary_version, installed_binary

        binary = installed_binary("llama-server")
        if binary is not None:
            self.report(True, f"llama-server {binary_version(binary)} at {binary}")

    def report_models(self) -> None:
        for folder in settings.LLAMAPROXY_MODELS_DIRS:
            if folder.is_dir():
                count = sum(1 for _ in folder.rglob("*.gguf"))
                self.report(True, f"model folder {folder}: {count} GGUF file(s)")

    def report_ports(self) -> bool:
        """True when llamaproxy itself is already serving (its ports are then busy, rightly)."""
        urls = face_urls()
        first = next(iter(urls.values()))
        try:
            body = httpx.get(f"{first}/health", timeout=3).json()
            if "components" in body:
                self.report(True, f"llamaproxy is running ({', '.join(urls.values())})")
                return True
        except (httpx.HTTPError, ValueError):
            pass
        problems = busy_ports()
        for problem in problems:
            self.report(False, problem)
        if not problems:
            ports = ", ".join(f"{face} {port}" for face, port in settings.CONFIG.enabled_faces().items())
            self.report(True, f"ports free: {ports}")
        return False

    def report_redis(self) -> None:
        try:
            redis_client().ping()
            self.report(True, f"Redis answers at {settings.REDIS_URL}")
        except redis.RedisError as exc:
            if settings.REDIS_EMBEDDED:
                from llamaproxy.redis_server import redis_server_binary

                try:
                    self.report(
                        True, f"embedded Redis not running (serve starts {redis_server_binary()})", warn=True
                    )
                except FileNotFoundError as missing:
                    self.report(False, str(missing))
            else:
                self.report(False, f"Redis at {settings.REDIS_URL} does not answer: {exc}")

    def report_worker(self, running: bool) -> None:
        import time

        try:
            raw = redis_client().get(settings.WORKER_HEARTBEAT_KEY)
        except redis.RedisError:
            raw = None
        age = time.time() - float(raw) if raw else None
        if age is not None and age < settings.WORKER_HEARTBEAT_TTL:
            self.report(True, f"Celery worker alive (heartbeat {age:.1f}s ago)")
        elif running:
            self.report(False, "Celery worker: no recent heartbeat while llamaproxy is running")
        else:
            self.report(True, "Celery worker not running (serve starts it)", warn=True)
