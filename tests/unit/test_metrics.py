"""The Prometheus runner-state gauges cover every state the scheduler reports."""

from __future__ import annotations

from proxies import metrics
from runners import scheduler


def test_every_scheduler_state_has_a_runner_state_gauge() -> None:
    reported = {
        scheduler.STOPPED,
        scheduler.STARTING,
        scheduler.READY,
        scheduler.DRAINING,
        scheduler.STOPPING,
        scheduler.FAILED,
    }
    assert reported <= set(metrics.STATES)


def test_a_draining_runner_shows_as_draining_and_nothing_else() -> None:
    text, _ = metrics.render([{"model": "metrics-drain", "state": "draining", "queued": 2, "in_flight": 1}])
    lines = [line for line in text.decode().splitlines() if 'model="metrics-drain"' in line]
    states = {
        line.split('state="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("llamaproxy_runner_state{")
    }
    assert states["draining"] == 1.0
    assert sum(states.values()) == 1.0
    assert 'llamaproxy_queue_depth{model="metrics-drain"} 2.0' in lines
