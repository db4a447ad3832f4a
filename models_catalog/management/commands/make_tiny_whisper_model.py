"""`manage.py make_tiny_whisper_model PATH`: a random-weight whisper model for tests and demos."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from models_catalog.tiny_whisper import TinyWhisperError, write_tiny_whisper_model


class Command(BaseCommand):
    help = (
        "Write a tiny random-weight whisper model (whisper.cpp's ggml format, F16) that whisper-server "
        "loads and transcribes with (nonsense text). Borrows the mel filters and the vocabulary from "
        "whisper.cpp's test model, which `install_llama_server --whisper` keeps."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("path", help="output file, e.g. models/ggml-tiny-random.bin")
        parser.add_argument("--english-only", action="store_true", help="an English-only (.en) model")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--donor", default=None, help="the whisper ggml file to borrow filters and vocabulary from"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            path = write_tiny_whisper_model(
                options["path"],
                multilingual=not options["english_only"],
                seed=options["seed"],
                donor=options["donor"],
            )
        except (TinyWhisperError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{path}  {path.stat().st_size / 1e6:.2f} MB")
