"""`manage.py scan_models`: scan the model folders now and print what changed."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from models_catalog.discovery import scan_models


class Command(BaseCommand):
    help = (
        "Scan the model folders (LLAMAPROXY_MODELS_DIRS and folders added in the dashboard) for GGUF files."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--force", action="store_true", help="re-read every file's header, changed or not"
        )

    def handle(self, *args: Any, force: bool = False, **options: Any) -> None:
        result = scan_models(force=force)
        for name in result.added:
            self.stdout.write(f"  + {name}")
        for name in result.missing:
            self.stdout.write(f"  - {name} (file missing; settings kept)")
        for name, error in result.errors.items():
            self.stdout.write(self.style.WARNING(f"  ! {name}: {error}"))
        for folder, error in result.folder_errors.items():
            self.stdout.write(self.style.WARNING(f"  ! folder {folder}: {error}"))
        self.stdout.write(self.style.SUCCESS(f"Scan done: {result.summary()}"))
