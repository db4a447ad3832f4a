"""Ollama's model registry as a source (`ollama pull llama3.2:1b`): the model library's names,
their manifests, and the layers llamaproxy can use.

A name is `[host/][namespace/]model[:tag]` (namespace `library`, tag `latest` and the host
`LLAMAPROXY_OLLAMA_REGISTRY`, `https://registry.ollama.ai`, when left out). Its manifest
(`/v2/<namespace>/<model>/manifests/<tag>`, the OCI distribution API) lists layers by media
type: the GGUF model, a projector, `params` (JSON: the Modelfile's PARAMETERs), `system`, `messages`,
a Go `template` and a `license`. The model and projector are downloaded like any download
(models_catalog/downloads.py) from `/v2/<namespace>/<model>/blobs/<digest>`; params, system and
messages become the entry's settings. The Go template is not used: llama-server renders chats
with the Jinja template in the GGUF file.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from models_catalog.hub import HubError

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
)
LAYER = "application/vnd.ollama.image."
SMALL_LAYER_LIMIT = 1024 * 1024  # params, system, messages

_NAME_RE = re.compile(
    r"^(?:(?P<host>[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?::\d+)?)/)?"
    r"(?:(?P<namespace>[A-Za-z0-9][A-Za-z0-9._-]{0,79})/)?"
    r"(?P<model>[A-Za-z0-9][A-Za-z0-9._-]{0,79})"
    r"(?::(?P<tag>[A-Za-z0-9][A-Za-z0-9._-]{0,79}))?$"
)


@dataclass(frozen=True)
class RegistryRef:
    host: str  # "" = the configured registry
    namespace: str
    model: str
    tag: str

    @property
    def name(self) -> str:
        """How Ollama names the model: `llama3.2`, `llama3.2:1b`, `someone/model:tag`."""
        path = self.model if self.namespace == "library" else f"{self.namespace}/{self.model}"
        path = f"{self.host}/{path}" if self.host else path
        return path if self.tag == "latest" else f"{path}:{self.tag}"

    @property
    def entry_name(self) -> str:
        """The catalog name: Ollama's, with `/` turned into `-` (an alias keeps Ollama's)."""
        return self.name.replace("/", "-")

    def base_url(self, registry: str) -> str:
        origin = f"https://{self.host}" if self.host else registry
        return f"{origin}/v2/{self.namespace}/{self.model}"


def parse_name(text: str) -> RegistryRef | None:
    """The registry model `text` names (lower-cased, as Ollama's names are), or None."""
    match = _NAME_RE.match((text or "").strip())
    if match is None:
        return None
    parts = {k: (v or "").lower() for k, v in match.groupdict().items()}
    if parts["host"] in ("hf.co", "huggingface.co"):
        return None
    return RegistryRef(
        parts["host"], parts["namespace"] or "library", parts["model"], parts["tag"] or "latest"
    )


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str  # sha256:<hex>
    size: int

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")


@dataclass(frozen=True)
class Manifest:
    model: Layer
    projector: Layer | None
    small: dict[str, Layer]  # "params", "system", "messages" → layer
    adapters: tuple[Layer, ...]


def read_manifest(body: Any, name: str) -> Manifest:
    """The layers of a manifest that llamaproxy uses; HubError when it has no GGUF model layer."""
    layers = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(layers, list):
        raise HubError(f"{name}: the registry's manifest has no layers", status=502)
    found: dict[str, list[Layer]] = {}
    for item in layers:
        if not isinstance(item, dict) or not str(item.get("mediaType", "")).startswith(LAYER):
            continue
        digest = str(item.get("digest", ""))
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise HubError(f"{name}: the registry's manifest has a malformed digest", status=502)
        kind = str(item["mediaType"]).removeprefix(LAYER).split(";")[0].strip()
        found.setdefault(kind, []).append(Layer(str(item["mediaType"]), digest, int(item.get("size") or 0)))
    if "model" not in found:
        kinds = ", ".join(sorted(found)) or "none"
        raise HubError(
            f"{name} has no GGUF model layer (its layers: {kinds}); llamaproxy runs GGUF models with llama-server",
            status=400,
        )
    return Manifest(
        model=found["model"][0],
        projector=(found.get("projector") or [None])[0],
        small={kind: found[kind][0] for kind in ("params", "system", "messages") if kind in found},
        adapters=tuple(found.get("adapter", ())),
    )


def refusal_of(name: str) -> Callable[[httpx.Response], HubError]:
    def refused(response: httpx.Response) -> HubError:
        if response.status_code == 404:
            return HubError(f"pull model manifest: file does not exist ({name} is not in the registry)", 404)
        if response.status_code in (401, 403):
            return HubError(f"the registry refused access to {name}", 403)
        return HubError(f"the registry answered {response.status_code} for {name}", 502)

    return refused


async def fetch_manifest(client: httpx.AsyncClient, registry: str, ref: RegistryRef) -> Manifest:
    url = f"{ref.base_url(registry)}/manifests/{ref.tag}"
    try:
        response = await client.get(url, headers={"Accept": MANIFEST_TYPES})
    except httpx.HTTPError as exc:
        origin = url.split("/v2/")[0]
        raise HubError(f"cannot reach {origin}: {exc or type(exc).__name__}", status=502) from None
    if response.status_code != 200:
        raise refusal_of(ref.name)(response)
    try:
        body = response.json()
    except ValueError:
        raise HubError(f"{ref.name}: the registry's manifest is not JSON", status=502) from None
    return read_manifest(body, ref.name)


async def fetch_small(client: httpx.AsyncClient, registry: str, ref: RegistryRef, layer: Layer) -> bytes:
    """A small layer's content (params, system, messages), checked against its digest."""
    if layer.size > SMALL_LAYER_LIMIT:
        raise HubError(f"{ref.name}: its {layer.media_type} layer is too large", status=502)
    try:
        response = await client.get(f"{ref.base_url(registry)}/blobs/{layer.digest}")
    except httpx.HTTPError as exc:
        raise HubError(f"cannot reach the registry: {exc or type(exc).__name__}", status=502) from None
    if response.status_code != 200:
        raise refusal_of(ref.name)(response)
    if hashlib.sha256(response.content).hexdigest() != layer.sha256:
        raise HubError(f"{ref.name}: a layer does not match its digest", status=502)
    return response.content


def settings_from_layers(contents: dict[str, bytes]) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    """The `params` (Ollama option names → values), `system` text and `messages` the small
    layers hold (what cannot be read is left out)."""
    params: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []
    if "params" in contents:
        try:
            loaded = json.loads(contents["params"])
            params = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            params = {}
    if "messages" in contents:
        try:
            loaded = json.loads(contents["messages"])
            messages = [m for m in loaded if isinstance(m, dict)] if isinstance(loaded, list) else []
        except ValueError:
            messages = []
    system = contents.get("system", b"").decode("utf-8", errors="replace")
    return params, system, messages
