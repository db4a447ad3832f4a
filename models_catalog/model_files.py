"""Model files on disk: walking folders, grouping split GGUF parts, naming, pairing mmproj files.

Pure filesystem logic with no database, so the scan's rules are testable on their own.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from models_catalog.whisper_metadata import looks_like_whisper_model

SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
WHISPER_MAGIC_BYTES = b"lmgg"  # 0x67676d6c little-endian: whisper.cpp's legacy ggml format


@dataclass
class ModelFileGroup:
    """One model on disk: a single file or the parts of a split model (`path` = the first part)."""

    path: str
    parts: list[str]
    error: str = ""  # e.g. a split model with a part missing

    @property
    def directory(self) -> str:
        return os.path.dirname(self.path)


@dataclass
class FolderContents:
    models: list[ModelFileGroup] = field(default_factory=list)
    projectors: list[str] = field(default_factory=list)  # mmproj files, by name
    errors: list[str] = field(default_factory=list)  # folders that could not be read


def model_name_for_file(path: str | Path) -> str:
    """The catalog name a file gets: its lowercase stem without `.gguf` or the split suffix."""
    name = Path(path).name
    match = SPLIT_RE.match(name)
    stem = match["stem"] if match else name
    for suffix in (".gguf", ".bin"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    stem = re.sub(r"[\s:/\\]+", "-", stem.strip().lower())
    return stem or "model"


def is_projector_name(path: str | Path) -> bool:
    return "mmproj" in Path(path).name.lower()


def find_model_files(root: Path) -> FolderContents:
    """Every GGUF (and whisper ggml) model below `root`, split parts grouped; hidden folders skipped."""
    contents = FolderContents()
    single: list[str] = []
    splits: dict[tuple[str, str, int], dict[int, str]] = defaultdict(dict)
    seen_dirs: set[str] = set()

    def on_error(exc: OSError) -> None:
        contents.errors.append(f"{exc.filename}: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop, or a folder reached twice
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            lower = filename.lower()
            full = os.path.join(dirpath, filename)
            if lower.endswith(".gguf"):
                if is_projector_name(filename):
                    contents.projectors.append(full)
                elif match := SPLIT_RE.match(filename):
                    key = (dirpath, match["stem"], int(match["total"]))
                    splits[key][int(match["index"])] = full
                else:
                    single.append(full)
            elif lower.endswith(".bin") and _has_whisper_magic(full):
                single.append(full)
    contents.models = [ModelFileGroup(path, [path]) for path in single]
    contents.models += [
        _split_group(dirpath, stem, total, parts) for (dirpath, stem, total), parts in splits.items()
    ]
    contents.models.sort(key=lambda group: group.path)
    return contents


def _split_group(dirpath: str, stem: str, total: int, parts: dict[int, str]) -> ModelFileGroup:
    first = parts.get(1) or os.path.join(dirpath, f"{stem}-00001-of-{total:05d}.gguf")
    ordered = [parts[i] for i in sorted(parts)]
    missing = [str(i) for i in range(1, total + 1) if i not in parts]
    error = f"split model incomplete: part {', '.join(missing)} of {total} missing" if missing else ""
    return ModelFileGroup(first, ordered, error)


def split_parts(path: str) -> list[str]:
    """The existing parts of the split model whose first part is `path` (just `path` for a single file)."""
    match = SPLIT_RE.match(os.path.basename(path))
    if not match:
        return [path]
    directory, total = os.path.dirname(path), int(match["total"])
    parts = [
        os.path.join(directory, f"{match['stem']}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)
    ]
    return [p for p in parts if os.path.exists(p)]


def _has_whisper_magic(path: str) -> bool:
    """A whisper.cpp speech-to-text model (its voice-activity models share the magic: skipped)."""
    try:
        with open(path, "rb") as handle:
            return looks_like_whisper_model(handle.read(64))
    except OSError:
        return False


def pair_projector(model_path: str, projectors: list[str]) -> str:
    """The mmproj file in the model's own folder that belongs to it, or ''.

    One projector in the folder serves every model there (several quantizations of one model
    usually share it); with several, the one whose name shares the longest prefix with the model's wins.
    """
    directory = os.path.dirname(model_path)
    candidates = sorted(p for p in projectors if os.path.dirname(p) == directory)
    if len(candidates) <= 1:
        return candidates[0] if candidates else ""
    model_key = _comparable(model_name_for_file(model_path))
    return max(candidates, key=lambda p: (_common_prefix(model_key, _comparable(Path(p).name)), -len(p)))


def _comparable(name: str) -> str:
    name = re.sub(r"mmproj", "", name.lower())
    return re.sub(r"[^a-z0-9]", "", name.removesuffix(".gguf"))


def _common_prefix(a: str, b: str) -> int:
    length = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        length += 1
    return length
