"""A stand-in for the Hugging Face hub, for tests that download models (nothing may reach the
internet in tests): the parts of its HTTP interface llamaproxy uses, over real sockets.

- `GET /api/models/<owner>/<repo>/tree/main?recursive=true`: the file list (`type`, `path`,
  `size`, `oid`, and `lfs{oid: sha256, size}` for GGUF files), in pages joined by a `Link:
  <...>; rel="next"` header as the hub pages long lists;
- `GET /<owner>/<repo>/resolve/main/<path>`: a redirect to the file's "CDN" address, which
  serves it with byte ranges (206);
- what the hub answers for a repository it does not have (401, `X-Error-Code: RepoNotFound`)
  and for a gated one asked without its token (401, `X-Error-Code: GatedRepo`).

It can break the first transfer of a file halfway (`break_once`), as a dropped connection
does, and serve a repository slowly (`slow`), so that tests can see resumption and cancellation.

It is Ollama's registry too (`registry_root/<namespace>/<model>/<tag>/` holding `model.gguf`
and, where given, `projector.gguf`, `params.json`, `system.txt`, `messages.json`,
`template.txt`, `license.txt`): `GET /v2/<namespace>/<model>/manifests/<tag>` answers the
manifest of those layers (404 for another), `GET /v2/.../blobs/sha256:<hex>` redirects to the
layer's bytes.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

PAGE_SIZE = 3
CHUNK = 64 * 1024


@dataclass
class StandInHub:
    root: Path  # <root>/<owner>/<repo>/<files>
    gated: dict[str, str] = field(default_factory=dict)  # repository → the token it needs
    break_once: set[str] = field(default_factory=set)  # "<owner>/<repo>/<path>" to cut short once
    slow: set[str] = field(default_factory=set)  # repositories served a chunk per `chunk_delay`
    chunk_delay: float = 0.25
    registry_root: Path | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Range header)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StandInHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hub.requests.append((urlparse(self.path).path, self.headers.get("Range", "")))
                hub.handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def downloads_of(self, repo: str, path: str) -> list[str]:
        """The Range headers of the transfers of one file ('' for a whole one)."""
        return [rng for p, rng in self.requests if p == f"/cdn/{repo}/{path}"]

    # --- answers -----------------------------------------------------------------------------

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlparse(request.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            repo = "/".join(parts[2:4])
            if not self._refused(request, repo):
                self._tree(request, repo, int(parse_qs(url.query).get("cursor", ["0"])[0]))
            return
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, path = "/".join(parts[:2]), "/".join(parts[4:])
            if self._refused(request, repo):
                return
            if not (self.root / repo / path).is_file():
                return self._send(request, 404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
            return self._send(request, 302, b"", {"Location": f"{self.url}/cdn/{repo}/{path}"})
        if parts[0] == "cdn" and len(parts) >= 4:
            return self._file(request, "/".join(parts[1:3]), "/".join(parts[3:]))
        if parts[0] == "v2" and len(parts) == 5 and parts[3] in ("manifests", "blobs"):
            return self._registry(request, parts[1], parts[2], parts[3], parts[4])
        if parts[0] == "registry-cdn" and len(parts) == 2:
            layer = self._layers_by_digest().get(parts[1])
            if layer is None:
                return self._send(request, 404, b"not found")
            return self._send(request, 200, layer.read_bytes(), {"Content-Type": "application/octet-stream"})
        self._send(request, 404, b"not found")

    # --- Ollama's registry ---------------------------------------------------------------------

    LAYER_FILES = {
        "model.gguf": "application/vnd.ollama.image.model",
        "projector.gguf": "application/vnd.ollama.image.projector",
        "params.json": "application/vnd.ollama.image.params",
        "system.txt": "application/vnd.ollama.image.system",
        "messages.json": "application/vnd.ollama.image.messages",
        "template.txt": "application/vnd.ollama.image.template",
        "license.txt": "application/vnd.ollama.image.license",
    }

    def _layers_by_digest(self) -> dict[str, Path]:
        if self.registry_root is None:
            return {}
        return {
            "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest(): p
            for p in self.registry_root.rglob("*")
            if p.is_file() and p.name in self.LAYER_FILES
        }

    def _registry(
        self, request: BaseHTTPRequestHandler, namespace: str, model: str, what: str, ref: str
    ) -> None:
        if self.registry_root is None:
            return self._send(request, 404, b"not found")
        if what == "blobs":
            if ref not in self._layers_by_digest():
                return self._send(request, 404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            return self._send(request, 307, b"", {"Location": f"{self.url}/registry-cdn/{ref}"})
        folder = self.registry_root / namespace / model / ref
        if not (folder / "model.gguf").is_file():
            return self._send(request, 404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
        layers = []
        for name, media_type in self.LAYER_FILES.items():
            if (folder / name).is_file():
                data = (folder / name).read_bytes()
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                layers.append({"mediaType": media_type, "digest": digest, "size": len(data)})
        config = {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": "sha256:" + "0" * 64,
        }
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {**config, "size": 2},
            "layers": layers,
        }
        self._send(request, 200, json.dumps(manifest).encode(), {"Content-Type": manifest["mediaType"]})

    def _refused(self, request: BaseHTTPRequestHandler, repo: str) -> bool:
        if not (self.root / repo).is_dir():
            self._send(request, 401, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            return True
        if repo in self.gated and request.headers.get("Authorization") != f"Bearer {self.gated[repo]}":
            restricted = b'{"error":"Access to this model is restricted"}'
            self._send(request, 401, restricted, {"X-Error-Code": "GatedRepo"})
            return True
        return False

    def _tree(self, request: BaseHTTPRequestHandler, repo: str, cursor: int) -> None:
        base = self.root / repo
        files = sorted(p for p in base.rglob("*") if p.is_file())
        page = files[cursor : cursor + PAGE_SIZE]
        entries = []
        for path in page:
            data = path.read_bytes()
            entry = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data)}
            entry["path"] = str(path.relative_to(base))
            if path.suffix == ".gguf":
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries.append(entry)
        headers = {"Content-Type": "application/json"}
        if cursor + PAGE_SIZE < len(files):
            headers["Link"] = (
                f'<{self.url}/api/models/{repo}/tree/main?recursive=true&cursor={cursor + PAGE_SIZE}>; rel="next"'
            )
        self._send(request, 200, json.dumps(entries).encode(), headers)

    def _file(self, request: BaseHTTPRequestHandler, repo: str, path: str) -> None:
        file = self.root / repo / path
        if not file.is_file():
            return self._send(request, 404, b"not found")
        data = file.read_bytes()
        start = 0
        if rng := request.headers.get("Range"):
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                return self._send(request, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
        body = data[start:]
        request.send_response(206 if start else 200)
        request.send_header("Content-Length", str(len(body)))
        request.send_header("Accept-Ranges", "bytes")
        if start:
            request.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        request.end_headers()
        key = f"{repo}/{path}"
        cut = len(body) // 2 if key in self.break_once else None
        self.break_once.discard(key)
        sent = 0
        try:
            while sent < len(body):
                end = min(sent + CHUNK, len(body)) if cut is None else min(sent + CHUNK, cut)
                request.wfile.write(body[sent:end])
                request.wfile.flush()
                sent = end
                if cut is not None and sent >= cut:
                    request.close_connection = True
                    request.connection.close()  # the transfer breaks off here
                    return
                if repo in self.slow:
                    time.sleep(self.chunk_delay)
        except OSError:
            request.close_connection = True

    def _send(
        self, request: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict | None = None
    ) -> None:
        request.send_response(status)
        for name, value in (headers or {}).items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
