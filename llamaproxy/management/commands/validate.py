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
    help = "Check the llama-server and whisper-server binaries, model folders, ports, Redis and the worker."
    requires_system_checks: list[str] = []

    def handle(self, *args: Any, **options: Any) -> None:
        self.failures = 0
        self.stdout.write("llamaproxy system validation\n")

        for message in run_checks(include_deployment_checks=True, tags=[RUNTIME]):
            ok = message.level < ERROR
            self.report(ok, message.msg + (f" {message.hint}" if message.hint else ""), warn=ok)
        self.report_binary()
        self.report_whisper_server()
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
        from runners.provisioning import (
            LLAMA_SERVER,
            ProvisioningError,
            binary_version,
            configured_setting,
            current_backend,
            installed_binary,
        )

        binary = installed_binary(LLAMA_SERVER)
        if binary is not None:
            self.report(True, f"llama-server {binary_version(binary)} at {binary}")
        if configured_setting(LLAMA_SERVER) is not None:
            return  # a binary of the user's own: no build backend applies
        try:
            backend = current_backend()
        except ProvisioningError as exc:
            self.report(False, f"build backend: {exc}")
            return
        self.report(True, f"build backend: {backend.note or backend.name}")

    def report_whisper_server(self) -> None:
        """Only speech-to-text needs whisper-server: its absence is a warning, never a failure."""
        from runners.provisioning import (
            WHISPER_SERVER,
            ProvisioningError,
            binary_version,
            configured_setting,
            installed_binary,
        )

        binary = installed_binary(WHISPER_SERVER)
        if binary is None:
            configured = configured_setting(WHISPER_SERVER)
            problem = (
                f"LLAMAPROXY_WHISPER_SERVER ({configured}) is not an executable file"
                if configured
                else "not installed"
            )
            self.report(
                True,
                f"whisper-server {problem}: whisper (speech-to-text) models cannot run. "
                "Run `python manage.py install_llama_server --whisper`, or set LLAMAPROXY_WHISPER_SERVER.",
                warn=True,
            )
            return
        try:
            self.report(True, f"whisper-server {binary_version(binary)} at {binary}")
        except ProvisioningError as exc:
            self.report(True, f"whisper-server at {binary} does not run: {exc}", warn=True)

    def report_models(self) -> None:
        """What a scan would find in each folder, counted by the scan's own rules."""
        from models_catalog.model_files import find_model_files

        for folder in settings.LLAMAPROXY_MODELS_DIRS:
            if not folder.is_dir():
                continue  # the system checks warn about it
            contents = find_model_files(folder)
            whisper = sum(1 for group in contents.models if not group.path.lower().endswith(".gguf"))
            gguf = len(contents.models) - whisper
            found = f"{gguf} GGUF model(s), {whisper} whisper model(s)"
            if contents.projectors:
                found += f", {len(contents.projectors)} mmproj file(s)"
            self.report(True, f"model folder {folder}: {found}")
            for error in contents.errors:
                self.report(True, f"model folder {folder}: cannot read {error}", warn=True)

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
