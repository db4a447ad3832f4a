"""What clients did: API keys and the usage history."""

from __future__ import annotations

from django.db import models


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The key's first characters, to recognise it")
    key_hash = models.CharField(
        max_length=64, unique=True, help_text="sha256 of the key; the key itself is never stored"
    )
    allowed_models = models.JSONField(
        default=list, blank=True, help_text="Model names this key may use (empty = all)"
    )
    is_admin = models.BooleanField(default=False, help_text="May also use the management API")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class UsageRecord(models.Model):
    created_at = models.DateTimeField(db_index=True)
    face = models.CharField(max_length=16)
    endpoint = models.CharField(max_length=100)
    model = models.CharField(max_length=200, db_index=True, blank=True, default="")
    client_address = models.CharField(max_length=64, blank=True, default="")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage"
    )
    api_key_name = models.CharField(max_length=100, blank=True, default="")
    status = models.PositiveSmallIntegerField()
    stream = models.BooleanField(default=False)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    prefill_tps = models.FloatField(null=True, blank=True)
    decode_tps = models.FloatField(null=True, blank=True)
    duration_ms = models.FloatField()
    load_ms = models.FloatField(null=True, blank=True)
    audio_seconds = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["face", "created_at"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.face} {self.endpoint} {self.model} {self.status}"


class StoredChat(models.Model):
    """A point in a stateful conversation: the messages up to and including the answer that got
    this `response_id`. A later request naming it as its `previous_response_id` goes on from
    there (any earlier point can be branched from). LM Studio's `/api/v1/chat` keeps OpenAI chat
    messages (its system prompt first); the OpenAI Responses API keeps its input and output items.
    See proxies/conversations.py."""

    class Kind(models.TextChoices):
        LMSTUDIO = "lmstudio", "LM Studio /api/v1/chat"
        RESPONSES = "responses", "OpenAI Responses API"

    response_id = models.CharField(max_length=100, primary_key=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.LMSTUDIO)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    model = models.CharField(max_length=200)
    messages = models.JSONField(default=list, help_text="The conversation")
    response = models.JSONField(
        null=True, blank=True, help_text="The Responses API's response object (GET /v1/responses/{id})"
    )
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "stored conversation"
