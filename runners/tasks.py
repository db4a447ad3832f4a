"""Celery tasks of the node agent: thin wrappers that take ids and call runners.agent.

The gateway sends start/stop to this machine's own queue (`node.<hostname>`); health_sweep runs
on beat (every 5 s) and refreshes the worker heartbeat too. Signals stop this worker's runners
when it shuts down and reconcile them when it starts.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from llamaproxy.tasks import heartbeat
from runners import agent

log = logging.getLogger(__name__)


@shared_task(name="runners.tasks.start_runner", ignore_result=True)
def start_runner(
    model_id: int,
    attempt: str,
    overrides: dict[str, Any] | None = None,
    ttl_seconds: int | None = None,
    memory_estimate: int | None = None,
    stop_first: list[int] | None = None,
) -> str:
    """Start a model's runner; `stop_first`: the (idle) runners it replaces, stopped before it."""
    for victim in stop_first or []:
        try:
            agent.stop_runner(victim)
        except Exception:  # the start goes on: the health sweep finds what could not be stopped
            log.exception("could not stop the runner of model %s before a swap", victim)
    return agent.start_runner(model_id, attempt, overrides, ttl_seconds, memory_estimate)


@shared_task(name="runners.tasks.stop_runner", ignore_result=True)
def stop_runner(model_id: int) -> str:
    return agent.stop_runner(model_id)


@shared_task(name="runners.tasks.health_sweep", ignore_result=True)
def health_sweep() -> int:
    # Beat's one frequent task also refreshes the worker heartbeat: a beat tick and a task
    # dispatch cost milliseconds of CPU each, which an idle machine should not spend twice.
    heartbeat()
    return agent.health_sweep()


@worker_ready.connect
def _reconcile_on_start(**_: object) -> None:
    try:
        agent.reconcile_node()
    except Exception:  # a failed reconcile must not keep the worker from serving
        log.exception("could not reconcile runners at worker start")


@worker_shutdown.connect
def _stop_runners_on_shutdown(**_: object) -> None:
    stopped = agent.stop_node_runners()
    if stopped:
        log.info("stopped %d runner(s) at worker shutdown", stopped)
