"""`manage.py backup`: write the catalog and its settings to a timestamped JSON file in the data dir."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from models_catalog.backup import list_backups, write_backup


class Command(BaseCommand):
    help = "Back up the model catalog and runner settings (BACKUP_DIR; the newest BACKUP_KEEP are kept)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--list", action="store_true", help="list the backups instead of writing one")

    def handle(self, *args: Any, list: bool = False, **options: Any) -> None:
        if list:
            for path in list_backups():
                self.stdout.write(str(path))
            return
        path = write_backup(reason="manual")
        self.stdout.write(self.style.SUCCESS(f"Backup written: {path}"))
