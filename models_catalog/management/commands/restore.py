"""`manage.py restore FILE`: make the catalog what a backup says (validated first, atomic)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_catalog.backup import backup_path, load_document, restore_catalog
from models_catalog.errors import CatalogError


class Command(BaseCommand):
    help = "Restore the model catalog from a backup file (a path, or the name of a file in BACKUP_DIR)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", metavar="FILE")

    def handle(self, *args: Any, file: str, **options: Any) -> None:
        try:
            path = Path(file) if Path(file).exists() else backup_path(file)
            counts = restore_catalog(load_document(path))
        except CatalogError as exc:
            raise CommandError(f"Nothing restored. {file}: {exc}") from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Restored {counts['models']} models and {counts['folders']} folders "
                f"({counts['deleted']} entries not in the backup removed; a backup of the catalog before was written)."
            )
        )
