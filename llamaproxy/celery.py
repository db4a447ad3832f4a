"""The Celery app of the node agent: the worker owns the runner processes of its machine."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamaproxy.settings")

app = Celery("llamaproxy")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
