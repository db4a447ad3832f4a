"""Worker-side housekeeping tasks."""

from __future__ import annotations

import time

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from llamaproxy.health import redis_client


@shared_task(name="llamaproxy.tasks.heartbeat", ignore_result=True)
def heartbeat() -> None:
    """The gateway's /health reads this key to know the worker (and its beat) is alive."""
    redis_client().set(settings.WORKER_HEARTBEAT_KEY, time.time(), ex=settings.WORKER_HEARTBEAT_TTL * 3)


@worker_ready.connect
def _report_ready(**_: object) -> None:
    heartbeat()
