"""What runs: one Runner row per catalog model, the record a restarted gateway rebuilds from."""

from __future__ import annotations

from django.db import models

from models_catalog.models import CatalogModel


class RunnerState(models.TextChoices):
    STOPPED = "stopped", "Stopped"
    STARTING = "starting", "Starting"
    READY = "ready", "Ready"
    STOPPING = "stopping", "Stopping"
    FAILED = "failed", "Failed"


class Runner(models.Model):
    model = models.OneToOneField(CatalogModel, on_delete=models.CASCADE, related_name="runner")
    state = models.CharField(max_length=16, choices=RunnerState.choices, default=RunnerState.STOPPED)
    node = models.CharField(
        max_length=200, blank=True, default="", help_text="Queue of the node agent hosting it"
    )
    host = models.CharField(max_length=255, blank=True, default="")
    port = models.PositiveIntegerField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    pid_started = models.FloatField(null=True, blank=True, help_text="Process create time (pids get reused)")
    args = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    ttl_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="Idle TTL in force (request-level override)"
    )
    memory_estimate = models.BigIntegerField(null=True, blank=True)
    vram_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="GPU memory the process holds, as nvidia-smi reports it"
    )
    # Which start this row describes: events and the gateway's safety poll match on it.
    attempt = models.CharField(max_length=32, blank=True, default="")
    parameters = models.JSONField(
        default=dict, blank=True, help_text="Request-level runner parameters in force"
    )
    failure_reason = models.TextField(blank=True, default="")
    log_excerpt = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model__name"]

    def __str__(self) -> str:
        return f"{self.model.name}: {self.state}"

    @property
    def base_url(self) -> str | None:
        if self.state != RunnerState.READY or not self.port:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
