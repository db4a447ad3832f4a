"""System checks of what serving needs, run by `manage.py validate` (and `check --deploy`).

Registered as deployment checks so that ordinary commands (migrate, make_tiny_model) do not
refuse to run before llama-server is built.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Warning, register

RUNTIME = "llamaproxy"


@register(RUNTIME, deploy=True)
def check_llama_server(app_configs=None, **kwargs) -> list:
    from runners.provisioning import installed_binary

    if installed_binary("llama-server") is None:
        return [
            Error(
                "llama-server is not installed.",
                hint="Run `python manage.py install_llama_server`, or set LLAMAPROXY_LLAMA_SERVER to an existing binary.",
                id="llamaproxy.E001",
            )
        ]
    return []


@register(RUNTIME, deploy=True)
def check_models_dirs(app_configs=None, **kwargs) -> list:
    problems = []
    for folder in settings.LLAMAPROXY_MODELS_DIRS:
        if not folder.is_dir():
            problems.append(
                Warning(
                    f"Model folder {folder} does not exist.",
                    hint="Create it and put GGUF files in it, or set LLAMAPROXY_MODELS_DIRS.",
                    id="llamaproxy.W002",
                )
            )
    return problems


@register(RUNTIME, deploy=True)
def check_data_dir(app_configs=None, **kwargs) -> list:
    import os

    if not os.access(settings.LLAMAPROXY_HOME, os.W_OK):
        return [
            Error(
                f"The data dir {settings.LLAMAPROXY_HOME} is not writable.",
                hint="Set LLAMAPROXY_HOME.",
                id="llamaproxy.E003",
            )
        ]
    return []
