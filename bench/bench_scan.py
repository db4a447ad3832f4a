"""Scan benchmark: 1,000 GGUF files in a nested folder tree, scanned into a fresh catalog.

By default each file is a copy of the tiny random-weight model (`write_tiny_model`, a 512-token
vocabulary); `--vocab N` uses header-only files with an N-token vocabulary and as many merges
instead, closer to real models (a scan's cost is walking the vocabulary strings in the header).
Prints the first (empty catalog) scan, a rescan with nothing changed and a forced re-read;
the target is under 5 s for the first scan with the files in the page cache ("warm").

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
    parser.add_argument("--vocab", type=int, default=0, help="header-only files with this vocabulary size")
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
    logging.disable(logging.CRITICAL)  # no event bus runs here: publishing catalog.changed only warns
    from django.core.management import call_command

    from models_catalog.discovery import scan_models
    from models_catalog.testing import TOOLS_TEMPLATE, write_gguf_header
    from models_catalog.tiny_model import write_tiny_model

    call_command("migrate", verbosity=0)
    models = work / "models"
    if vocab:
        template = write_gguf_header(work / "template.gguf", chat_template=TOOLS_TEMPLATE, vocabulary=vocab)
    else:
        template = write_tiny_model(work / "template.gguf", name="bench")[0]
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

    kind = (
        f"header-only, {vocab}-token vocabulary"
        if vocab
        else "copies of the tiny model, 512-token vocabulary"
    )
    print(f"{count} GGUF files of {size / 1e6:.2f} MB ({kind}) in {count} folders under 20 publisher folders")
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
