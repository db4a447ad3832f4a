"""`manage.py make_tiny_model PATH`: write a random-weight llama GGUF model for tests and demos."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from models_catalog.gguf_metadata import POOLING_TYPES
from models_catalog.tiny_model import FILE_TYPES, SIZES, write_tiny_model


class Command(BaseCommand):
    help = "Write a tiny random-weight llama GGUF chat model (ChatML template) that llama-server loads."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("path", help="output .gguf file (with --split, the stem of the shard names)")
        parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
        parser.add_argument("--name", default=None, help="general.name (default: the file stem)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--context-length", type=int, default=None)
        parser.add_argument("--file-type", choices=sorted(FILE_TYPES), default=None)
        parser.add_argument("--split", type=int, default=1, help="write N shards, as gguf-split does")
        parser.add_argument(
            "--pooling",
            choices=sorted(POOLING_TYPES),
            default=None,
            help="declare an embedding model pooled this way (rank: a reranker)",
        )
        parser.add_argument(
            "--tool-caller",
            action="store_true",
            help="a model that calls a tool whenever it is offered one (Hermes-style tools template; tiny size)",
        )
        parser.add_argument(
            "--fim",
            action="store_true",
            help="give it Qwen-style fill-in-the-middle tokens, for /infill and Ollama's suffix",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            paths = write_tiny_model(
                options["path"],
                size=options["size"],
                name=options["name"],
                seed=options["seed"],
                context_length=options["context_length"],
                file_type=options["file_type"],
                split=options["split"],
                pooling=options["pooling"],
                tool_caller=options["tool_caller"],
                fim=options["fim"],
            )
        except (ValueError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        for path in paths:
            self.stdout.write(f"{path}  {path.stat().st_size / 1e6:.2f} MB")
