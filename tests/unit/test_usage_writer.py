"""The usage writer's batched INSERT: every column stored as given, and each row told its id."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from proxies.accounting import UsageMeter
from proxies.models import ApiKey, UsageRecord
from proxies.relay import RelayContext
from proxies.usage import COLUMNS, UsageWriter, usage_event

pytestmark = pytest.mark.django_db


def context(index: int, key: ApiKey | None = None) -> RelayContext:
    meter = UsageMeter(prompt_tokens=10 + index, completion_tokens=20 + index, cached_tokens=index)
    meter.prefill_tps, meter.decode_tps = 100.5, 50.25
    meter.mark_first_token()
    return RelayContext(
        face="ollama" if index % 2 else "api",
        endpoint="chat/completions",
        model=f"model-{index}",
        client_address="127.0.0.1",
        api_key_id=key.pk if key else None,
        meter=meter,
        status=200 if index else 404,
        error="" if index else "model 'x' not found",
        stream=bool(index % 2),
    )


def test_rows_are_stored_with_their_ids_and_every_column(monkeypatch) -> None:
    writer = UsageWriter()
    monkeypatch.setattr(writer, "_schedule", lambda immediately: None)  # flushed by hand below
    UsageRecord.objects.create(
        face="api", endpoint="x", status=200, duration_ms=1.0, created_at="2026-01-01T00:00Z"
    )
    key = ApiKey.objects.create(name="ci", prefix="lp_test", key_hash="0" * 64)
    for index in range(3):
        writer.record(context(index, key if index == 2 else None), load_seconds=0.5 if index == 1 else 0.0)
    assert writer._store() == [], "noted requests become rows when they are settled"
    writer.settle()
    stored = writer._store()
    assert len(stored) == 3 and writer._store() == []
    by_id = {row.pk: row for row in UsageRecord.objects.filter(pk__in=[row.id for row in stored])}
    assert len(by_id) == 3, "each row's id is its own"
    for pending in stored:
        saved = by_id[pending.id]
        for name in COLUMNS:
            assert getattr(saved, name) == getattr(pending, name), name
        assert usage_event(pending)["id"] == saved.pk
    assert by_id[stored[1].id].load_ms == 500.0 and by_id[stored[0].id].error.startswith("model 'x'")
    key.refresh_from_db()
    assert key.last_used_at is not None


def test_a_noted_request_is_timed_when_noted_and_counted_in_the_metrics_once_settled(monkeypatch) -> None:
    from proxies import metrics

    writer = UsageWriter()
    monkeypatch.setattr(writer, "_schedule", lambda immediately: None)

    def requests() -> float:
        labels = {"model": "settle-test", "face": "api", "endpoint": "completions", "status": "200"}
        return metrics.registry.get_sample_value("llamaproxy_requests_total", labels) or 0.0

    ctx = RelayContext(face="api", endpoint="completions", model="settle-test", status=200)
    ctx.meter.started -= 0.25  # a request that took a quarter of a second
    writer.record(ctx)
    noted_duration = ctx.meter.duration_ms
    time.sleep(0.05)  # the row is made later; its duration is still the one noted
    assert requests() == 0.0
    writer.settle()
    assert requests() == 1.0
    (row,) = writer._rows
    assert row.duration_ms == noted_duration and 250 <= row.duration_ms < 290
    assert abs((timezone.now() - row.created_at).total_seconds() - 0.3) < 0.1
