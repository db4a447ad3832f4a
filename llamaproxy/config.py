"""Parsing of the LLAMAPROXY_* environment into a typed, validated configuration.

Pure functions over a mapping so that every bad value can be unit-tested; settings.py
turns a ConfigError into a start-up failure that names the variable.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

FACES = ("dashboard", "api", "ollama", "lmstudio")
DEFAULT_PORTS = {"dashboard": 8080, "api": 8585, "ollama": 11434, "lmstudio": 1234}
PORT_VARIABLES = {
    "dashboard": "LLAMAPROXY_DASHBOARD_PORT",
    "api": "LLAMAPROXY_API_PORT",
    "ollama": "LLAMAPROXY_OLLAMA_PORT",
    "lmstudio": "LLAMAPROXY_LMSTUDIO_PORT",
}

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """A configuration variable holds a value that cannot be used."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


@dataclass(frozen=True)
class Config:
    home: Path
    host: str
    ports: dict[str, int]
    models_dirs: list[Path]
    llama_server: Path | None
    whisper_server: Path | None
    max_loaded_models: int
    memory_budget: int | None
    default_ttl: int
    redis_url: str | None
    log_dir: Path
    build_cache: Path
    debug: bool
    secret_key: str | None
    require_api_key: bool
    request_timeout: float
    usage_retention_days: int
    max_queue: int = 1024
    max_request_body: int = 100 * 1024**2
    preload: list[str] = field(default_factory=list)
    default_model: str | None = None
    database: Path | None = None
    backup_keep: int = 20
    build_backend: str = "auto"
    hf_endpoint: str = "https://huggingface.co"
    hf_token: str | None = None
    downloads_dir: Path | None = None  # None: <home>/downloads
    ollama_registry: str = "https://registry.ollama.ai"

    def enabled_faces(self) -> dict[str, int]:
        return {face: port for face, port in self.ports.items() if port}


def parse_size(text: str) -> int:
    """'24GiB' → 25769803776, '512M' → 512000000, '1024' → 1024."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 24GiB, 8000MB, 1073741824)")
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} (use B, KB, MB, GB, KiB, MiB, GiB, ...)")
    value = int(float(number) * factor)
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def parse_duration(text: str) -> int:
    """Seconds from '300', '5m', '1h', '2d'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 300, 5m, 1h)")
    number, unit = match.groups()
    factor = _DURATION_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown duration unit {unit!r} (use s, m, h or d)")
    return int(float(number) * factor)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{text!r} is not a boolean (use true or false)")


def _parse_int(text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and {maximum}" if maximum is not None else ""
        raise ValueError(
            f"{value} is out of range (between {minimum}{upper})"
            if upper
            else f"{value} must be at least {minimum}"
        )
    return value


BUILD_BACKENDS = ("auto", "cpu", "cuda")


def _parse_backend(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in BUILD_BACKENDS:
        raise ValueError(f"{text!r} is not a build backend (use {', '.join(BUILD_BACKENDS)})")
    return lowered


def _parse_endpoint(text: str) -> str:
    url = text.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+(/\S*)?$", url):
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    return url


def _path_list(text: str, base: Path) -> list[Path]:
    parts = [p.strip() for p in re.split(rf"[,{re.escape(os.pathsep)}]", text) if p.strip()]
    return [_resolve(p, base) for p in parts]


def _resolve(text: str, base: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else (base / path)


def load_config(env: Mapping[str, str], base_dir: Path) -> Config:
    """Build a Config from environment variables; raises ConfigError naming the variable."""

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        return default if value is None or value == "" else value

    def parse(name: str, parser, default: str | None):
        raw = get(name, default)
        if raw is None:
            return None
        try:
            return parser(raw)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None

    home = _resolve(get("LLAMAPROXY_HOME", "./var") or "./var", base_dir)

    host = get("LLAMAPROXY_HOST", "127.0.0.1") or "127.0.0.1"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                "LLAMAPROXY_HOST", f"{host!r} is not an IP address (examples: 127.0.0.1, 0.0.0.0, ::1)"
            ) from None

    ports: dict[str, int] = {}
    for face in FACES:
        variable = PORT_VARIABLES[face]
        ports[face] = parse(variable, lambda t: _parse_int(t, 0, 65535), str(DEFAULT_PORTS[face]))
    used: dict[int, str] = {}
    for face, port in ports.items():
        if port and port in used:
            raise ConfigError(
                PORT_VARIABLES[face], f"port {port} is already used by {PORT_VARIABLES[used[port]]}"
            )
        used[port] = face
    if not any(ports.values()):
        raise ConfigError("LLAMAPROXY_DASHBOARD_PORT", "every port is 0, so nothing would be served")

    def optional_binary(name: str) -> Path | None:
        raw = get(name)
        if raw is None:
            return None
        path = _resolve(raw, base_dir)
        if not path.is_file():
            raise ConfigError(name, f"{path} does not exist or is not a file")
        if not os.access(path, os.X_OK):
            raise ConfigError(name, f"{path} is not executable")
        return path

    redis_url = get("REDIS_URL")
    if redis_url is not None and not re.match(r"^(redis|rediss|unix|redis\+socket)://", redis_url):
        raise ConfigError("REDIS_URL", f"{redis_url!r} is not a redis:// , rediss:// or unix:// URL")

    preload_raw = get("LLAMAPROXY_PRELOAD", "") or ""
    return Config(
        home=home,
        host=host,
        ports=ports,
        models_dirs=_path_list(get("LLAMAPROXY_MODELS_DIRS", "./models") or "./models", base_dir),
        llama_server=optional_binary("LLAMAPROXY_LLAMA_SERVER"),
        whisper_server=optional_binary("LLAMAPROXY_WHISPER_SERVER"),
        max_loaded_models=parse("LLAMAPROXY_MAX_LOADED_MODELS", lambda t: _parse_int(t, 1), "1"),
        memory_budget=parse("LLAMAPROXY_MEMORY_BUDGET", parse_size, None),
        default_ttl=parse("LLAMAPROXY_DEFAULT_TTL", parse_duration, "0"),
        redis_url=redis_url,
        log_dir=_resolve(get("LLAMAPROXY_LOG_DIR", "./logs") or "./logs", base_dir),
        build_cache=_resolve(
            get("LLAMAPROXY_BUILD_CACHE", "~/.cache/llamaproxy") or "~/.cache/llamaproxy", base_dir
        ),
        debug=parse("LLAMAPROXY_DEBUG", _parse_bool, "false"),
        secret_key=get("LLAMAPROXY_SECRET_KEY"),
        require_api_key=parse("LLAMAPROXY_REQUIRE_API_KEY", _parse_bool, "false"),
        request_timeout=float(parse("LLAMAPROXY_REQUEST_TIMEOUT", parse_duration, "300")),
        usage_retention_days=parse("LLAMAPROXY_USAGE_RETENTION_DAYS", lambda t: _parse_int(t, 0), "90"),
        max_queue=parse("LLAMAPROXY_MAX_QUEUE", lambda t: _parse_int(t, 1), "1024"),
        max_request_body=parse("LLAMAPROXY_MAX_REQUEST_BODY", parse_size, "100MiB"),
        preload=[name.strip() for name in preload_raw.split(",") if name.strip()],
        default_model=get("LLAMAPROXY_DEFAULT_MODEL"),
        database=_resolve(get("LLAMAPROXY_DATABASE") or "", base_dir) if get("LLAMAPROXY_DATABASE") else None,
        backup_keep=parse("LLAMAPROXY_BACKUP_KEEP", lambda t: _parse_int(t, 1), "20"),
        build_backend=parse("LLAMAPROXY_BUILD_BACKEND", _parse_backend, "auto"),
        # Hugging Face's own variables (HF_ENDPOINT, HF_TOKEN) count when ours are not set.
        hf_endpoint=parse(
            "LLAMAPROXY_HF_ENDPOINT" if get("LLAMAPROXY_HF_ENDPOINT") else "HF_ENDPOINT",
            _parse_endpoint,
            "https://huggingface.co",
        ),
        hf_token=get("LLAMAPROXY_HF_TOKEN") or get("HF_TOKEN"),
        downloads_dir=_resolve(get("LLAMAPROXY_DOWNLOADS_DIR") or "", base_dir)
        if get("LLAMAPROXY_DOWNLOADS_DIR")
        else None,
        ollama_registry=parse("LLAMAPROXY_OLLAMA_REGISTRY", _parse_endpoint, "https://registry.ollama.ai"),
    )
