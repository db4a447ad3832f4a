"""Ollama's blobs: the files `ollama create` uploads (`HEAD`/`POST /api/blobs/sha256:<hex>`) before
it names them in `/api/create`'s `files`.

An upload is hashed while it is written to `<LLAMAPROXY_HOME>/blobs/` and kept only when its sha256
is the digest it was sent under. A model created from a GGUF blob is a catalog entry whose file is
the blob itself (as in Ollama's store: creating it again finds the blob and uploads nothing); scans
keep such entries like any file outside the model folders, and deleting the last entry of a blob
deletes the blob.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings

DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
CHUNK = 1024 * 1024


class BlobError(ValueError):
    """A blob that cannot be taken: a malformed digest, content that does not hash to it, or a
    digest nobody uploaded. `status` is the HTTP status Ollama answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def blob_dir() -> Path:
    return Path(settings.LLAMAPROXY_HOME) / "blobs"


def blob_path(digest: str) -> Path:
    """Where the blob `sha256:<hex>` (or Ollama's file spelling `sha256-<hex>`) is kept."""
    return blob_dir() / f"sha256-{_hex(digest)}"


def _hex(digest: str) -> str:
    match = DIGEST_RE.match(digest or "")
    if match is None:
        raise BlobError(f"invalid digest {digest[:80]!r}: expected sha256:<64 hex digits>")
    return match[1]


def is_blob(path: Path) -> bool:
    """Whether `path` is one of the blobs kept here (not a file of the model folders)."""
    return path.parent == blob_dir() and DIGEST_RE.match(path.name) is not None


def find_blob(digest: str) -> Path | None:
    """The file whose sha256 is `digest`: an uploaded blob, or a model file the catalog already
    has (its digest computed and kept, the file unchanged since), so that `ollama create` from
    a GGUF that is already here (`FROM` the path `ollama show --modelfile` printed) uploads
    nothing: the CLI asks with `HEAD /api/blobs/...` before it sends a byte."""
    from models_catalog.models import CatalogModel

    path = blob_path(digest)
    if path.exists():
        return path
    known = CatalogModel.objects.filter(digest=f"sha256:{_hex(digest)}", split_count=1)
    for file, hashed_at in known.values_list("path", "digest_mtime").distinct():
        try:
            if os.stat(file).st_mtime == hashed_at:
                return Path(file)
        except OSError:
            continue
    return None


def store_blob(source: Any, digest: str) -> bool:
    """Write what `source.read(n)` gives into the blob `digest`; True when it was new. The upload
    is hashed as it is written and a mismatch leaves nothing behind."""
    target = blob_path(digest)
    if target.exists():
        return False  # (the body came whole before the view ran: nothing waits on reading it)
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := source.read(CHUNK):
                hasher.update(chunk)
                out.write(chunk)
        if f"sha256-{hasher.hexdigest()}" != target.name:
            raise BlobError(f"digest mismatch: the content's digest is sha256:{hasher.hexdigest()}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return True


def gguf_file(files: dict[str, str]) -> tuple[str, Path]:
    """The one GGUF blob `files` names (file name → digest), with its path (see `find_blob`);
    BlobError otherwise."""
    ggufs = [(name, digest) for name, digest in files.items() if name.lower().endswith(".gguf")]
    if len(ggufs) != 1 or len(files) != 1:
        raise BlobError(
            "files: llamaproxy creates a model from exactly one GGUF file "
            "(safetensors, projectors and split models go into a model folder instead)"
        )
    name, digest = ggufs[0]
    path = find_blob(digest)
    if path is None:
        raise BlobError(f"files: no blob {digest} (upload it with POST /api/blobs/{digest} first)")
    return name, path


def prune_blob(path: str) -> bool:
    """Delete a blob that no catalog entry uses any more; other files are never touched."""
    from models_catalog.models import CatalogModel

    blob = Path(path)
    if not is_blob(blob):
        return False
    if CatalogModel.objects.filter(path=path).exists():
        return False
    blob.unlink(missing_ok=True)
    return True


def adapter_file(digest: str) -> Path:
    """The uploaded LoRA adapter `digest` names (`ollama create` with an ADAPTER); BlobError when
    there is no such blob or it is not a GGUF LoRA adapter."""
    from models_catalog.gguf_header import GGUFHeaderError, read_header

    path = find_blob(digest)
    if path is None:
        raise BlobError(f"adapters: no blob {digest} (upload it with POST /api/blobs/{digest} first)")
    try:
        kv = read_header(path, tensors=False).kv
    except (GGUFHeaderError, OSError):
        kv = {}
    if kv.get("general.type") != "adapter" or kv.get("adapter.type") != "lora":
        raise BlobError(
            "adapters: llamaproxy takes LoRA adapters in GGUF (as convert_lora_to_gguf.py writes them)"
        )
    return path


def prune_adapters(files: list[str]) -> list[str]:
    """Delete the uploaded adapter blobs among `files` that no model's runner loads any more."""
    from models_catalog.models import RunnerSettings
    from models_catalog.parameters import lora_files

    candidates = {file for file in files if is_blob(Path(file))}
    if not candidates:
        return []
    for extra_args in RunnerSettings.objects.values_list("extra_args", flat=True):
        candidates -= set(lora_files(extra_args))
    for file in candidates:
        Path(file).unlink(missing_ok=True)
    return sorted(candidates)
