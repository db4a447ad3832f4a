"""Scan benchmark: 1,000 GGUF files in a nested folder tree, scanned into a fresh catalog.

Each file is a copy of one header with a realistic 32k-token vocabulary and chat template (the
part a scan reads), so it measures header parsing, not disk size. Prints the first (empty
catalog) and the warm rescan times; the target is under 5 s for the first, warm-cache scan.

    .venv/bin/python bench/bench_scan.py [--files 1000] [--vocab 32000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-scan-"))
    os.environ["LLAMAPROXY_HOME"] = str(work / "home")
    os.environ["LLAMAPROXY_MODELS_DIRS"] = str(work / "models")
    os.environ["LLAMAPROXY_ENV_FILE"] = str(work / "none.env")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamaproxy.settings")
    sys.path.insert(0, str(BASE_DIR))
    try:
        return run(work, args.files, args.vocab)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, count: int, vocab: int) -> int:
    import logging

    import django

    django.setup()
    logging.disable(logging.INFO)
    from django.core.management import call_command

    from models_catalog.discovery import scan_models
    from models_catalog.testing import TOOLS_TEMPLATE, write_gguf_header

    call_command("migrate", verbosity=0)
    models = work / "models"
    template = write_gguf_header(
        work / "template.gguf",
        chat_template=TOOLS_TEMPLATE,
        vocabulary=vocab,
        extra={"tokenizer.ggml.pre": "qwen2"},
    )
    for index in range(count):
        target = (
            models
            / f"publisher-{index % 20:02d}"
            / f"Model-{index:04d}-GGUF"
            / f"model-{index:04d}-Q4_K_M.gguf"
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)
    size = template.stat().st_size
    # Warm: the files were just written, so they are in the page cache (a scan of a library in use).
    started = time.perf_counter()
    first = scan_models()
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    again = scan_models()
    again_seconds = time.perf_counter() - started
    started = time.perf_counter()
    forced = scan_models(force=True)
    forced_seconds = time.perf_counter() - started

    print(
        f"{count} GGUF files of {size / 1e6:.2f} MB (vocabulary {vocab} tokens) in {count // 50 + 20} folders"
    )
    print(f"first scan (empty catalog):     {first_seconds:6.2f} s  ({len(first.added)} added)")
    print(f"rescan, nothing changed:        {again_seconds:6.2f} s  ({again.unchanged} unchanged)")
    print(
        f"rescan, every header re-read:   {forced_seconds:6.2f} s  ({len(forced.updated) + forced.unchanged} checked)"
    )
    ok = first_seconds < TARGET_SECONDS and len(first.added) == count
    print(f"target < {TARGET_SECONDS:.0f} s: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
