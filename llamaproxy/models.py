"""Settings a user edits in the dashboard; the environment's values are the defaults."""

from __future__ import annotations

from django.db import models, transaction


class RuntimeSettings(models.Model):
    """One row (pk=1) of overrides; an empty field means "use the environment's value"."""

    max_loaded_models = models.PositiveIntegerField(
        null=True, blank=True, help_text="Runners alive at once (LLAMAPROXY_MAX_LOADED_MODELS)"
    )
    memory_budget = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="Bytes the loaded models may need together (LLAMAPROXY_MEMORY_BUDGET)",
    )
    default_ttl = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Idle seconds before a runner is stopped, 0 = never (LLAMAPROXY_DEFAULT_TTL)",
    )
    default_model = models.CharField(
        max_length=200, null=True, blank=True, help_text="Model used when a request names none"
    )
    request_timeout = models.FloatField(
        null=True,
        blank=True,
        help_text="Seconds a request may wait for its runner (LLAMAPROXY_REQUEST_TIMEOUT)",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "runtime settings"
        verbose_name_plural = "runtime settings"

    def __str__(self) -> str:
        return "runtime settings"

    @classmethod
    def load(cls) -> RuntimeSettings:
        row, _ = cls.objects.get_or_create(pk=1)
        return row

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)
        from llamaproxy.runtime import invalidate_limits

        # Now for this thread, and again once committed: a reader in between must not keep the old value.
        invalidate_limits()
        transaction.on_commit(invalidate_limits, using=kwargs.get("using"))
