"""Django settings for llamaproxy.

Everything a user sets lives in LLAMAPROXY_* variables (environment or `.env`), parsed and
validated by llamaproxy.config; an invalid value stops start-up with the variable named.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from llamaproxy.config import ConfigError, load_config

BASE_DIR = Path(__file__).resolve().parent.parent

# `.env` fills in what the environment does not already set.
environ.Env.read_env(os.environ.get("LLAMAPROXY_ENV_FILE", str(BASE_DIR / ".env")), overwrite=False)

try:
    CONFIG = load_config(os.environ, BASE_DIR)
except ConfigError as exc:
    raise ImproperlyConfigured(f"Invalid configuration: {exc}") from None

LLAMAPROXY_HOME: Path = CONFIG.home
LLAMAPROXY_HOME.mkdir(parents=True, exist_ok=True)
LOG_DIR: Path = CONFIG.log_dir
LOG_DIR.mkdir(parents=True, exist_ok=True)


def _secret_key() -> str:
    if CONFIG.secret_key:
        return CONFIG.secret_key
    key_file = LLAMAPROXY_HOME / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = CONFIG.debug
ALLOWED_HOSTS = ["*"]  # binds to LLAMAPROXY_HOST (loopback by default); clients use many host names

# --- Redis: embedded (unix socket in the data dir) unless REDIS_URL is set -----------------
REDIS_SOCKET: Path = LLAMAPROXY_HOME / "redis.sock"
REDIS_EMBEDDED = CONFIG.redis_url is None
REDIS_URL: str = CONFIG.redis_url or f"unix://{REDIS_SOCKET}"

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "llamaproxy",
    "models_catalog",
    "runners",
    "proxies",
]

MIDDLEWARE = [
    "llamaproxy.middleware.FaceRoutingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "llamaproxy.urls.dashboard"
# The local port a request arrived on picks the API face (FaceRoutingMiddleware).
FACE_URLCONFS = {
    "dashboard": "llamaproxy.urls.dashboard",
    "api": "llamaproxy.urls.api",
    "ollama": "llamaproxy.urls.ollama",
    "lmstudio": "llamaproxy.urls.lmstudio",
}
LLAMAPROXY_PORTS: dict[str, int] = CONFIG.ports
LLAMAPROXY_HOST: str = CONFIG.host

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ASGI_APPLICATION = "llamaproxy.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(CONFIG.database or LLAMAPROXY_HOME / "llamaproxy.sqlite3"),
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=30000;",
        },
        "TEST": {"NAME": os.environ.get("LLAMAPROXY_TEST_DATABASE") or None},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py 8 times reads out after 5 s by default, which races the layer's 5 s blocking pop.
        "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 15}], "capacity": 1000, "expiry": 30},
    }
}

CELERY_BROKER_URL = (
    REDIS_URL.replace("unix://", "redis+socket://", 1) if REDIS_URL.startswith("unix://") else REDIS_URL
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_DEFAULT_QUEUE = "llamaproxy"
CELERY_BEAT_SCHEDULE_FILENAME = str(LLAMAPROXY_HOME / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "scan-models": {"task": "models_catalog.tasks.scan_models", "schedule": 300.0},
    "health-sweep": {"task": "runners.tasks.health_sweep", "schedule": 5.0},
    "prune-usage": {"task": "proxies.tasks.prune_usage", "schedule": 3600.0},
}
# The worker reports itself alive by refreshing this key (at start, then with every health sweep,
# 5 s); /health reads it and calls the worker dead when it is older than the TTL.
WORKER_HEARTBEAT_KEY = "llamaproxy:worker:heartbeat"
WORKER_HEARTBEAT_TTL = 15

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = LLAMAPROXY_HOME / "static"
FRONTEND_DIST = BASE_DIR / "frontend" / "dist"

LLAMAPROXY_MODELS_DIRS: list[Path] = CONFIG.models_dirs
LLAMAPROXY_LLAMA_SERVER: Path | None = CONFIG.llama_server
LLAMAPROXY_WHISPER_SERVER: Path | None = CONFIG.whisper_server
LLAMAPROXY_BUILD_CACHE: Path = CONFIG.build_cache
LLAMAPROXY_BUILD_BACKEND: str = CONFIG.build_backend
LLAMAPROXY_MAX_LOADED_MODELS: int = CONFIG.max_loaded_models
LLAMAPROXY_MEMORY_BUDGET: int | None = CONFIG.memory_budget
LLAMAPROXY_DEFAULT_TTL: int = CONFIG.default_ttl
LLAMAPROXY_REQUIRE_API_KEY: bool = CONFIG.require_api_key
LLAMAPROXY_REQUEST_TIMEOUT: float = CONFIG.request_timeout
LLAMAPROXY_USAGE_RETENTION_DAYS: int = CONFIG.usage_retention_days
LLAMAPROXY_MAX_QUEUE: int = CONFIG.max_queue
# Request bodies the faces read (long prompts, batches of embedding inputs, images as base64):
# Django's 2.5 MB default refused ordinary vision requests. Uploaded files (audio) are not counted.
DATA_UPLOAD_MAX_MEMORY_SIZE: int = CONFIG.max_request_body
LLAMAPROXY_PRELOAD: list[str] = CONFIG.preload
LLAMAPROXY_DEFAULT_MODEL: str | None = CONFIG.default_model
RUNNER_LOG_DIR: Path = LOG_DIR / "runners"
LLAMAPROXY_HF_ENDPOINT: str = CONFIG.hf_endpoint
LLAMAPROXY_HF_TOKEN: str | None = CONFIG.hf_token
LLAMAPROXY_DOWNLOADS_DIR: Path = CONFIG.downloads_dir or LLAMAPROXY_HOME / "downloads"
LLAMAPROXY_OLLAMA_REGISTRY: str = CONFIG.ollama_registry
BACKUP_DIR: Path = LLAMAPROXY_HOME / "backups"
BACKUP_KEEP: int = CONFIG.backup_keep

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
        "file": {
            "class": "logging.handlers.RotatingFileHandler",
            "filename": str(LOG_DIR / f"{os.environ.get('LLAMAPROXY_PROCESS', 'manage')}.log"),
            "maxBytes": 10 * 1024 * 1024,
            "backupCount": 5,
            "formatter": "plain",
            "delay": True,
        },
    },
    "root": {"handlers": ["console", "file"], "level": "DEBUG" if DEBUG else "INFO"},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
        "daphne": {"level": "DEBUG" if DEBUG else "WARNING"},
        "asyncio": {"level": "WARNING"},
    },
}
