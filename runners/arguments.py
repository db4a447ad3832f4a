"""The argument list a runner is started with, from the model's runner settings. Never a shell:
even a custom command line is split with shlex and its placeholders filled per argument."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from models_catalog.gguf_metadata import pooling_name
from models_catalog.parameters import parameter_args, validate_parameters

BinaryFinder = Callable[[str], Path | None]
# The parameters, and the flags, that decide whether llama-server embeds or reranks.
POOLING_PARAMETERS = frozenset({"pooling", "reranking"})
POOLING_FLAGS = frozenset({"--pooling", "--reranking", "--rerank", "--embedding", "--embeddings"})


class RunnerConfigError(Exception):
    """The settings cannot produce a command (no binary, an empty custom command...)."""


def _default_finder(kind: str) -> Path | None:
    from runners.provisioning import installed_binary

    return installed_binary(kind)


def effective_parameters(settings: Any | None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The model's validated parameters with a request's runner parameters on top."""
    parameters = dict(getattr(settings, "parameters", None) or {})
    if overrides:
        parameters.update(validate_parameters(dict(overrides)))
    return parameters


def runner_args(
    model: Any,
    settings: Any | None,
    *,
    host: str,
    port: int,
    overrides: Mapping[str, Any] | None = None,
    find_binary: BinaryFinder = _default_finder,
) -> list[str]:
    """`[binary, -m, path, --host, host, --port, port, ...]` for a CatalogModel and its RunnerSettings."""
    runtime = getattr(settings, "runtime", "llama-server") or "llama-server"
    extra_args = [str(arg) for arg in (getattr(settings, "extra_args", None) or [])]
    if runtime == "custom":
        return _custom_args(model, settings, port, extra_args)
    server_binary = (getattr(settings, "server_binary", "") or "").strip()
    if runtime == "whisper-server":
        binary = _chosen_binary(model, server_binary) or _binary(find_binary, "whisper-server")
        return [str(binary), "-m", model.path, "--host", host, "--port", str(port), *extra_args]

    binary = _chosen_binary(model, server_binary) or _binary(find_binary, "llama-server")
    parameters = effective_parameters(settings, overrides)
    args = [str(binary), "-m", model.path, "--host", host, "--port", str(port), "--alias", model.name]
    is_embedding = model.kind == "embedding" or getattr(model, "cap_embedding", False)
    declared = declared_pooling(model)
    if declared == "rank" and not POOLING_PARAMETERS & parameters.keys():
        # A reranker (a classification head, pooled by rank): llama-server serves /v1/rerank
        # only with --reranking, and an embeddings pooling would take its scores away.
        parameters["reranking"] = True
    elif is_embedding:
        # llama-server serves /v1/embeddings only with --embeddings. A model that declares its
        # pooling (CLS, last token...) was trained for it and llama-server reads it from the
        # file; one that does not needs one, or its vectors are per token.
        parameters.setdefault("embeddings", True)
        if declared is None:
            parameters.setdefault("pooling", "mean")
    mmproj = getattr(model, "mmproj_path", "")
    if getattr(model, "cap_vision", False) and mmproj:
        parameters.setdefault("mmproj", mmproj)
    args += parameter_args(parameters)
    args += extra_args
    if "--metrics" not in args:
        args.append("--metrics")  # /metrics feeds the dashboard's per-runner numbers
    return args


def pools_by_rank(model: Any, parameters: Mapping[str, Any], extra_args: Sequence[str] = ()) -> bool | None:
    """Whether the model's llama-server, started by runner_args with `parameters`, pools by rank:
    a reranker, whose /v1/embeddings would give only its relevance scores. None when extra
    arguments choose the pooling themselves (only the running server knows then)."""
    if any(str(arg).split("=", 1)[0] in POOLING_FLAGS for arg in extra_args):
        return None
    if "pooling" in parameters:
        return parameters["pooling"] == "rank"
    if parameters.get("reranking"):
        return True
    return declared_pooling(model) == "rank"


def declared_pooling(model: Any) -> str | None:
    """The pooling the model's file declares (its GGUF metadata, kept by the scan), if any."""
    metadata = getattr(model, "metadata", None) or {}
    return pooling_name(metadata.get(f"{getattr(model, 'architecture', '')}.pooling_type"))


def _chosen_binary(model: Any, server_binary: str) -> Path | None:
    """The model's own server binary (e.g. an ik_llama build from a llama-runner import), if set."""
    if not server_binary:
        return None
    binary = Path(os.path.expanduser(server_binary))
    if not binary.is_file():
        raise RunnerConfigError(
            f"the server binary of '{model.name}' does not exist: {binary} "
            "(fix the model's server_binary setting, or clear it to use the installed llama-server)"
        )
    if not os.access(binary, os.X_OK):
        raise RunnerConfigError(f"the server binary of '{model.name}' is not executable: {binary}")
    return binary


def _binary(find_binary: BinaryFinder, kind: str) -> Path:
    binary = find_binary(kind)
    if binary is None:
        setting = "LLAMAPROXY_LLAMA_SERVER" if kind == "llama-server" else "LLAMAPROXY_WHISPER_SERVER"
        command = "install_llama_server" if kind == "llama-server" else "install_llama_server --whisper"
        raise RunnerConfigError(f"{kind} is not installed: run `manage.py {command}` or set {setting}")
    return binary


def _custom_args(model: Any, settings: Any, port: int, extra_args: list[str]) -> list[str]:
    command = (getattr(settings, "custom_command", "") or "").strip()
    if not command:
        raise RunnerConfigError(f"model '{model.name}' uses the custom runtime but has no custom command")
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise RunnerConfigError(f"the custom command of '{model.name}' cannot be parsed: {exc}") from None
    # Placeholders are filled after splitting, so a model path with spaces stays one argument.
    return [word.replace("{port}", str(port)).replace("{model}", model.path) for word in words] + extra_args
