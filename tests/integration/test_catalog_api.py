"""The catalog's manage API routes through the Django test client, good input and bad."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from llamaproxy.manage_api import local_admin_token
from models_catalog.backup import list_backups
from models_catalog.discovery import scan_models
from models_catalog.models import CatalogModel, ModelFolder
from models_catalog.testing import make_library

pytestmark = pytest.mark.django_db
API = "/api/manage"


@pytest.fixture
def library(tmp_path: Path, settings: Any, events: list[dict[str, Any]]) -> dict[str, Path]:
    root = tmp_path / "models"
    settings.LLAMAPROXY_MODELS_DIRS = [root]
    settings.BACKUP_DIR = tmp_path / "backups"
    files = make_library(root)
    scan_models()
    return files


@pytest.fixture
def api() -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {local_admin_token()}")


def patch(api: Client, name: str, body: dict[str, Any]) -> Any:
    return api.patch(f"{API}/models/{name}", json.dumps(body), content_type="application/json")


def post(api: Client, path: str, body: Any = None) -> Any:
    return api.post(
        f"{API}/{path}", json.dumps(body) if body is not None else None, content_type="application/json"
    )


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [m["name"] for m in response.json()]


def test_the_catalog_routes_need_a_login_or_the_admin_token(library: dict[str, Path]) -> None:
    response = Client().get(f"{API}/models")

    assert response.status_code == 401
    assert response.json()["error"]["message"]
    assert Client(HTTP_AUTHORIZATION="Bearer wrong").get(f"{API}/models").status_code == 401


def test_a_staff_session_may_use_the_api(library: dict[str, Path], django_user_model: Any) -> None:
    client = Client()
    client.force_login(django_user_model.objects.create_user("admin", password="x" * 12, is_staff=True))

    assert client.get(f"{API}/models").status_code == 200


def test_models_are_listed_with_metadata_settings_and_capabilities(
    api: Client, library: dict[str, Path]
) -> None:
    response = api.get(f"{API}/models")

    models = {m["name"]: m for m in response.json()}
    assert len(models) == 9
    vision = models["gemma-3-4b-it-q4_k_m"]
    assert vision["capabilities"] == ["completion", "vision"]
    assert vision["mmproj_path"] == str(library["mmproj"])
    assert vision["quantization"] == "Q4_K_M" and vision["architecture"] == "gemma3"
    assert vision["settings"]["runtime"] == "llama-server"
    assert models["readme"]["state"] == "error" and "not a GGUF" in models["readme"]["error"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("capability=embedding", ["nomic-embed-text-v1.5.f16", "qwen3-embedding-0.6b-q8_0"]),
        ("capability=tools", ["hermes-tools-q8_0"]),
        ("architecture=gemma3", ["gemma-3-4b-it-q4_k_m"]),
        ("quantization=q4_k_m", ["gemma-3-4b-it-q4_k_m", "qwen2.5-7b-instruct-q4_k_m"]),
        ("state=error", ["corrupt", "readme"]),
        ("q=qwen", ["qwen2.5-7b-instruct-q4_k_m", "qwen3-embedding-0.6b-q8_0"]),
        ("kind=embedding&q=nomic", ["nomic-embed-text-v1.5.f16"]),
        ("enabled=false", []),
    ],
)
def test_models_can_be_filtered(
    api: Client, library: dict[str, Path], query: str, expected: list[str]
) -> None:
    assert names(api.get(f"{API}/models?{query}")) == expected


def test_models_can_be_filtered_by_folder(api: Client, library: dict[str, Path], tmp_path: Path) -> None:
    folder = ModelFolder.objects.get(path=str(tmp_path / "models"))

    assert len(names(api.get(f"{API}/models?folder={folder.pk}"))) == 9
    assert len(names(api.get(f"{API}/models?folder={folder.path}"))) == 9


def test_a_bad_filter_value_is_a_400_naming_it(api: Client, library: dict[str, Path]) -> None:
    response = api.get(f"{API}/models?capability=flying")

    assert response.status_code == 400
    assert response.json()["error"]["field"] == "capability"


def test_one_model_is_found_by_name_or_alias_with_template_and_metadata(
    api: Client, library: dict[str, Path]
) -> None:
    patch(api, "tiny-chat", {"aliases": ["tiny"]})

    response = api.get(f"{API}/models/tiny")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "tiny-chat" and body["aliases"] == ["tiny"]
    assert "<|im_start|>" in body["chat_template"]
    assert body["metadata"]["llama.context_length"] == 4096
    assert api.get(f"{API}/models/nobody").status_code == 404


CHANGES = {
    "enabled": False,
    "parameters": {"ctx-size": "8192", "flash_attn": "on"},
    "sampling": {"temp": 0.5},
    "extra_args": "--no-warmup --slots",
    "ttl_seconds": 300,
    "pinned": True,
    "group": "small",
    "runtime": "custom",
    "custom_command": "my-server --port {port} --model {model}",
}


def test_patching_a_model_changes_its_settings_and_publishes_it(
    api: Client,
    library: dict[str, Path],
    events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    events.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = patch(api, "tiny-chat", CHANGES)

    assert response.status_code == 200, response.content
    settings = response.json()["settings"]
    assert response.json()["enabled"] is False
    assert settings["parameters"] == {"ctx_size": 8192, "flash_attn": "on"}
    assert settings["sampling"] == {"temperature": 0.5}
    assert settings["extra_args"] == ["--no-warmup", "--slots"]
    assert (settings["ttl_seconds"], settings["pinned"], settings["group"]) == (300, True, "small")
    assert [(e["type"], e["names"]) for e in events] == [("catalog.changed", ["tiny-chat"])]


def test_parameters_merge_and_a_null_removes_one(api: Client, library: dict[str, Path]) -> None:
    patch(api, "tiny-chat", {"parameters": {"ctx_size": 8192, "threads": 4}})

    response = patch(api, "tiny-chat", {"parameters": {"threads": None, "batch_size": 256}})

    assert response.json()["settings"]["parameters"] == {"ctx_size": 8192, "batch_size": 256}


def test_stop_sequences_are_stored_as_a_list_and_an_empty_list_removes_them(
    api: Client, library: dict[str, Path]
) -> None:
    response = patch(api, "tiny-chat", {"sampling": {"stop": ["<|im_end|>", "\n\n"], "num_keep": 8}})
    assert response.json()["settings"]["sampling"] == {"stop": ["<|im_end|>", "\n\n"], "n_keep": 8}
    response = patch(api, "tiny-chat", {"sampling": {"stop": "###"}})
    assert response.json()["settings"]["sampling"]["stop"] == ["###"]
    response = patch(api, "tiny-chat", {"sampling": {"stop": []}})
    assert response.json()["settings"]["sampling"] == {"n_keep": 8}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"parameters": {"ctx_size": "large"}}, "parameters.ctx_size"),
        ({"parameters": {"n_gpu_layers": -2}}, "parameters.n_gpu_layers"),
        ({"parameters": {"cache_type_k": "q3"}}, "parameters.cache_type_k"),
        ({"parameters": {"warp_speed": 9}}, "parameters.warp_speed"),
        ({"sampling": {"temperature": "hot"}}, "sampling.temperature"),
        ({"sampling": {"stop": [1]}}, "sampling.stop"),
        ({"sampling": {"mirostat": 3}}, "sampling.mirostat"),
        ({"sampling": {"messages": [{"role": "user"}]}}, "sampling.messages"),
        ({"sampling": {"messages": "[{oops"}}, "sampling.messages"),
        ({"ttl_seconds": -1}, "ttl_seconds"),
        ({"enabled": "maybe"}, "enabled"),
        ({"runtime": "vllm"}, "runtime"),
        ({"runtime": "custom", "custom_command": "server --model {model}"}, "custom_command"),
        ({"extra_args": [1, 2]}, "extra_args"),
        ({"colour": "blue"}, "colour"),
        ({"pinned": None}, "pinned"),
        ({"aliases": ["hermes-tools-q8_0"]}, "aliases"),
    ],
)
def test_invalid_values_are_a_4xx_naming_the_field_and_change_nothing(
    api: Client, library: dict[str, Path], body: dict[str, Any], field: str
) -> None:
    before = api.get(f"{API}/models/tiny-chat").json()

    response = patch(api, "tiny-chat", body)

    assert response.status_code in (400, 409), response.content
    assert response.json()["error"]["field"] == field
    assert api.get(f"{API}/models/tiny-chat").json() == before


def test_aliases_can_be_added_and_removed_but_never_taken_twice(
    api: Client, library: dict[str, Path]
) -> None:
    response = post(api, "models/tiny-chat/aliases", {"alias": "chat"})
    assert response.status_code == 201 and response.json()["aliases"] == ["chat"]

    taken = post(api, "models/big-model/aliases", {"alias": "chat"})
    assert taken.status_code == 409 and "already an alias of tiny-chat" in taken.json()["error"]["message"]
    assert post(api, "models/big-model/aliases", {"alias": ""}).status_code == 400

    assert api.delete(f"{API}/models/tiny-chat/aliases/chat").json()["aliases"] == []


def test_deleting_a_model_removes_the_entry_but_never_the_file(api: Client, library: dict[str, Path]) -> None:
    response = api.delete(f"{API}/models/tiny-chat")

    assert response.status_code == 200 and response.json() == {"deleted": "tiny-chat", "files": []}
    assert library["tiny"].exists()
    assert not CatalogModel.objects.filter(name="tiny-chat").exists()
    assert api.delete(f"{API}/models/tiny-chat").status_code == 404


def test_deleting_with_delete_files_deletes_every_part_and_the_projector_and_a_scan_finds_none(
    api: Client, library: dict[str, Path]
) -> None:
    from models_catalog import services

    parts = sorted(library["split"].parent.glob("Big-Model-*.gguf"))
    response = api.delete(f"{API}/models/big-model?delete_files=true")
    assert response.status_code == 200, response.json()
    assert response.json() == {"deleted": "big-model", "files": [str(p) for p in parts]}
    assert not any(p.exists() for p in parts)

    vision = CatalogModel.objects.get(path=str(library["vision"]))
    assert api.delete(f"{API}/models/{vision.name}?delete_files=true").json()["files"] == [
        str(library["vision"]),
        str(library["mmproj"]),
    ]
    assert not library["mmproj"].exists()
    scan_models()
    assert not CatalogModel.objects.filter(path__in=[str(parts[0]), str(library["vision"])]).exists()

    # A file another entry uses is not deleted (nothing changes).
    services.create_variant("tiny-chat", "tiny-long", {"ctx_size": 2048}, {})
    shared = api.delete(f"{API}/models/tiny-chat?delete_files=true")
    assert shared.status_code == 409 and "tiny-long" in shared.json()["error"]["message"]
    assert library["tiny"].exists() and CatalogModel.objects.filter(name="tiny-chat").exists()


def test_deleting_a_base_leaves_its_variants_the_oldest_taking_the_file(
    api: Client,
    library: dict[str, Path],
    events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    from models_catalog import services

    services.create_variant("tiny-chat", "tiny-long", {"ctx_size": 2048}, {"temperature": 0.5})
    services.create_variant("tiny-chat", "tiny-short", {"ctx_size": 512}, {})
    events.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert api.delete(f"{API}/models/tiny-chat").status_code == 200
    assert [(e["type"], e["names"]) for e in events] == [
        ("catalog.changed", ["tiny-chat"]),
        ("catalog.changed", ["tiny-long"]),
    ]
    heir = CatalogModel.objects.get(name="tiny-long")
    assert (
        heir.base is None
        and heir.path == str(library["tiny"])
        and heir.settings.parameters == {"ctx_size": 2048}
    )
    assert CatalogModel.objects.get(name="tiny-short").base == heir
    assert not CatalogModel.objects.filter(name="tiny-chat").exists()

    scan_models(force=True)  # the file has its entry: the deleted name does not come back
    assert sorted(
        CatalogModel.objects.filter(path=str(library["tiny"])).values_list("name", "base__name")
    ) == [
        ("tiny-long", None),
        ("tiny-short", "tiny-long"),
    ]
    assert api.get(f"{API}/models/tiny-short").json()["base"] == "tiny-long"


def test_a_scan_can_be_triggered_and_reports_counts(api: Client, library: dict[str, Path]) -> None:
    library["tiny"].unlink()

    response = post(api, "scan")

    assert response.status_code == 200
    body = response.json()
    assert body["missing"] == ["tiny-chat"] and body["unchanged"] == 8


def test_folders_can_be_listed_added_and_removed(
    api: Client, library: dict[str, Path], tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    extra.mkdir()

    added = post(api, "folders", {"path": str(extra)})
    assert added.status_code == 201 and added.json()["configured"] is False

    folders = {f["path"]: f for f in api.get(f"{API}/folders").json()}
    assert folders[str(tmp_path / "models")]["configured"] is True
    assert folders[str(tmp_path / "models")]["model_count"] == 9

    assert post(api, "folders", {"path": str(tmp_path / "nowhere")}).status_code == 400
    configured = folders[str(tmp_path / "models")]["id"]
    assert api.delete(f"{API}/folders/{configured}").status_code == 409
    assert api.delete(f"{API}/folders/{added.json()['id']}").status_code == 204
    assert api.delete(f"{API}/folders/99999").status_code == 404


def test_the_export_is_the_whole_catalog(api: Client, library: dict[str, Path]) -> None:
    body = api.get(f"{API}/export").json()

    assert body["format"] == "llamaproxy-catalog"
    assert len(body["models"]) == 9
    assert {"name", "path", "aliases", "settings", "file"} <= set(body["models"][0])


def test_configs_can_be_imported_and_a_bad_one_changes_nothing(api: Client, library: dict[str, Path]) -> None:
    good = {
        "models": {
            "Tiny": {"model_path": str(library["tiny"]), "parameters": {"ctx_size": 1024, "temp": 0.1}}
        }
    }
    bad = {"models": {"Qwen": {"model_path": str(library["quantized"]), "parameters": {"ctx_size": "x"}}}}

    response = post(api, "import", {"configs": [good, bad]})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "configs.1.models.Qwen.parameters.ctx_size"
    assert api.get(f"{API}/models/tiny-chat").json()["settings"]["parameters"] == {}

    response = post(api, "import", {"configs": [good]})
    assert response.status_code == 200, response.content
    assert response.json()["updated"] == ["tiny-chat"]
    tiny = api.get(f"{API}/models/Tiny").json()
    assert tiny["settings"]["parameters"] == {"ctx_size": 1024} and tiny["aliases"] == ["Tiny"]

    assert post(api, "import", {"configs": []}).status_code == 400
    assert post(api, "import", {"configs": [good], "dry": True}).json()["error"]["field"] == "dry"


def test_an_import_answers_which_limits_it_changed(api: Client, library: dict[str, Path]) -> None:
    config = {"max_loaded_models": 3, "models": {"Tiny": {"model_path": str(library["tiny"])}}}

    response = post(api, "import", {"configs": [config]})

    assert response.status_code == 200, response.content
    assert response.json()["settings_changed"] == {"max_loaded_models": 3}
    assert post(api, "import", {"configs": [config]}).json()["settings_changed"] == {}


def test_backups_can_be_made_listed_downloaded_and_restored(api: Client, library: dict[str, Path]) -> None:
    created = post(api, "backups")
    assert created.status_code == 201
    name = created.json()["name"]
    assert created.json()["reason"] == "manual"
    assert [b["name"] for b in api.get(f"{API}/backups").json()] == [name]

    download = api.get(f"{API}/backups/{name}")
    assert download.status_code == 200 and json.loads(download.content)["format"] == "llamaproxy-catalog"
    assert name in download["Content-Disposition"]

    patch(api, "tiny-chat", {"parameters": {"ctx_size": 999}})
    restored = post(api, f"backups/{name}/restore")
    assert restored.status_code == 200 and restored.json()["models"] == 9
    assert api.get(f"{API}/models/tiny-chat").json()["settings"]["parameters"] == {}
    assert len(list_backups()) == 2  # the restore wrote one of the catalog it replaced


def test_backup_names_outside_the_backup_folder_are_refused(api: Client, library: dict[str, Path]) -> None:
    for name in ("..%2F..%2Fetc%2Fpasswd", "catalog-x.json", "settings.py"):
        assert api.get(f"{API}/backups/{name}").status_code == 404
    assert post(api, "backups/catalog-20200101T000000.000000Z-manual.json/restore").status_code == 404


def test_the_digest_is_the_sha256_of_the_file(api: Client, library: dict[str, Path]) -> None:
    import hashlib

    response = post(api, "models/tiny-chat/digest")

    assert response.json()["digest"] == "sha256:" + hashlib.sha256(library["tiny"].read_bytes()).hexdigest()
    assert CatalogModel.objects.get(name="tiny-chat").digest == response.json()["digest"]


def test_the_openapi_schema_documents_the_catalog_routes(api: Client, library: dict[str, Path]) -> None:
    paths = api.get(f"{API}/openapi.json").json()["paths"]

    for path in (
        "/api/manage/models",
        "/api/manage/models/{name}",
        "/api/manage/scan",
        "/api/manage/backups",
    ):
        assert path in paths


def test_a_variant_is_created_over_its_bases_settings_and_survives_a_scan(
    api: Client,
    library: dict[str, Path],
    events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    from models_catalog import services
    from models_catalog.errors import CatalogError

    assert (
        patch(api, "tiny-chat", {"parameters": {"threads": 1}, "sampling": {"top_k": 5}}).status_code == 200
    )
    events.clear()
    with django_capture_on_commit_callbacks(execute=True):
        entry, replaced = services.create_variant(
            "tiny-chat", "tiny-long", {"ctx_size": 2048}, {"temperature": 0.5}
        )
    assert replaced is None and entry.base.name == "tiny-chat" and entry.path == str(library["tiny"])
    assert entry.source == CatalogModel.Source.MANUAL and entry.architecture and entry.capabilities
    assert entry.settings.parameters == {"threads": 1, "ctx_size": 2048}
    assert entry.settings.sampling == {"top_k": 5, "temperature": 0.5}
    assert [(e["type"], e["names"]) for e in events] == [("catalog.changed", ["tiny-long"])]

    # A variant of the variant has the file's own entry as its base, and the variant's settings.
    child, _ = services.create_variant("tiny-long", "tiny-longer", {}, {})
    assert child.base.name == "tiny-chat" and child.settings.parameters["ctx_size"] == 2048

    again, replaced = services.create_variant("tiny-chat", "tiny-long", {}, {})
    assert replaced.name == "tiny-long" and again.settings.parameters == {"threads": 1}

    # Names of scanned entries, aliases and bad settings are refused, and nothing changes.
    before = CatalogModel.objects.count()
    for name, parameters, field in [
        ("tiny-chat", {}, "model"),
        ("big-model", {}, "model"),
        ("new-one", {"ctx_size": "huge"}, "parameters.ctx_size"),
        ("", {}, "model"),
    ]:
        with pytest.raises(CatalogError) as refused:
            services.create_variant("tiny-chat", name, parameters, {})
        assert refused.value.field == field
    assert CatalogModel.objects.count() == before

    scan_models(force=True)
    kept = CatalogModel.objects.get(name="tiny-long")
    assert kept.base.name == "tiny-chat" and kept.settings.parameters == {"threads": 1}


def test_an_uploaded_blob_becomes_an_entry_and_goes_with_its_last_one(
    api: Client, library: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import hashlib
    import io

    from models_catalog import blobs, services

    monkeypatch.setattr(blobs, "blob_dir", lambda: tmp_path / "home" / "blobs")
    data = library["tiny"].read_bytes()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert blobs.store_blob(io.BytesIO(data), digest) is True
    assert blobs.store_blob(io.BytesIO(data), digest) is False  # kept once
    _name, blob = blobs.gguf_file({"mine.gguf": digest})
    entry, _ = services.create_from_file("mine", str(blob), {"ctx_size": 1024}, {}, digest)
    assert entry.base is None and entry.folder is None and entry.architecture == "llama"
    assert entry.digest == digest and services.ensure_digest(entry) == digest
    services.create_variant("mine", "mine-small", {"ctx_size": 512}, {})
    # The same file for another name: a variant of the entry that has it, with default settings.
    other, _ = services.create_from_file("mine-too", str(blob), {}, {}, digest)
    assert other.base.name == "mine" and other.settings.parameters == {}

    scan_models(force=True)  # a file outside the folders: kept, as an imported one is
    assert CatalogModel.objects.get(name="mine").state == CatalogModel.State.AVAILABLE

    # Deleting the blob's entry leaves the models made from it, the oldest having the file now.
    assert api.delete(f"{API}/models/mine").status_code == 200
    assert blob.exists() and CatalogModel.objects.get(name="mine-small").base is None
    assert CatalogModel.objects.get(name="mine-too").base.name == "mine-small"
    # Created again over that name: a variant of the model that has the file now.
    again, replaced = services.create_from_file("mine-small", str(blob), {}, {}, digest)
    assert replaced.name == "mine-small" and again.base.name == "mine-too"
    assert api.delete(f"{API}/models/mine-small").status_code == 200 and blob.exists()
    assert api.delete(f"{API}/models/mine-too").status_code == 200
    assert not blob.exists() and not CatalogModel.objects.filter(name__startswith="mine").exists()
    assert library["tiny"].exists()
    assert api.delete(f"{API}/models/tiny-chat").status_code == 200 and library["tiny"].exists()
