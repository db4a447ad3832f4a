"""Ollama's registry names and manifests (models_catalog/registry.py's pure part) and the
settings a pulled model keeps of its layers."""

from __future__ import annotations

import json

import pytest

from models_catalog.hub import HubError
from models_catalog.registry import RegistryRef, parse_name, read_manifest, settings_from_layers
from proxies.ollama.translate import pulled_settings


@pytest.mark.parametrize(
    ("text", "expected", "name", "entry"),
    [
        ("llama3.2", RegistryRef("", "library", "llama3.2", "latest"), "llama3.2", "llama3.2"),
        ("llama3.2:1b", RegistryRef("", "library", "llama3.2", "1b"), "llama3.2:1b", "llama3.2:1b"),
        ("Qwen3:8B", RegistryRef("", "library", "qwen3", "8b"), "qwen3:8b", "qwen3:8b"),
        ("library/gemma3:latest", RegistryRef("", "library", "gemma3", "latest"), "gemma3", "gemma3"),
        (
            "someone/model:v2",
            RegistryRef("", "someone", "model", "v2"),
            "someone/model:v2",
            "someone-model:v2",
        ),
        (
            "registry.example.com/team/model",
            RegistryRef("registry.example.com", "team", "model", "latest"),
            "registry.example.com/team/model",
            "registry.example.com-team-model",
        ),
    ],
)
def test_names_are_ollamas(text: str, expected: RegistryRef, name: str, entry: str) -> None:
    ref = parse_name(text)
    assert ref == expected and ref.name == name and ref.entry_name == entry


@pytest.mark.parametrize("text", ["", "bad name", "a/b/c/d", "hf.co/a/b", "model:", ":tag", "-x"])
def test_what_is_no_registry_name(text: str) -> None:
    assert parse_name(text) is None


def test_registry_urls() -> None:
    ref = parse_name("someone/model:v2")
    assert ref.base_url("https://registry.ollama.ai") == "https://registry.ollama.ai/v2/someone/model"
    assert parse_name("r.example/x/y").base_url("https://registry.ollama.ai") == "https://r.example/v2/x/y"


def layer(kind: str, digit: str, size: int = 10) -> dict:
    return {
        "mediaType": f"application/vnd.ollama.image.{kind}",
        "digest": "sha256:" + digit * 64,
        "size": size,
    }


def test_a_manifest_gives_the_model_projector_and_small_layers() -> None:
    manifest = read_manifest(
        {
            "layers": [
                layer("model", "a", 1000),
                layer("projector", "b", 200),
                layer("template", "c"),
                layer("params", "d"),
                layer("system", "e"),
                layer("license", "f"),
                {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "x"},
            ]
        },
        "m",
    )
    assert manifest.model.size == 1000 and manifest.model.sha256 == "a" * 64
    assert manifest.projector is not None and manifest.projector.size == 200
    assert set(manifest.small) == {"params", "system"}


def test_a_manifest_without_a_gguf_layer_or_with_a_bad_digest_is_refused() -> None:
    with pytest.raises(HubError) as no_model:
        read_manifest({"layers": [layer("tensor", "a"), layer("config", "b")]}, "m")
    assert no_model.value.status == 400 and "no GGUF model layer" in no_model.value.message
    with pytest.raises(HubError):
        read_manifest({"layers": [{**layer("model", "a"), "digest": "sha256:zz"}]}, "m")
    with pytest.raises(HubError):
        read_manifest({"nothing": 1}, "m")


def test_params_system_and_messages_become_the_models_settings() -> None:
    params, system, messages = settings_from_layers(
        {
            "params": json.dumps(
                {"stop": ["<|eot|>"], "temperature": 0.6, "num_ctx": 8192, "use_mmap": True}
            ).encode(),
            "system": b"Be brief.",
            "messages": json.dumps([{"role": "user", "content": "hi"}, "junk"]).encode(),
        }
    )
    assert system == "Be brief." and messages == [{"role": "user", "content": "hi"}]
    runner, sampling = pulled_settings(params, system, messages)
    assert runner == {"ctx_size": 8192}
    assert sampling["stop"] == ["<|eot|>"] and sampling["temperature"] == 0.6
    assert sampling["system"] == "Be brief." and sampling["messages"] == messages
    assert "use_mmap" not in sampling  # what llamaproxy cannot keep is left out, not refused
    assert pulled_settings({"temperature": "hot", "top_k": 5}, "", []) == ({}, {"top_k": 5})
    assert settings_from_layers({"params": b"not json"}) == ({}, "", [])
