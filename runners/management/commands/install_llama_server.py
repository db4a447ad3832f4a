"""`manage.py install_llama_server [--whisper] [--force] [--print-path]`.

Builds llama-server (or whisper-server) from the pinned sources once per CPU and installs it into
the data dir; later calls, and fresh clones with a warm build cache, return at once.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper

from runners.provisioning import (
    LLAMA_SERVER,
    WHISPER_SERVER,
    ProvisioningError,
    binary_version,
    configured_setting,
    ensure_binary,
    parse_progress,
    spec_for,
)


class ProgressPrinter:
    """One compact line for the build's `[ NN%]` lines; every other message on its own line.

    On a terminal the percentage line is rewritten in place; in a log (CI) a line is written only
    when the percentage changes, so the whole build stays about a hundred lines.
    """

    def __init__(self, stream: OutputWrapper, kind: str) -> None:
        self.stream = stream
        self.kind = kind
        self.tty = stream.isatty()
        self.last_percent: int | None = None
        self.open_line = False

    def __call__(self, message: str) -> None:
        percent = parse_progress(message)
        if percent is None:
            self._end_line()
            self._write(f"{self.kind}: {message}\n")
        elif self.tty:
            self._write(f"\r\x1b[K{self.kind}: {message[:100]}")
            self.open_line = True
        elif percent != self.last_percent:
            self._write(f"{self.kind}: {message}\n")
        if percent is not None:
            self.last_percent = percent
        self.stream.flush()

    def _write(self, text: str) -> None:
        self.stream.write(text, ending="")

    def _end_line(self) -> None:
        if self.open_line:
            self._write("\n")
            self.open_line = False

    def finish(self) -> None:
        self._end_line()
        self.stream.flush()


class Command(BaseCommand):
    help = (
        "Build llama-server (or whisper-server with --whisper) from the pinned llama.cpp sources for "
        "this CPU, once, and install it into the data dir. Instant when already built."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--whisper", action="store_true", help="whisper-server instead of llama-server")
        parser.add_argument("--force", action="store_true", help="rebuild even if a binary is cached")
        parser.add_argument(
            "--print-path",
            action="store_true",
            help="print only the binary's path on stdout (progress goes to stderr); for scripts",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        kind = WHISPER_SERVER if options["whisper"] else LLAMA_SERVER
        print_path: bool = options["print_path"]
        # With --print-path, stdout carries the path alone so that `$(… --print-path)` works.
        chatter = self.stderr if print_path else self.stdout
        configured = configured_setting(kind)
        if configured is not None and not print_path:
            note = " (--force ignored)" if options["force"] else ""
            chatter.write(f"{spec_for(kind).setting} is set: using {configured}, nothing to build{note}")
        progress = ProgressPrinter(chatter, kind)
        try:
            binary = ensure_binary(kind, progress=progress, force=options["force"])
            version = binary_version(binary)
        except ProvisioningError as exc:
            progress.finish()
            raise CommandError(f"{kind} could not be provided: {exc}") from exc
        progress.finish()
        if print_path:
            self.stdout.write(str(binary))
        else:
            self.stdout.write(self.style.SUCCESS(f"{kind} {version}: {binary}"))
