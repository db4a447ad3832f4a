"""Usage retention: a beat task prunes rows (and kept conversations) older than
LLAMAPROXY_USAGE_RETENTION_DAYS."""

from celery import shared_task
from django.conf import settings

from proxies.usage import prune_usage


@shared_task(name="proxies.tasks.prune_usage")
def prune_usage_task() -> int:
    return prune_usage(settings.LLAMAPROXY_USAGE_RETENTION_DAYS)
