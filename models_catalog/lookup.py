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
    candidates = [_hub_spelling(requested.strip())]
    base, sep, tag = candidates[0].rpartition(":")
    if sep and base and "/" not in tag:
        candidates.append(base)  # "name:latest" → "name"
    for candidate in candidates:
        if candidate in names:
            return candidate
        if candidate in aliases:
            return aliases[candidate]
    lowered = {n.lower(): n for n in names}
    lowered_aliases = {a.lower(): n for a, n in aliases.items()}
    for candidate in candidates:
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
        if candidate.lower() in lowered_aliases:
            return lowered_aliases[candidate.lower()]
    return None


_HUB_PREFIXES = ("https://huggingface.co/", "http://huggingface.co/", "huggingface.co/", "https://hf.co/")


def _hub_spelling(name: str) -> str:
    """Ollama takes Hugging Face models as `hf.co/...` or `huggingface.co/...`: one spelling."""
    lowered = name.lower()
    for prefix in _HUB_PREFIXES:
        if lowered.startswith(prefix):
            return "hf.co/" + name[len(prefix) :]
    return name
