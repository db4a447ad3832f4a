"""`manage.py llama MODEL`: run one model's llama-server in the foreground on port 8035, bare,
with the same arguments the scheduler would use (for people who want to poke at it directly)."""

from __future__ import annotations

import signal
import subprocess
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from models_catalog.lookup import resolve_name
from models_catalog.models import CatalogModel, ModelAlias
from runners.arguments import RunnerConfigError, runner_args

DEFAULT_PORT = 8035


class Command(BaseCommand):
    help = "Run one catalog model's llama-server in the foreground (default port 8035)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("model", help="catalog name or alias")
        parser.add_argument("--port", type=int, default=DEFAULT_PORT)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--print", action="store_true", help="print the command line instead of running it"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        names = set(CatalogModel.objects.values_list("name", flat=True))
        aliases = dict(ModelAlias.objects.values_list("alias", "model__name"))
        name = resolve_name(options["model"], names, aliases)
        if name is None:
            raise CommandError(f"model '{options['model']}' not found (see `manage.py runners status`)")
        model = CatalogModel.objects.get(name=name)
        settings_row = getattr(model, "settings", None) if hasattr(model, "settings") else None
        try:
            command = runner_args(model, settings_row, host=options["host"], port=options["port"])
        except RunnerConfigError as exc:
            raise CommandError(str(exc)) from None
        if options["print"]:
            self.stdout.write(subprocess.list2cmdline(command))
            return
        self.stdout.write(f"{name} on http://{options['host']}:{options['port']} (Ctrl-C stops it)")
        proc = subprocess.Popen(command)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            code = proc.wait()
        if code not in (0, -signal.SIGINT, -signal.SIGTERM):
            raise SystemExit(code if code > 0 else 128 - code)
