"""`import_config`: the seed project's files and llama-runner's config.json, good and broken."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from llamaproxy.models import RuntimeSettings
from llamaproxy.runtime import current_limits
from models_catalog.backup import export_catalog, list_backups
from models_catalog.discovery import scan_models
from models_catalog.models import CatalogModel, ModelAlias, ModelFolder
from models_catalog.tiny_model import write_tiny_model

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("quiet_events")]
BASE_DIR = Path(django_settings.BASE_DIR)


@pytest.fixture
def models_dir(tmp_path: Path, settings: Any) -> Path:
    root = tmp_path / "models"
    settings.LLAMAPROXY_MODELS_DIRS = [root]
    settings.BACKUP_DIR = tmp_path / "backups"
    write_tiny_model(root / "tiny-chat.gguf", name="tiny-chat", seed=1)
    write_tiny_model(root / "Qwen3-14B-Q4_K_S.gguf", name="qwen", seed=2)
    return root


def write_json(path: Path, data: dict[str, Any]) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def seed_files(tmp_path: Path, models_dir: Path) -> list[str]:
    app = {
        "models_dirs": [str(models_dir)],
        "llama_runtimes": {"default": "llama-server", "custom": "/opt/llama/llama-server"},
        "default_runtime": "default",
        "max_loaded_models": 2,
        "port": 8585,
    }
    models = {
        "default_model": "tiny-chat",
        "models": {
            "tiny-chat": {
                "model_path": str(models_dir / "tiny-chat.gguf"),
                "llama_cpp_runtime": "default",
                "parameters": {"ctx_size": 4096, "n_gpu_layers": 0, "temp": 0.7, "top_p": 0.9},
            },
            "tiny-chat-long": {
                "model_path": str(models_dir / "tiny-chat.gguf"),
                "llama_cpp_runtime": "custom",
                "parameters": {"ctx_size": 16384, "flash_attn": "auto"},
            },
        },
    }
    return [
        write_json(tmp_path / "app_config.json", app),
        write_json(tmp_path / "models_config.json", models),
    ]


def llama_runner_file(tmp_path: Path, models_dir: Path, **changes: Any) -> str:
    config: dict[str, Any] = {
        "llama-runtimes": {
            "default": {"runtime": "llama-server"},
            "ik_llama": {"runtime": "/opt/ik_llama/llama-server", "supports_tools": False},
        },
        "default_runtime": "default",
        "concurrentRunners": 1,
        "models": {
            "Qwen3 14B": {
                "model_path": str(models_dir / "Qwen3-14B-Q4_K_S.gguf"),
                "llama_cpp_runtime": "default",
                "has_tools": True,
                "parameters": {
                    "ctx_size": 26000,
                    "gpu_layers": 99,
                    "no_kv_offload": True,
                    "cache-type-k": "f16",
                    "cache-type-v": "q4_0",
                    "flash-attn": True,
                    "min_p": 0,
                    "top_p": 0.9,
                    "top_k": 20,
                    "temp": 0.6,
                    "threads": 4,
                },
            },
            "Qwen3 14B ik": {
                "model_id": "Qwen3-14B-ik",
                "model_path": str(models_dir / "Qwen3-14B-Q4_K_S.gguf"),
                "llama_cpp_runtime": "ik_llama",
                "parameters": {"ctx_size": 8000, "override_tensor": "(up_exps|down_exps)=CPU"},
            },
        },
        "proxies": {"ollama": {"enabled": True}},
    }
    config.update(changes)
    return write_json(tmp_path / "config.json", config)


def catalog_state() -> str:
    document = export_catalog()
    document.pop("created_at")
    for model in document["models"]:
        model["file"].pop("digest_mtime", None)
    return json.dumps(document, sort_keys=True, default=str)


def test_the_seed_projects_files_import_settings_variants_and_runtime_limits(
    tmp_path: Path, models_dir: Path
) -> None:
    scan_models()

    call_command("import_config", *seed_files(tmp_path, models_dir))

    tiny = CatalogModel.objects.get(name="tiny-chat")
    assert tiny.source == "import" and tiny.state == "available"
    assert tiny.settings.parameters == {"ctx_size": 4096, "n_gpu_layers": 0}
    assert tiny.settings.sampling == {"temperature": 0.7, "top_p": 0.9}
    long = CatalogModel.objects.get(name="tiny-chat-long")
    assert long.base == tiny and long.path == tiny.path
    assert long.settings.parameters == {"ctx_size": 16384, "flash_attn": "auto"}
    assert long.settings.server_binary == "/opt/llama/llama-server"
    assert long.architecture == "llama" and long.context_length == 4096  # the file's metadata came along
    stored = RuntimeSettings.objects.get(pk=1)
    assert (stored.default_model, stored.max_loaded_models, stored.default_ttl) == ("tiny-chat", 2, None)
    assert current_limits().default_model == "tiny-chat"  # in force at once: the cache was invalidated
    assert current_limits().max_loaded_models == 2
    assert ModelFolder.objects.filter(path=str(models_dir)).exists()


def test_llama_runner_configs_import_with_names_as_aliases(tmp_path: Path, models_dir: Path) -> None:
    scan_models()

    call_command("import_config", llama_runner_file(tmp_path, models_dir))

    qwen = CatalogModel.objects.get(name="qwen3-14b-q4_k_s")  # the scan's entry keeps its name
    assert list(qwen.aliases.values_list("alias", flat=True)) == ["Qwen3 14B"]
    assert qwen.settings.parameters == {
        "ctx_size": 26000,
        "n_gpu_layers": 99,
        "no_kv_offload": True,
        "cache_type_k": "f16",
        "cache_type_v": "q4_0",
        "flash_attn": "on",
        "threads": 4,
        "jinja": True,
    }
    assert qwen.settings.sampling == {"min_p": 0.0, "top_p": 0.9, "top_k": 20, "temperature": 0.6}
    assert qwen.cap_tools and qwen.tools_override is True
    ik = CatalogModel.objects.get(name="qwen3-14b-ik")
    assert ik.base == qwen and ik.settings.server_binary == "/opt/ik_llama/llama-server"
    assert ik.tools_override is False and not ik.cap_tools  # its runtime does not support tools
    assert set(ik.aliases.values_list("alias", flat=True)) == {"Qwen3-14B-ik", "Qwen3 14B ik"}
    assert RuntimeSettings.objects.get(pk=1).max_loaded_models == 1  # from concurrentRunners
    assert current_limits().max_loaded_models == 1


def test_importing_the_same_files_twice_changes_nothing_more(tmp_path: Path, models_dir: Path) -> None:
    scan_models()
    files = [*seed_files(tmp_path, models_dir), llama_runner_file(tmp_path, models_dir)]
    call_command("import_config", *files)
    before = catalog_state()

    call_command("import_config", *files)

    assert catalog_state() == before


def test_an_import_that_sets_limits_tells_the_scheduler_once_it_commits_and_a_repeat_stays_quiet(
    tmp_path: Path,
    models_dir: Path,
    quiet_events: list[dict[str, Any]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    scan_models()
    RuntimeSettings.objects.create(pk=1, memory_budget=8 * 1024**3)  # set in the dashboard
    files = seed_files(tmp_path, models_dir)

    with django_capture_on_commit_callbacks(execute=True):
        call_command("import_config", *files)
        assert quiet_events == []  # nothing is announced before the commit

    assert [event["type"] for event in quiet_events] == ["settings.changed"]
    assert quiet_events[0]["settings"]["max_loaded_models"] == 2
    assert quiet_events[0]["settings"]["memory_budget"] == 8 * 1024**3  # the dashboard's value stays
    with django_capture_on_commit_callbacks(execute=True):
        call_command("import_config", *files)
    assert len(quiet_events) == 1  # the same values again: no news


def test_the_command_prints_which_limits_changed_and_a_repeat_prints_none(
    tmp_path: Path, models_dir: Path
) -> None:
    scan_models()
    files = seed_files(tmp_path, models_dir)
    out = io.StringIO()

    call_command("import_config", *files, stdout=out)

    assert "limit changed: max_loaded_models = 2" in out.getvalue()
    assert "limit changed: default_model = tiny-chat" in out.getvalue()
    out = io.StringIO()
    call_command("import_config", *files, stdout=out)
    assert "limit changed" not in out.getvalue()
    assert "0 limits changed" in out.getvalue()


def test_a_model_outside_the_folders_is_imported_with_its_metadata_or_as_missing(
    tmp_path: Path, settings: Any
) -> None:
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.LLAMAPROXY_MODELS_DIRS = []
    elsewhere = write_tiny_model(tmp_path / "elsewhere" / "Lonely-Model.gguf", seed=4)[0]
    config = {
        "models": {
            "lonely": {"model_path": str(elsewhere)},
            "not-here-yet": {"model_path": str(tmp_path / "later" / "Future.gguf")},
        }
    }

    call_command("import_config", write_json(tmp_path / "models_config.json", config))

    lonely = CatalogModel.objects.get(name="lonely-model")
    assert lonely.state == "available" and lonely.architecture == "llama"
    assert list(lonely.aliases.values_list("alias", flat=True)) == ["lonely"]
    assert CatalogModel.objects.get(name="future").state == "missing"
    scan_models()  # the scan keeps entries outside its folders up to date instead of marking them missing
    assert CatalogModel.objects.get(name="lonely-model").state == "available"


def test_relative_model_paths_are_taken_from_the_project_folder(tmp_path: Path, settings: Any) -> None:
    settings.BACKUP_DIR = tmp_path / "backups"
    config = {"models": {"demo": {"model_path": "models/does-not-exist-here.gguf"}}}

    call_command("import_config", write_json(tmp_path / "models_config.json", config))

    assert CatalogModel.objects.get(name="does-not-exist-here").path == str(
        BASE_DIR / "models" / "does-not-exist-here.gguf"
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"parameters": {"ctx_size": "big"}},
            "models.Qwen3 14B.parameters.ctx_size: ctx_size must be a whole number",
        ),
        (
            {"parameters": {"ctx_sise": 4096}},
            "models.Qwen3 14B.parameters.ctx_sise: ctx_sise: unknown llama-server parameter",
        ),
        ({"parameters": {"cache-type-k": "q3"}}, "parameters.cache_type_k: cache_type_k must be one of"),
        ({"llama_cpp_runtime": "vulkan"}, "models.Qwen3 14B.llama_cpp_runtime: 'vulkan' is not a runtime"),
        ({"model_path": ""}, "models.Qwen3 14B.model_path: must be a non-empty text"),
        ({"has_tools": "yes"}, "models.Qwen3 14B.has_tools: must be true or false"),
        ({"paramters": {}}, "models.Qwen3 14B.paramters: unknown key"),
    ],
)
def test_a_broken_model_entry_changes_nothing_and_names_file_key_and_problem(
    tmp_path: Path, models_dir: Path, change: dict[str, Any], expected: str
) -> None:
    scan_models()
    call_command("import_config", *seed_files(tmp_path, models_dir))
    before = catalog_state()
    backups = len(list_backups())
    good = json.loads(Path(llama_runner_file(tmp_path, models_dir)).read_text())
    good["models"]["Qwen3 14B"].update(change)
    broken = write_json(tmp_path / "broken.json", good)

    with pytest.raises(CommandError) as error:
        call_command("import_config", *seed_files(tmp_path, models_dir), broken)

    assert f"{broken}: " in str(error.value)
    assert expected in str(error.value)
    assert catalog_state() == before
    assert len(list_backups()) == backups  # validation failed before anything, backups included


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a config file is a JSON object"),
        ('{"default_model": "nobody", "models": {}}', "default_model: 'nobody' is not one of the models"),
        ('{"models": {"x": {"model_path": "a.gguf"}}, "modles": {}}', "modles: unknown key"),
        ('{"concurrentRunners": 0, "models": {}}', "concurrentRunners: must be a whole number, at least 1"),
        (
            '{"default_runtime": "gpu", "llama-runtimes": {"cpu": "llama-server"}}',
            "default_runtime: 'gpu' is not a runtime",
        ),
    ],
)
def test_broken_files_are_refused_with_the_file_named(
    tmp_path: Path, settings: Any, content: str, expected: str
) -> None:
    settings.BACKUP_DIR = tmp_path / "backups"
    path = tmp_path / "bad.json"
    path.write_text(content)

    with pytest.raises(CommandError) as error:
        call_command("import_config", str(path))

    assert str(path) in str(error.value) and expected in str(error.value)
    assert CatalogModel.objects.count() == 0


def test_a_conflict_with_the_catalog_rolls_the_whole_import_back(tmp_path: Path, models_dir: Path) -> None:
    scan_models()
    other = CatalogModel.objects.get(name="tiny-chat")
    ModelAlias.objects.create(alias="Qwen3 14B ik", model=other)  # a name the config wants for another entry
    before = catalog_state()

    with pytest.raises(CommandError, match="already used by tiny-chat for another file"):
        call_command("import_config", llama_runner_file(tmp_path, models_dir))

    assert catalog_state() == before


def test_an_import_writes_a_backup_first(tmp_path: Path, models_dir: Path) -> None:
    call_command("import_config", *seed_files(tmp_path, models_dir))

    assert [p.name.split("-", 2)[2] for p in list_backups()] == ["before-import.json"]


def test_a_dry_run_validates_without_changing_anything(tmp_path: Path, models_dir: Path, capsys: Any) -> None:
    call_command("import_config", "--dry-run", *seed_files(tmp_path, models_dir))

    assert CatalogModel.objects.count() == 0
    assert "The files are valid" in capsys.readouterr().out


def test_the_example_configs_in_the_repository_are_valid(tmp_path: Path, settings: Any) -> None:
    settings.BACKUP_DIR = tmp_path / "backups"
    files = [str(BASE_DIR / "config" / name) for name in ("app_config.json", "models_config.json")]

    call_command("import_config", *files)
    call_command("import_config", str(BASE_DIR / "config" / "llama-runner-config.json"))

    tiny = CatalogModel.objects.get(name="tiny-chat")
    assert tiny.path == str(BASE_DIR / "models" / "tiny-chat.gguf")
    assert set(CatalogModel.objects.filter(base=tiny).values_list("name", flat=True)) == {
        "tiny-chat-long",
        "tiny-chat-ik",
    }


def test_the_command_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    """Through a real process: what a user sees in the terminal."""
    home = tmp_path / "home"
    env = {**os.environ, "LLAMAPROXY_HOME": str(home), "LLAMAPROXY_ENV_FILE": str(tmp_path / "none.env")}
    env.pop("LLAMAPROXY_DATABASE", None)
    bad = write_json(
        tmp_path / "models_config.json",
        {"models": {"m": {"model_path": "m.gguf", "parameters": {"ctx_size": -5}}}},
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=BASE_DIR, env=env, check=True)

    done = subprocess.run(
        [sys.executable, "manage.py", "import_config", bad],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
    )

    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{bad}: models.m.parameters.ctx_size: ctx_size must be at least 0" in done.stderr
