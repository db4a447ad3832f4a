from django.apps import AppConfig


class LlamaproxyConfig(AppConfig):
    name = "llamaproxy"
    verbose_name = "llamaproxy"

    def ready(self) -> None:
        from llamaproxy import checks  # noqa: F401  (registers the system checks)
