from django.contrib import admin, messages
from django.http import HttpRequest

from proxies.keys import create_key, key_cache
from proxies.models import ApiKey, UsageRecord


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "is_admin", "created_at", "last_used_at", "revoked_at")
    list_filter = ("is_admin", "revoked_at")
    search_fields = ("name", "prefix")
    fields = ("name", "allowed_models", "is_admin", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            key_cache.invalidate()
            return
        created, plaintext = create_key(obj.name, obj.allowed_models, obj.is_admin)
        obj.pk, obj.prefix, obj.key_hash = created.pk, created.prefix, created.key_hash
        obj.created_at = created.created_at
        messages.warning(request, f"The new key is {plaintext} — copy it now, it is not shown again.")


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "face",
        "endpoint",
        "model",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "ttft_ms",
        "duration_ms",
    )
    list_filter = ("face", "endpoint", "status", "model")
    search_fields = ("model", "client_address", "error")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False
