"""Hugging Face as a source of GGUF models: what a reference names, which files of a repository
make the model it asks for, and fetching them (resumed, verified against their sha256).

`ollama pull hf.co/<user>/<repo>:<quantization>`, LM Studio's download API and the dashboard
all come here (through models_catalog/downloads.py, which runs the downloads as jobs). The
endpoint is `LLAMAPROXY_HF_ENDPOINT` (or Hugging Face's own `HF_ENDPOINT`), so a mirror works;
`LLAMAPROXY_HF_TOKEN` (or `HF_TOKEN`) is sent for gated and private repositories.

The parts that decide (parsing, choosing files) are pure; the HTTP parts take an httpx client.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from models_catalog.model_files import SPLIT_RE

HUB_HOSTS = ("hf.co", "huggingface.co", "www.huggingface.co")
REVISION = "main"
CHUNK = 1024 * 1024
RETRIES = 5

# A repository id: owner/name, letters, digits, '-', '_', '.' (Hugging Face's own rule, loosely).
_REPO = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
_REFERENCE_RE = re.compile(
    rf"^(?:https?://)?(?P<host>{'|'.join(re.escape(h) for h in HUB_HOSTS)})/(?P<repo>{_REPO})"
    r"(?:(?:/(?:blob|resolve)/[^/]+/(?P<file>\S+?\.gguf))|/?)?(?::(?P<tag>[^/:\s]+))?$",
    re.IGNORECASE,
)
_BARE_REPO_RE = re.compile(rf"^(?P<repo>{_REPO})(?::(?P<tag>[^/:\s]+))?$")
# llama.cpp's quantization names as they appear in file names ("Llama-3.2-1B-Instruct-Q4_K_M.gguf").
_QUANT_RE = re.compile(
    r"(?:^|[-_./])(?P<label>(?:UD-)?(?:I?Q\d(?:_[A-Z0-9]+)*|TQ\d_\d|MXFP4(?:_MOE)?|BF16|F16|FP16|F32|FP32))"
    r"(?=$|[-_./])",
    re.IGNORECASE,
)
# Which quantization a reference without one gets: Q4_K_M as Ollama and Hugging Face do, else the
# nearest in size and quality that the repository has.
PREFERRED = (
    "Q4_K_M",
    "Q4_K_S",
    "IQ4_XS",
    "IQ4_NL",
    "Q4_0",
    "Q5_K_M",
    "Q5_K_S",
    "Q5_0",
    "Q6_K",
    "Q8_0",
    "Q3_K_M",
    "Q3_K_L",
    "Q3_K_S",
    "IQ3_M",
    "Q2_K",
    "BF16",
    "F16",
    "F32",
)
PROJECTOR_PREFERRED = ("F16", "BF16", "Q8_0", "F32")


class HubError(Exception):
    """Why a model cannot be had from the hub; `status` is the HTTP status to answer with and
    `field` the request field it is about."""

    def __init__(self, message: str, status: int = 400, field: str = "model") -> None:
        super().__init__(message)
        self.message, self.status, self.field = message, status, field


@dataclass(frozen=True)
class HubRef:
    repo: str  # owner/name
    tag: str = ""  # a quantization ("Q4_K_M") or a file name; "" = the default choice

    @property
    def name(self) -> str:
        """What Ollama calls the model: `hf.co/<repo>:<tag>`, without a tag for the default."""
        return f"hf.co/{self.repo}" + (f":{self.tag}" if self.tag else "")


def parse_reference(text: str, *, bare: bool = False, quantization: str | None = None) -> HubRef | None:
    """The repository and tag `text` names: `hf.co/<owner>/<repo>[:tag]`, `huggingface.co/...`,
    a `https://huggingface.co/<owner>/<repo>` link (also to one `.gguf` file of it) and, with
    `bare`, `<owner>/<repo>[:tag]` (LM Studio's and the dashboard's way). None when `text` names
    no Hugging Face repository. `quantization`, when given, is the tag (LM Studio sends it apart)."""
    text = (text or "").strip()
    match = _REFERENCE_RE.match(text) or (_BARE_REPO_RE.match(text) if bare else None)
    if match is None:
        return None
    groups = match.groupdict()
    repo = groups["repo"]
    if ".." in repo or repo.endswith((".", "-")):
        return None
    tag = (quantization or "").strip() or groups.get("file") or groups.get("tag") or ""
    if tag.lower() == "latest":
        tag = ""
    return HubRef(repo, tag)


@dataclass(frozen=True)
class HubFile:
    path: str  # in the repository
    size: int
    sha256: str = ""  # LFS files' (every GGUF on the hub is one); "" when the hub gives none


@dataclass(frozen=True)
class Choice:
    """One model a repository offers: its file or split parts, and the projector it needs."""

    label: str  # the quantization ("Q4_K_M"), else the file's name
    parts: tuple[HubFile, ...]
    projector: HubFile | None = None

    @property
    def files(self) -> tuple[HubFile, ...]:
        return self.parts + ((self.projector,) if self.projector else ())

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "size": self.size,
            "files": [{"path": f.path, "size": f.size} for f in self.parts],
            "projector": {"path": self.projector.path, "size": self.projector.size}
            if self.projector
            else None,
        }


def quantization_label(path: str) -> str:
    """The quantization a GGUF file's name (or its folder's) states, upper-cased; '' if none."""
    stem = path.rsplit("/", 1)[-1]
    match = SPLIT_RE.match(stem)
    stem = match["stem"] if match else stem.removesuffix(".gguf").removesuffix(".GGUF")
    folder = path.rsplit("/", 1)[0] if "/" in path else ""
    for text in (stem, folder):
        found = [m["label"].upper() for m in _QUANT_RE.finditer(text)]
        if found:
            label = found[-1]
            return {"FP16": "F16", "FP32": "F32"}.get(label, label)
    return ""


def choices(files: list[HubFile]) -> list[Choice]:
    """The models among a repository's files: each GGUF (split parts grouped) with its label, and
    the projector (`mmproj`) beside it, if the repository has one."""
    ggufs = [f for f in files if f.path.lower().endswith(".gguf")]
    projectors = [f for f in ggufs if "mmproj" in f.path.rsplit("/", 1)[-1].lower()]
    groups: dict[tuple[str, str], list[tuple[int, HubFile]]] = {}
    for file in ggufs:
        if file in projectors:
            continue
        folder, _, base = file.path.rpartition("/")
        match = SPLIT_RE.match(base)
        key = (folder, match["stem"] if match else base)
        groups.setdefault(key, []).append((int(match["index"]) if match else 1, file))
    result = []
    for (folder, stem), members in sorted(groups.items()):
        parts = tuple(f for _, f in sorted(members, key=lambda m: m[0]))
        label = quantization_label(parts[0].path) or stem.removesuffix(".gguf")
        result.append(Choice(label, parts, _projector_for(folder, projectors)))
    labels = [c.label.upper() for c in result]
    if len(set(labels)) < len(labels):  # two files with one quantization: tell them apart by name
        result = [
            Choice(c.parts[0].path.rsplit("/", 1)[-1].removesuffix(".gguf"), c.parts, c.projector)
            if labels.count(c.label.upper()) > 1
            else c
            for c in result
        ]
    return result


def _projector_for(folder: str, projectors: list[HubFile]) -> HubFile | None:
    """A projector from the model's folder (else the repository's top), the best kept one first."""
    near = [p for p in projectors if p.path.rpartition("/")[0] == folder] or [
        p for p in projectors if "/" not in p.path
    ]
    if not near:
        return None

    def rank(projector: HubFile) -> tuple[int, str]:
        label = quantization_label(projector.path)
        return (PROJECTOR_PREFERRED.index(label) if label in PROJECTOR_PREFERRED else 99, projector.path)

    return min(near, key=rank)


def default_choice(options: list[Choice]) -> Choice:
    by_label = {c.label.upper(): c for c in options}
    for label in PREFERRED:
        if label in by_label:
            return by_label[label]
    return options[0]


def select(options: list[Choice], ref: HubRef) -> Choice:
    """The choice `ref`'s tag names (a quantization or a file name, in any case), or the default;
    HubError 404 naming what the repository has when nothing matches."""
    if not options:
        raise HubError(f"{ref.repo} has no GGUF model files", status=404)
    if not ref.tag:
        return default_choice(options)
    wanted = ref.tag.strip().lower().removesuffix(".gguf")
    for option in options:
        if option.label.lower() == wanted:
            return option
    for option in options:
        names = {p.path.lower().removesuffix(".gguf") for p in option.parts}
        names |= {n.rsplit("/", 1)[-1] for n in names}
        if wanted in names:
            return option
    available = ", ".join(c.label for c in options)
    raise HubError(f"{ref.repo} has no {ref.tag} file; it has {available}", status=404)


# --- talking to the hub --------------------------------------------------------------------------


def hub_headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": "llamaproxy"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _refusal(response: httpx.Response, repo: str) -> HubError:
    code = response.headers.get("x-error-code", "")
    if code == "GatedRepo" or response.status_code == 403:
        return HubError(
            f"{repo} is gated or private: accept its terms on Hugging Face and set LLAMAPROXY_HF_TOKEN "
            "to a token that may read it",
            status=403,
        )
    if code in ("RepoNotFound", "EntryNotFound", "RevisionNotFound") or response.status_code in (401, 404):
        return HubError(f"no model repository {repo} on Hugging Face (or it is private)", status=404)
    return HubError(f"Hugging Face answered {response.status_code} for {repo}", status=502)


async def list_files(client: httpx.AsyncClient, endpoint: str, repo: str) -> list[HubFile]:
    """Every file of the repository's main revision (the tree API, page by page)."""
    url: str | None = f"{endpoint}/api/models/{repo}/tree/{REVISION}?recursive=true"
    files: list[HubFile] = []
    while url:
        try:
            response = await client.get(url)
        except httpx.HTTPError as exc:
            raise HubError(f"cannot reach {endpoint}: {exc or type(exc).__name__}", status=502) from None
        if response.status_code != 200:
            raise _refusal(response, repo)
        try:
            entries = response.json()
        except ValueError:
            raise HubError(f"{endpoint} did not answer with a file list", status=502) from None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("type") == "file" and is_safe_path(entry.get("path")):
                lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else {}
                size = lfs.get("size", entry.get("size", 0))
                files.append(HubFile(entry["path"], int(size or 0), str(lfs.get("oid") or "")))
        next_link = response.links.get("next", {}).get("url")
        url = str(response.url.join(next_link)) if next_link else None
    return files


def is_safe_path(path: Any) -> bool:
    """Whether a path the hub lists may become a file below the repository's folder here (no
    absolute path, no `..`, no backslash: a hub, or a mirror, cannot write elsewhere)."""
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def file_url(endpoint: str, repo: str, path: str) -> str:
    return f"{endpoint}/{repo}/resolve/{REVISION}/{quote(path)}"


def refusal_of(repo: str) -> Callable[[httpx.Response], HubError]:
    return lambda response: _refusal(response, repo)


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    file: HubFile,
    target: Path,
    progress: Callable[[int], None],
    refused: Callable[[httpx.Response], HubError],
) -> None:
    """Download `file` from `url` to `target`: into `<target>.part` first, going on from what an
    earlier try left there (a Range request) and again after a dropped connection; the whole
    file is checked against its size and sha256 before it takes its name. `progress(bytes so
    far)` is called as it comes; `refused(response)` says why an answer other than the file's
    bytes is an error. (Ollama's registry is fetched from the same way.)"""
    partial = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    have = await asyncio.to_thread(_hash_existing, partial, hasher, file.size)
    progress(have)
    attempt = 0
    while have < file.size or file.size == 0:
        headers = {"Range": f"bytes={have}-"} if have else {}
        try:
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and have:  # the part is already whole
                    break
                if response.status_code not in (200, 206):
                    raise refused(response)
                if response.status_code == 200 and have:  # no ranges here: start over
                    have, hasher = 0, hashlib.sha256()
                    await asyncio.to_thread(partial.write_bytes, b"")
                with partial.open("ab") as out:
                    pending = bytearray()  # written a megabyte at a time, and whatever came before a break
                    try:
                        async for chunk in response.aiter_bytes():
                            pending += chunk
                            if len(pending) >= CHUNK:
                                await asyncio.to_thread(_write, out, hasher, bytes(pending))
                                have += len(pending)
                                pending.clear()
                            progress(have + len(pending))
                    finally:
                        if pending:
                            await asyncio.to_thread(_write, out, hasher, bytes(pending))
                            have += len(pending)
                            progress(have)
            if file.size == 0:
                break
            if have < file.size:
                raise httpx.ReadError("the connection closed before the end of the file")
        except (httpx.TransportError, httpx.DecodingError) as exc:
            attempt += 1
            if attempt > RETRIES:
                raise HubError(
                    f"downloading {file.path} failed: {exc or type(exc).__name__}", status=502
                ) from None
            await asyncio.sleep(min(2 ** (attempt - 1), 8))
    if file.size and have != file.size:
        raise HubError(f"{file.path}: got {have} bytes where the hub lists {file.size}", status=502)
    if file.sha256 and hasher.hexdigest() != file.sha256:
        partial.unlink(missing_ok=True)
        raise HubError(f"{file.path} does not match its sha256 (a damaged transfer): try again", status=502)
    os.replace(partial, target)


def _hash_existing(partial: Path, hasher: Any, size: int) -> int:
    """Feed what an earlier try left in `partial` to `hasher`; its length (a part longer than
    the file is dropped)."""
    try:
        have = partial.stat().st_size
    except FileNotFoundError:
        return 0
    if size and have > size:
        partial.unlink()
        return 0
    with partial.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return have


def _write(out: Any, hasher: Any, chunk: bytes) -> None:
    hasher.update(chunk)
    out.write(chunk)
