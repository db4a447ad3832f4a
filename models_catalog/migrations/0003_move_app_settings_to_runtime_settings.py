"""AppSetting is gone: its values move into llamaproxy.RuntimeSettings, the one place limits live.

A value already set in RuntimeSettings (the dashboard's) wins; a value that would not pass the
dashboard's validation is dropped. Reversing copies the three keys back.
"""

from typing import Any

from django.db import migrations

MOVED = ("default_model", "max_loaded_models", "default_ttl", "memory_budget", "request_timeout")


def _valid(key: str, value: Any) -> Any:
    from llamaproxy.runtime import LimitError, clean_limit

    try:
        return clean_limit(key, value)
    except LimitError:
        return None


def forwards(apps, schema_editor) -> None:
    AppSetting = apps.get_model("models_catalog", "AppSetting")
    RuntimeSettings = apps.get_model("llamaproxy", "RuntimeSettings")
    values = {row.key: _valid(row.key, row.value) for row in AppSetting.objects.filter(key__in=MOVED)}
    values = {key: value for key, value in values.items() if value is not None}
    if not values:
        return
    row, _ = RuntimeSettings.objects.get_or_create(pk=1)
    changed = False
    for key, value in values.items():
        if getattr(row, key) is None:
            setattr(row, key, value)
            changed = True
    if changed:
        row.save()


def backwards(apps, schema_editor) -> None:
    AppSetting = apps.get_model("models_catalog", "AppSetting")
    RuntimeSettings = apps.get_model("llamaproxy", "RuntimeSettings")
    row = RuntimeSettings.objects.filter(pk=1).first()
    if row is None:
        return
    for key in ("default_model", "max_loaded_models", "default_ttl"):
        value = getattr(row, key)
        if value is not None:
            AppSetting.objects.update_or_create(key=key, defaults={"value": value})


class Migration(migrations.Migration):
    dependencies = [
        ("models_catalog", "0002_variants_overrides_app_settings"),
        ("llamaproxy", "0001_runtime_settings"),
    ]

    operations = [
        migrations.RunPython(forwards, backwards),
        migrations.DeleteModel(name="AppSetting"),
    ]
