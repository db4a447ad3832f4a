from django.apps import AppConfig


class ModelsCatalogConfig(AppConfig):
    name = "models_catalog"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from models_catalog.api import register_error_handler

        register_error_handler()
