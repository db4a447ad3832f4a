"""What models exist: catalog entries, their aliases, runner settings, and the folders scanned."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models

from models_catalog.parameters import validate_parameters, validate_sampling

# What a model's file header says about it (read by discovery, carried by backups).
HEADER_FIELDS = (
    "architecture",
    "display_name",
    "size_label",
    "parameter_count",
    "file_type",
    "quantization",
    "context_length",
    "embedding_length",
    "block_count",
    "head_count",
    "head_count_kv",
    "chat_template",
    "metadata",
    "cap_completion",
    "cap_tools",
    "cap_vision",
    "cap_embedding",
    "cap_rerank",
    "cap_insert",
    "cap_thinking",
    "mmproj_path",
)


class ModelFolder(models.Model):
    path = models.CharField(max_length=1024, unique=True)
    enabled = models.BooleanField(default=True)
    last_scanned_at = models.DateTimeField(null=True, blank=True)
    last_scan_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["path"]

    def __str__(self) -> str:
        return self.path


class CatalogModel(models.Model):
    class Kind(models.TextChoices):
        LLM = "llm", "Language model"
        EMBEDDING = "embedding", "Embedding model"
        WHISPER = "whisper", "Whisper (speech to text)"

    class State(models.TextChoices):
        AVAILABLE = "available", "Available"
        MISSING = "missing", "File missing"
        ERROR = "error", "Unreadable"

    class Source(models.TextChoices):
        SCAN = "scan", "Discovered by a scan"
        IMPORT = "import", "Imported from a config file"
        MANUAL = "manual", "Added by hand"
        DOWNLOAD = "download", "Downloaded from Hugging Face"

    # The id clients use (`model` in requests); unique across names and aliases.
    name = models.CharField(max_length=200, unique=True)
    path = models.CharField(max_length=1024, help_text="GGUF file (the first part of a split model)")
    # A variant shares its base's file with settings of its own (e.g. one GGUF at two context sizes);
    # a path has one entry without a base, and the scan keeps every entry of a path up to date.
    base = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="variants",
        verbose_name="variant of",
    )
    folder = models.ForeignKey(
        ModelFolder, null=True, blank=True, on_delete=models.SET_NULL, related_name="models"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.LLM)
    state = models.CharField(max_length=16, choices=State.choices, default=State.AVAILABLE)
    error = models.TextField(blank=True, default="")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.SCAN)
    enabled = models.BooleanField(default=True)

    size_bytes = models.BigIntegerField(default=0, help_text="All parts of a split model together")
    mtime = models.DateTimeField(null=True, blank=True)
    split_count = models.PositiveIntegerField(default=1)
    # sha256 of the file(s), computed lazily (Ollama's `digest`); `digest_mtime` says for which file version.
    digest = models.CharField(max_length=71, blank=True, default="")
    digest_mtime = models.FloatField(null=True, blank=True)

    # GGUF metadata (headers only)
    architecture = models.CharField(max_length=64, blank=True, default="")
    display_name = models.CharField(max_length=256, blank=True, default="")
    size_label = models.CharField(max_length=32, blank=True, default="")
    parameter_count = models.BigIntegerField(null=True, blank=True)
    file_type = models.IntegerField(null=True, blank=True)
    quantization = models.CharField(max_length=32, blank=True, default="")
    context_length = models.PositiveIntegerField(null=True, blank=True)
    embedding_length = models.PositiveIntegerField(null=True, blank=True)
    block_count = models.PositiveIntegerField(null=True, blank=True)
    head_count = models.PositiveIntegerField(null=True, blank=True)
    head_count_kv = models.PositiveIntegerField(null=True, blank=True)
    chat_template = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True, help_text="Other scalar GGUF keys")

    # Capabilities, derived from the metadata and the folder
    cap_completion = models.BooleanField("completion", default=True)
    cap_tools = models.BooleanField("tools", default=False)
    cap_vision = models.BooleanField("vision", default=False)
    cap_embedding = models.BooleanField("embedding", default=False)
    cap_rerank = models.BooleanField("rerank", default=False)
    cap_insert = models.BooleanField(
        "insert", default=False, help_text="Fill-in-the-middle (code completion)"
    )
    cap_thinking = models.BooleanField("thinking", default=False)
    # Set by hand or by an import's `has_tools`; None = decided from the chat template.
    tools_override = models.BooleanField(
        "tools (override)",
        null=True,
        blank=True,
        help_text="Force the tools capability on or off; empty = from the chat template",
    )
    mmproj_path = models.CharField(max_length=1024, blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "model"
        constraints = [
            models.UniqueConstraint(
                fields=["path"], condition=models.Q(base__isnull=True), name="catalog_one_base_entry_per_path"
            )
        ]

    def __str__(self) -> str:
        return self.name

    # What a variant does not take from its base: its identity and what is decided for it alone.
    OWN_FIELDS = frozenset(
        {
            "id",
            "name",
            "base",
            "enabled",
            "source",
            "tools_override",
            "created_at",
            "updated_at",
            "digest",
            "digest_mtime",
        }
    )

    def new_variant(self, name: str, source: str) -> CatalogModel:
        """An unsaved entry for this one's file (and what was read from it), called `name`; the
        base of a variant's variant is the entry without a base."""
        base = self.base or self
        entry = CatalogModel(name=name, path=base.path, base=base, source=source)
        for field in CatalogModel._meta.concrete_fields:
            if field.name not in self.OWN_FIELDS:
                setattr(entry, field.attname, getattr(base, field.attname))
        return entry

    @property
    def capabilities(self) -> list[str]:
        flags = {
            "completion": self.cap_completion,
            "tools": self.cap_tools,
            "vision": self.cap_vision,
            "embedding": self.cap_embedding,
            "rerank": self.cap_rerank,
            "insert": self.cap_insert,
            "thinking": self.cap_thinking,
        }
        return [name for name, on in flags.items() if on]


class ModelAlias(models.Model):
    alias = models.CharField(max_length=200, unique=True)
    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="aliases")

    class Meta:
        ordering = ["alias"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.alias} → {self.model.name}"

    def clean(self) -> None:
        if CatalogModel.objects.filter(name=self.alias).exists():
            raise ValidationError({"alias": f"{self.alias!r} is already a model's name"})


class RunnerSettings(models.Model):
    class Runtime(models.TextChoices):
        LLAMA_SERVER = "llama-server", "llama-server"
        WHISPER_SERVER = "whisper-server", "whisper-server"
        CUSTOM = "custom", "Custom command"

    model = models.OneToOneField(CatalogModel, on_delete=models.CASCADE, related_name="settings")
    runtime = models.CharField(max_length=32, choices=Runtime.choices, default=Runtime.LLAMA_SERVER)
    server_binary = models.CharField(
        max_length=1024,
        blank=True,
        default="",
        help_text="A llama-server (or whisper-server) binary to use instead of the installed one; empty = installed",
    )
    custom_command = models.TextField(
        blank=True,
        default="",
        help_text="For the custom runtime: a command line with {port} and {model} placeholders",
    )
    parameters = models.JSONField(default=dict, blank=True, help_text="llama-server parameters by name")
    extra_args = models.JSONField(default=list, blank=True, help_text="Further arguments, as a list")
    sampling = models.JSONField(default=dict, blank=True, help_text="Default sampling values for requests")
    ttl_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Idle seconds before the runner stops (empty = global default, 0 = never)",
    )
    pinned = models.BooleanField(default=False, help_text="Never evicted to make room")
    group = models.CharField(
        max_length=64, blank=True, default="", help_text="Runners in an exclusive group swap each other out"
    )
    exclusive = models.BooleanField(
        default=False, help_text="While this runs, no other model of its group runs"
    )
    preload = models.BooleanField(default=False, help_text="Started when llamaproxy starts")

    class Meta:
        verbose_name_plural = "runner settings"

    def __str__(self) -> str:
        return f"settings of {self.model.name}"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        try:
            self.parameters = validate_parameters(self.parameters or {})
        except ValueError as exc:
            errors["parameters"] = str(exc)
        try:
            self.sampling = validate_sampling(self.sampling or {})
        except ValueError as exc:
            errors["sampling"] = str(exc)
        if not isinstance(self.extra_args, list) or not all(isinstance(a, str) for a in self.extra_args):
            errors["extra_args"] = "extra_args must be a list of strings"
        if self.runtime == self.Runtime.CUSTOM and "{port}" not in self.custom_command:
            errors["custom_command"] = "a custom command needs the {port} placeholder"
        if errors:
            raise ValidationError(errors)
