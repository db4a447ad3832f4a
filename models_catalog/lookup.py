"""How a `model` string from a client finds a catalog entry: name, alias, or either with a tag.

Ollama clients append `:latest` (or another tag) to names; LM Studio clients may send a
publisher prefix. Pure, so the gateway can resolve against its in-memory snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping


def resolve_name(
    requested: str, names: Mapping[str, object] | set[str], aliases: Mapping[str, str]
) -> str | None:
    """The catalog name `requested` refers to, or None."""
    candidates = [requested.strip()]
    base, sep, tag = candidates[0].rpartition(":")
    if sep and base and "/" not in tag:
        candidates.append(base)  # "name:latest" → "name"
    for candidate in candidates:
        if candidate in names:
            return candidate
        if candidate in aliases:
            return aliases[candidate]
    lowered = {n.lower(): n for n in names}
    for candidate in candidates:
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None
