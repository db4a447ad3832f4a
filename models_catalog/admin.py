"""Django admin for the catalog: search, filters, sortable columns, inline settings, bulk actions.

Bulk actions go through the services, which write a backup first and change everything in one
transaction; parameter values are validated by the same table as the API's.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat

from models_catalog import discovery, services
from models_catalog.errors import CatalogError
from models_catalog.models import CatalogModel, ModelAlias, ModelFolder, RunnerSettings
from models_catalog.parameters import LLAMA_SERVER_PARAMS, SAMPLING_PARAMS

CAPABILITIES = ("completion", "tools", "vision", "embedding", "rerank", "insert", "thinking")
FILE_FIELDS = (
    "path",
    "base",
    "folder",
    "kind",
    "state",
    "error",
    "source",
    "size_bytes",
    "mtime",
    "split_count",
    "digest",
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
    "cap_completion",
    "cap_tools",
    "cap_vision",
    "cap_embedding",
    "cap_rerank",
    "cap_insert",
    "cap_thinking",
    "mmproj_path",
    "chat_template",
    "metadata",
    "created_at",
    "updated_at",
)


class CapabilityFilter(admin.SimpleListFilter):
    title = "capability"
    parameter_name = "capability"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [(c, c) for c in CAPABILITIES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> QuerySet[CatalogModel]:
        if self.value() in CAPABILITIES:
            return queryset.filter(**{f"cap_{self.value()}": True})
        return queryset


class RunnerSettingsInline(admin.StackedInline):
    model = RunnerSettings
    can_delete = False
    extra = 0
    min_num = 1
    max_num = 1


class ModelAliasInline(admin.TabularInline):
    model = ModelAlias
    extra = 0


PARAMETER_CHOICES = [
    ("llama-server", [(n, f"{n} ({p.help})") for n, p in LLAMA_SERVER_PARAMS.items()]),
    ("sampling", [(n, f"{n} ({p.help})") for n, p in SAMPLING_PARAMS.items()]),
]


class ParameterForm(forms.Form):
    parameter = forms.ChoiceField(choices=PARAMETER_CHOICES)
    value = forms.CharField(
        required=False, help_text="Leave empty to remove the parameter from the selected models."
    )


class CopySettingsForm(forms.Form):
    source = forms.ModelChoiceField(
        queryset=CatalogModel.objects.all(), help_text="Whose runner settings to copy"
    )


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "architecture",
        "quantization",
        "size_label",
        "file_size",
        "context_length",
        "capability_list",
        "state",
        "enabled",
        "folder",
    )
    list_display_links = ("name",)
    list_editable = ("enabled",)
    list_filter = (
        "architecture",
        "quantization",
        CapabilityFilter,
        "folder",
        "state",
        "kind",
        "enabled",
        "source",
    )
    search_fields = ("name", "display_name", "path", "aliases__alias")
    ordering = ("name",)
    list_select_related = ("folder",)
    readonly_fields = FILE_FIELDS
    fieldsets = (
        (None, {"fields": ("name", "enabled", "tools_override")}),
        ("File", {"fields": FILE_FIELDS, "classes": ("collapse",)}),
    )
    inlines = (RunnerSettingsInline, ModelAliasInline)
    actions = ("enable_models", "disable_models", "set_parameter", "copy_settings", "rescan")

    @admin.display(description="size", ordering="size_bytes")
    def file_size(self, obj: CatalogModel) -> str:
        return filesizeformat(obj.size_bytes)

    @admin.display(description="capabilities")
    def capability_list(self, obj: CatalogModel) -> str:
        return ", ".join(obj.capabilities)

    @admin.action(description="Enable the selected models")
    def enable_models(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> None:
        count = services.set_enabled(queryset, True)
        self.message_user(request, f"{count} models enabled (a backup was written first).")

    @admin.action(description="Disable the selected models")
    def disable_models(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> None:
        count = services.set_enabled(queryset, False)
        self.message_user(request, f"{count} models disabled (a backup was written first).")

    @admin.action(description="Set a parameter on the selected models")
    def set_parameter(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> HttpResponse | None:
        form = ParameterForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            name, value = form.cleaned_data["parameter"], form.cleaned_data["value"]
            try:
                count = services.set_parameter(queryset, name, value)
            except CatalogError as exc:
                form.add_error("value", str(exc))
            else:
                shown = value if value != "" else "(removed)"
                self.message_user(
                    request, f"Set {name} = {shown} on {count} models (a backup was written first)."
                )
                return None
        return self._bulk_form(
            request, queryset, form, "set_parameter", "Set a parameter", "Set one parameter on:"
        )

    @admin.action(description="Copy runner settings from one model to the selected ones")
    def copy_settings(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> HttpResponse | None:
        form = CopySettingsForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            source = form.cleaned_data["source"]
            count = services.copy_settings(source, queryset)
            self.message_user(
                request, f"Settings of {source.name} copied to {count} models (a backup was written first)."
            )
            return None
        return self._bulk_form(
            request, queryset, form, "copy_settings", "Copy settings", "Replace the runner settings of:"
        )

    @admin.action(description="Rescan the selected models' files")
    def rescan(self, request: HttpRequest, queryset: QuerySet[CatalogModel]) -> None:
        from models_catalog.backup import write_backup

        entries = list(queryset)
        write_backup(reason="rescan")
        changed = discovery.refresh_entries(entries)
        self.message_user(
            request, f"{len(entries)} files re-read, {changed} entries changed.", messages.SUCCESS
        )

    def _bulk_form(
        self,
        request: HttpRequest,
        queryset: QuerySet[CatalogModel],
        form: forms.Form,
        action: str,
        title: str,
        explanation: str,
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": title,
            "explanation": explanation,
            "models": list(queryset),
            "form": form,
            "action": action,
        }
        return render(request, "admin/models_catalog/bulk_action.html", context)


@admin.register(ModelFolder)
class ModelFolderAdmin(admin.ModelAdmin):
    list_display = ("path", "enabled", "model_count", "last_scanned_at", "last_scan_error")
    readonly_fields = ("last_scanned_at", "last_scan_error")
    actions = ("scan_now",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[ModelFolder]:
        return super().get_queryset(request).annotate(model_total=Count("models"))

    @admin.display(description="models", ordering="model_total")
    def model_count(self, obj: ModelFolder) -> int:
        return obj.model_total

    @admin.action(description="Scan all folders now")
    def scan_now(self, request: HttpRequest, queryset: QuerySet[ModelFolder]) -> None:
        result = discovery.scan_models()
        self.message_user(request, f"Scan done: {result.summary()}")
