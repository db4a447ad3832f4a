"""The node agent's VRAM readings: stored per ready runner and announced only when they change.

nvidia-smi and the channel layer are replaced; the database is the test database.
"""

from __future__ import annotations

from typing import Any

import pytest

from models_catalog.models import CatalogModel
from runners import agent
from runners.models import Runner, RunnerState

pytestmark = pytest.mark.django_db

GIB = 1024**3


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(agent, "publish_sync", lambda event, groups: sent.append(event))
    return sent


def ready_runner(name: str, pid: int) -> Runner:
    model = CatalogModel.objects.create(name=name, path=f"/models/{name}.gguf")
    return Runner.objects.create(model=model, state=RunnerState.READY, pid=pid, attempt=f"{name}-1")


def test_readings_are_stored_and_announced_once(monkeypatch, published) -> None:
    gpu_runner, cpu_runner = ready_runner("big", 4242), ready_runner("small", 4343)
    monkeypatch.setattr(agent.gpu, "process_memory", lambda: {4242: 3 * GIB, 9999: GIB})
    agent._record_vram(list(Runner.objects.select_related("model")))
    gpu_runner.refresh_from_db()
    cpu_runner.refresh_from_db()
    assert (gpu_runner.vram_bytes, cpu_runner.vram_bytes) == (3 * GIB, 0)
    assert sorted((e["model"], e["vram_bytes"], e["attempt"]) for e in published) == [
        ("big", 3 * GIB, "big-1"),
        ("small", 0, "small-1"),
    ]
    published.clear()
    agent._record_vram(list(Runner.objects.select_related("model")))
    assert published == [], "unchanged readings are not announced again"


def test_no_nvidia_smi_records_nothing(monkeypatch, published) -> None:
    runner = ready_runner("big", 4242)
    monkeypatch.setattr(agent.gpu, "process_memory", lambda: None)
    agent._record_vram([runner])
    runner.refresh_from_db()
    assert runner.vram_bytes is None and published == []


def test_a_runner_that_stopped_meanwhile_is_not_updated(monkeypatch, published) -> None:
    runner = ready_runner("big", 4242)
    Runner.objects.filter(pk=runner.pk).update(state=RunnerState.STOPPED)
    monkeypatch.setattr(agent.gpu, "process_memory", lambda: {4242: GIB})
    agent._record_vram([runner])
    runner.refresh_from_db()
    assert runner.vram_bytes is None and published == []
