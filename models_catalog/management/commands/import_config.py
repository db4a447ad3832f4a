"""`manage.py import_config FILE...`: import seed-project or llama-runner config files."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from models_catalog.errors import CatalogError
from models_catalog.importer import import_configs, read_config_files


class Command(BaseCommand):
    help = (
        "Import app_config.json / models_config.json (seed project) or a llama-runner config.json. "
        "Everything is validated first and applied in one transaction: a bad file changes nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE")
        parser.add_argument("--dry-run", action="store_true", help="validate only; change nothing")

    def handle(self, *args: Any, files: list[str], dry_run: bool = False, **options: Any) -> None:
        try:
            result = import_configs(read_config_files(files), dry_run=dry_run)
        except CatalogError as exc:
            raise CommandError(f"Nothing imported. {exc}") from None
        for note in result.notes:
            self.stdout.write(self.style.WARNING(f"  note: {note}"))
        if dry_run:
            self.stdout.write(self.style.SUCCESS("The files are valid (dry run: nothing changed)."))
            return
        for label, names in (("created", result.created), ("updated", result.updated)):
            for name in names:
                self.stdout.write(f"  {label}: {name}")
        for folder in result.folders_added:
            self.stdout.write(f"  folder added: {folder}")
        for name, value in result.settings_changed.items():
            shown = "unset (the environment's value)" if value is None else value
            self.stdout.write(f"  limit changed: {name} = {shown}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported: {len(result.created)} created, {len(result.updated)} updated, "
                f"{len(result.unchanged)} unchanged, {len(result.settings_changed)} limits changed "
                f"(backup before import: {result.backup})."
            )
        )
