"""The Django admin through the test client: list, filters, bulk actions, inline settings validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from models_catalog.backup import list_backups
from models_catalog.discovery import scan_models
from models_catalog.models import CatalogModel, RunnerSettings
from models_catalog.testing import make_library

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/models_catalog/catalogmodel/"


@pytest.fixture(autouse=True)
def quiet_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("models_catalog.events.publish_sync", lambda event, groups=(): None)


@pytest.fixture
def library(tmp_path: Path, settings: Any) -> dict[str, Path]:
    root = tmp_path / "models"
    settings.LLAMAPROXY_MODELS_DIRS = [root]
    settings.BACKUP_DIR = tmp_path / "backups"
    files = make_library(root)
    scan_models()
    return files


@pytest.fixture
def admin(django_user_model: Any, settings: Any) -> Client:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, for tests
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("admin", "admin@example.com", "x" * 12))
    return client


def pks(*names: str) -> list[int]:
    return list(CatalogModel.objects.filter(name__in=names).values_list("pk", flat=True))


def act(admin: Client, action: str, names: tuple[str, ...], **extra: Any) -> Any:
    return admin.post(CHANGELIST, {"action": action, "_selected_action": pks(*names), **extra}, follow=True)


def test_the_list_shows_models_with_their_columns(admin: Client, library: dict[str, Path]) -> None:
    response = admin.get(CHANGELIST)

    assert response.status_code == 200
    page = response.content.decode()
    for text in ("tiny-chat", "Q4_K_M", "gemma3", "completion, vision", "Unreadable"):
        assert text in page


@pytest.mark.parametrize(
    ("query", "shown", "hidden"),
    [
        ("capability=embedding", "nomic-embed-text-v1.5.f16", "tiny-chat"),
        ("architecture=gemma3", "gemma-3-4b-it-q4_k_m", "tiny-chat"),
        ("quantization=Q8_0", "hermes-tools-q8_0", "gemma-3-4b-it-q4_k_m"),
        ("state__exact=error", "corrupt", "tiny-chat"),
        ("q=hermes", "hermes-tools-q8_0", "tiny-chat"),
        ("o=-5", "tiny-chat", "nothing-hidden"),  # sorted by file size
    ],
)
def test_the_list_can_be_searched_filtered_and_sorted(
    admin: Client, library: dict[str, Path], query: str, shown: str, hidden: str
) -> None:
    response = admin.get(f"{CHANGELIST}?{query}")

    assert response.status_code == 200
    page = response.content.decode()
    assert f">{shown}</a>" in page
    assert f">{hidden}</a>" not in page


def test_models_can_be_disabled_and_enabled_in_bulk_with_a_backup_first(
    admin: Client, library: dict[str, Path]
) -> None:
    response = act(admin, "disable_models", ("tiny-chat", "big-model"))

    assert "2 models disabled" in response.content.decode()
    assert set(CatalogModel.objects.filter(enabled=False).values_list("name", flat=True)) == {
        "tiny-chat",
        "big-model",
    }
    assert [p.name.split("-", 2)[2] for p in list_backups()] == ["disable.json"]

    act(admin, "enable_models", ("tiny-chat",))
    assert CatalogModel.objects.get(name="tiny-chat").enabled


def test_a_parameter_can_be_set_on_the_selection(admin: Client, library: dict[str, Path]) -> None:
    form = act(admin, "set_parameter", ("tiny-chat", "big-model"))
    assert "Set a parameter" in form.content.decode()  # the intermediate page

    response = act(
        admin, "set_parameter", ("tiny-chat", "big-model"), apply="1", parameter="ctx_size", value="8192"
    )

    assert "ctx_size = 8192 on 2 models" in response.content.decode()
    for name in ("tiny-chat", "big-model"):
        assert RunnerSettings.objects.get(model__name=name).parameters == {"ctx_size": 8192}
    act(admin, "set_parameter", ("tiny-chat",), apply="1", parameter="temperature", value="0.2")
    assert RunnerSettings.objects.get(model__name="tiny-chat").sampling == {"temperature": 0.2}


def test_an_invalid_parameter_value_is_shown_on_the_form_and_changes_nothing(
    admin: Client, library: dict[str, Path]
) -> None:
    response = act(admin, "set_parameter", ("tiny-chat",), apply="1", parameter="ctx_size", value="lots")

    assert "ctx_size must be a whole number" in response.content.decode()
    assert RunnerSettings.objects.get(model__name="tiny-chat").parameters == {}
    assert list_backups() == []


def test_settings_can_be_copied_from_one_model_to_others(admin: Client, library: dict[str, Path]) -> None:
    source = CatalogModel.objects.get(name="hermes-tools-q8_0")
    RunnerSettings.objects.filter(model=source).update(
        parameters={"ctx_size": 16384, "jinja": True}, sampling={"top_k": 40}, ttl_seconds=60, group="big"
    )

    response = act(admin, "copy_settings", ("tiny-chat", "big-model"), apply="1", source=source.pk)

    assert "copied to 2 models" in response.content.decode()
    for name in ("tiny-chat", "big-model"):
        settings = RunnerSettings.objects.get(model__name=name)
        assert (settings.parameters, settings.sampling, settings.ttl_seconds, settings.group) == (
            {"ctx_size": 16384, "jinja": True},
            {"top_k": 40},
            60,
            "big",
        )


def test_a_rescan_re_reads_the_selected_files(admin: Client, library: dict[str, Path]) -> None:
    CatalogModel.objects.filter(name="tiny-chat").update(context_length=1, architecture="wrong")

    response = act(admin, "rescan", ("tiny-chat",))

    assert "1 files re-read, 1 entries changed" in response.content.decode()
    tiny = CatalogModel.objects.get(name="tiny-chat")
    assert (tiny.architecture, tiny.context_length) == ("llama", 4096)


def test_the_inline_settings_form_shows_validation_errors(admin: Client, library: dict[str, Path]) -> None:
    model = CatalogModel.objects.get(name="tiny-chat")
    url = f"{CHANGELIST}{model.pk}/change/"
    page = admin.get(url)
    assert page.status_code == 200
    settings = RunnerSettings.objects.get(model=model)
    form = {
        "name": "tiny-chat",
        "enabled": "on",
        "tools_override": "unknown",
        "settings-TOTAL_FORMS": "1",
        "settings-INITIAL_FORMS": "1",
        "settings-MIN_NUM_FORMS": "1",
        "settings-MAX_NUM_FORMS": "1",
        "settings-0-id": settings.pk,
        "settings-0-model": model.pk,
        "settings-0-runtime": "llama-server",
        "settings-0-server_binary": "",
        "settings-0-custom_command": "",
        "settings-0-parameters": '{"ctx_size": "big"}',
        "settings-0-extra_args": "[]",
        "settings-0-sampling": "{}",
        "settings-0-ttl_seconds": "",
        "settings-0-group": "",
        "aliases-TOTAL_FORMS": "0",
        "aliases-INITIAL_FORMS": "0",
        "aliases-MIN_NUM_FORMS": "0",
        "aliases-MAX_NUM_FORMS": "1000",
    }

    response = admin.post(url, form)

    assert response.status_code == 200  # the form again, with the error
    assert "ctx_size must be a whole number" in response.content.decode()
    assert RunnerSettings.objects.get(model=model).parameters == {}

    form["settings-0-parameters"] = '{"ctx-size": 2048}'
    response = admin.post(url, form)
    assert response.status_code == 302
    assert RunnerSettings.objects.get(model=model).parameters == {"ctx_size": 2048}


def test_the_folder_list_shows_each_folder_with_its_model_count(
    admin: Client, library: dict[str, Path]
) -> None:
    response = admin.get("/admin/models_catalog/modelfolder/")

    assert response.status_code == 200
    assert str(library["quantized"].parent) in response.content.decode()
    assert '<td class="field-model_count">9</td>' in response.content.decode()
