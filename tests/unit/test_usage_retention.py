"""Usage retention: the hourly beat task keeps LLAMAPROXY_USAGE_RETENTION_DAYS of history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from proxies.models import StoredChat, UsageRecord
from proxies.tasks import prune_usage_task

pytestmark = pytest.mark.django_db


def add_row(age: timedelta, model: str) -> None:
    UsageRecord.objects.create(
        created_at=timezone.now() - age, face="api", endpoint="chat/completions", model=model, status=200,
        duration_ms=1.0,
    )  # fmt: skip


def test_rows_older_than_the_retention_are_pruned_and_the_rest_kept(settings) -> None:
    settings.LLAMAPROXY_USAGE_RETENTION_DAYS = 30
    add_row(timedelta(days=31), "old")
    add_row(timedelta(days=400), "older")
    add_row(timedelta(days=29, hours=23), "recent")
    add_row(timedelta(0), "now")
    assert prune_usage_task() == 2
    assert sorted(UsageRecord.objects.values_list("model", flat=True)) == ["now", "recent"]
    assert prune_usage_task() == 0


def test_stored_lm_studio_chats_older_than_the_retention_go_too(settings) -> None:
    settings.LLAMAPROXY_USAGE_RETENTION_DAYS = 30
    for response_id, age in (("resp_old", timedelta(days=31)), ("resp_new", timedelta(days=1))):
        StoredChat.objects.create(response_id=response_id, model="m", messages=[])
        StoredChat.objects.filter(pk=response_id).update(created_at=timezone.now() - age)
    prune_usage_task()
    assert list(StoredChat.objects.values_list("response_id", flat=True)) == ["resp_new"]


def test_a_retention_of_zero_keeps_everything(settings) -> None:
    settings.LLAMAPROXY_USAGE_RETENTION_DAYS = 0
    add_row(timedelta(days=3650), "ancient")
    assert prune_usage_task() == 0
    assert UsageRecord.objects.count() == 1


def test_beat_runs_the_prune_task_hourly_and_the_worker_knows_it() -> None:
    from llamaproxy.celery import app

    app.loader.import_default_modules()  # what the worker does at start: autodiscovered task modules
    entry = settings.CELERY_BEAT_SCHEDULE["prune-usage"]
    assert entry["schedule"] == 3600.0
    assert app.tasks[entry["task"]].name == prune_usage_task.name
    for name, scheduled in settings.CELERY_BEAT_SCHEDULE.items():
        assert scheduled["task"] in app.tasks, f"beat entry {name} names a task no worker has"
