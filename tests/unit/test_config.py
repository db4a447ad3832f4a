"""Settings parsing: defaults from DESIGN.md's table, and bad values named by variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamaproxy.config import ConfigError, load_config, parse_duration, parse_size

BASE = Path("/srv/llamaproxy")


def test_defaults_match_the_design_table() -> None:
    config = load_config({}, BASE)
    assert config.home == BASE / "var"
    assert config.host == "127.0.0.1"
    assert config.ports == {"dashboard": 8080, "api": 8585, "ollama": 11434, "lmstudio": 1234}
    assert config.models_dirs == [BASE / "models"]
    assert config.llama_server is None and config.whisper_server is None
    assert config.max_loaded_models == 1
    assert config.memory_budget is None
    assert config.default_ttl == 0
    assert config.redis_url is None
    assert config.require_api_key is False
    assert config.build_backend == "auto"
    assert config.max_queue == 1024
    assert config.max_request_body == 100 * 1024**2
    assert load_config({"LLAMAPROXY_BUILD_BACKEND": "CUDA"}, BASE).build_backend == "cuda"


def test_values_from_the_environment_are_parsed() -> None:
    config = load_config(
        {
            "LLAMAPROXY_HOME": "/data/lp",
            "LLAMAPROXY_HOST": "0.0.0.0",
            "LLAMAPROXY_OLLAMA_PORT": "0",
            "LLAMAPROXY_MODELS_DIRS": "/a, b",
            "LLAMAPROXY_MAX_LOADED_MODELS": "3",
            "LLAMAPROXY_MEMORY_BUDGET": "24GiB",
            "LLAMAPROXY_DEFAULT_TTL": "5m",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "LLAMAPROXY_PRELOAD": "a, b",
            "LLAMAPROXY_MAX_QUEUE": "16",
        },
        BASE,
    )
    assert config.home == Path("/data/lp")
    assert config.enabled_faces() == {"dashboard": 8080, "api": 8585, "lmstudio": 1234}
    assert config.models_dirs == [Path("/a"), BASE / "b"]
    assert config.max_loaded_models == 3
    assert config.memory_budget == 24 * 1024**3
    assert config.default_ttl == 300
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.preload == ["a", "b"]
    assert config.max_queue == 16


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("LLAMAPROXY_API_PORT", "http", "not a whole number"),
        ("LLAMAPROXY_API_PORT", "70000", "out of range"),
        ("LLAMAPROXY_LMSTUDIO_PORT", "8080", "already used by LLAMAPROXY_DASHBOARD_PORT"),
        ("LLAMAPROXY_HOST", "my laptop", "not an IP address"),
        ("LLAMAPROXY_MAX_LOADED_MODELS", "0", "at least 1"),
        ("LLAMAPROXY_MAX_LOADED_MODELS", "two", "not a whole number"),
        ("LLAMAPROXY_MEMORY_BUDGET", "lots", "not a size"),
        ("LLAMAPROXY_MEMORY_BUDGET", "12 parsecs", "unknown size unit"),
        ("LLAMAPROXY_DEFAULT_TTL", "soon", "not a duration"),
        ("LLAMAPROXY_LLAMA_SERVER", "/nonexistent/llama-server", "does not exist"),
        ("REDIS_URL", "localhost:6379", "not a redis://"),
        ("LLAMAPROXY_REQUIRE_API_KEY", "maybe", "not a boolean"),
        ("LLAMAPROXY_BACKUP_KEEP", "0", "at least 1"),
        ("LLAMAPROXY_BUILD_BACKEND", "metal", "not a build backend"),
        ("LLAMAPROXY_USAGE_RETENTION_DAYS", "-3", "at least 0"),
        ("LLAMAPROXY_MAX_QUEUE", "0", "at least 1"),
        ("LLAMAPROXY_MAX_REQUEST_BODY", "huge", "not a size"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({variable: value}, BASE)
    assert caught.value.variable == variable
    assert problem in str(caught.value)
    assert str(caught.value).startswith(variable)


def test_turning_every_port_off_is_refused() -> None:
    env = {
        v: "0"
        for v in (
            "LLAMAPROXY_DASHBOARD_PORT",
            "LLAMAPROXY_API_PORT",
            "LLAMAPROXY_OLLAMA_PORT",
            "LLAMAPROXY_LMSTUDIO_PORT",
        )
    }
    with pytest.raises(ConfigError, match="nothing would be served"):
        load_config(env, BASE)


def test_a_binary_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text("not a program")
    with pytest.raises(ConfigError, match="not executable"):
        load_config({"LLAMAPROXY_LLAMA_SERVER": str(binary)}, BASE)


@pytest.mark.parametrize(
    ("text", "expected"), [("1024", 1024), ("512M", 512_000_000), ("1.5GiB", 1610612736), ("8 GB", 8 * 10**9)]
)
def test_sizes_parse(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"), [("300", 300), ("5m", 300), ("1h", 3600), ("2d", 172800), ("0", 0)]
)
def test_durations_parse(text: str, expected: int) -> None:
    assert parse_duration(text) == expected


def test_the_hugging_face_hub_its_token_and_the_downloads_folder() -> None:
    default = load_config({}, BASE)
    assert default.hf_endpoint == "https://huggingface.co" and default.hf_token is None
    assert default.downloads_dir is None  # settings.py: <home>/downloads
    ours = load_config(
        {
            "LLAMAPROXY_HF_ENDPOINT": "http://mirror.local:8000/",
            "HF_ENDPOINT": "https://elsewhere.example",
            "LLAMAPROXY_HF_TOKEN": "hf_ours",
            "HF_TOKEN": "hf_theirs",
            "LLAMAPROXY_DOWNLOADS_DIR": "big/disk",
        },
        BASE,
    )
    assert ours.hf_endpoint == "http://mirror.local:8000" and ours.hf_token == "hf_ours"
    assert ours.downloads_dir == BASE / "big/disk"
    assert default.ollama_registry == "https://registry.ollama.ai"
    assert (
        load_config({"LLAMAPROXY_OLLAMA_REGISTRY": "http://r.local/"}, BASE).ollama_registry
        == "http://r.local"
    )
    theirs = load_config({"HF_ENDPOINT": "https://hf-mirror.com", "HF_TOKEN": "hf_theirs"}, BASE)
    assert theirs.hf_endpoint == "https://hf-mirror.com" and theirs.hf_token == "hf_theirs"
    with pytest.raises(ConfigError) as bad:
        load_config({"LLAMAPROXY_HF_ENDPOINT": "huggingface.co"}, BASE)
    assert bad.value.variable == "LLAMAPROXY_HF_ENDPOINT"
    with pytest.raises(ConfigError) as theirs_bad:
        load_config({"HF_ENDPOINT": "ftp://x"}, BASE)
    assert theirs_bad.value.variable == "HF_ENDPOINT"
