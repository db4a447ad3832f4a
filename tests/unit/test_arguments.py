"""The argument list of a runner, from catalog model and runner settings — never a shell."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runners.arguments import RunnerConfigError, pools_by_rank, runner_args


@dataclass
class Model:
    name: str = "qwen"
    path: str = "/models/My Models/qwen.gguf"
    kind: str = "llm"
    cap_embedding: bool = False
    cap_vision: bool = False
    mmproj_path: str = ""
    architecture: str = "llama"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Settings:
    runtime: str = "llama-server"
    custom_command: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)


def finder(kind: str) -> Path | None:
    return Path(f"/bin/{kind}")


def args_for(model: Model, settings: Settings | None = None, **kwargs: Any) -> list[str]:
    return runner_args(model, settings, host="127.0.0.1", port=40123, find_binary=finder, **kwargs)


def test_a_plain_model_gets_binary_model_host_port_alias_and_metrics() -> None:
    assert args_for(Model()) == [
        "/bin/llama-server",
        "-m",
        "/models/My Models/qwen.gguf",
        "--host",
        "127.0.0.1",
        "--port",
        "40123",
        "--alias",
        "qwen",
        "--metrics",
    ]


def test_parameters_and_extra_args_follow_in_order() -> None:
    settings = Settings(
        parameters={"ctx_size": 8192, "jinja": True, "mlock": False}, extra_args=["--no-webui"]
    )
    args = args_for(Model(), settings)
    assert args[9:] == ["--ctx-size", "8192", "--jinja", "--no-webui", "--metrics"]


def test_request_overrides_replace_the_settings_values() -> None:
    settings = Settings(parameters={"ctx_size": 8192, "threads": 4})
    args = args_for(Model(), settings, overrides={"ctx_size": 2048})
    assert args[args.index("--ctx-size") + 1] == "2048"
    assert args[args.index("--threads") + 1] == "4"


def test_an_embedding_model_serves_embeddings_with_mean_pooling_unless_set() -> None:
    args = args_for(Model(kind="embedding"))
    assert "--embeddings" in args and args[args.index("--pooling") + 1] == "mean"
    args = args_for(Model(kind="embedding"), Settings(parameters={"pooling": "cls"}))
    assert args[args.index("--pooling") + 1] == "cls"


@pytest.mark.parametrize(("declared", "pooling"), [(1, "mean"), (2, "cls"), (3, "last")])
def test_an_embedding_model_that_declares_its_pooling_keeps_it(declared: int, pooling: str) -> None:
    model = Model(kind="embedding", architecture="bert", metadata={"bert.pooling_type": declared})
    args = args_for(model)
    assert "--embeddings" in args and "--pooling" not in args  # llama-server reads the file's
    args = args_for(model, Settings(parameters={"pooling": "mean"}))
    assert args[args.index("--pooling") + 1] == "mean"


def test_a_reranker_serves_reranking_without_an_embeddings_pooling() -> None:
    model = Model(kind="embedding", architecture="qwen3", metadata={"qwen3.pooling_type": 4})
    args = args_for(model)
    assert "--reranking" in args and "--pooling" not in args
    args = args_for(model, Settings(parameters={"embeddings": True}))
    assert "--reranking" in args and "--embeddings" in args
    args = args_for(model, Settings(parameters={"pooling": "last"}))  # asked for embeddings instead
    assert "--reranking" not in args and args[args.index("--pooling") + 1] == "last"


@pytest.mark.parametrize(
    ("declared", "parameters", "extra_args", "ranked"),
    [
        (4, {}, [], True),  # a reranker left to its file
        (4, {"embeddings": True}, [], True),
        (4, {"pooling": "mean"}, [], False),  # asked to embed instead
        (1, {}, [], False),
        (None, {"reranking": True}, [], True),  # a model turned into a reranker by hand
        (None, {"pooling": "rank"}, [], True),
        (None, {"reranking": False}, [], False),
        (4, {}, ["--pooling=mean"], None),  # extra arguments decide: only the runner knows
        (None, {}, ["--reranking"], None),
        (4, {}, ["--threads", "4"], True),
    ],
)
def test_whether_a_runner_pools_by_rank_follows_what_runner_args_starts_it_with(
    declared: int | None, parameters: dict, extra_args: list[str], ranked: bool | None
) -> None:
    metadata = {} if declared is None else {"qwen3.pooling_type": declared}
    model = Model(kind="embedding", architecture="qwen3", metadata=metadata)
    assert pools_by_rank(model, parameters, extra_args) is ranked
    if ranked is not None and not extra_args:
        args = args_for(model, Settings(parameters=parameters))
        chosen = args[args.index("--pooling") + 1] if "--pooling" in args else None
        assert ranked == ("--reranking" in args or chosen == "rank" or (chosen is None and declared == 4))


def test_a_vision_model_gets_its_projector() -> None:
    args = args_for(Model(cap_vision=True, mmproj_path="/models/mmproj.gguf"))
    assert args[args.index("--mmproj") + 1] == "/models/mmproj.gguf"


def test_metrics_is_not_repeated_when_extra_args_have_it() -> None:
    assert args_for(Model(), Settings(extra_args=["--metrics"])).count("--metrics") == 1


def test_a_custom_command_is_split_without_a_shell_and_placeholders_filled_per_argument() -> None:
    settings = Settings(
        runtime="custom", custom_command="/opt/srv --model {model} --port={port} 'two words' ; rm"
    )
    assert args_for(Model(), settings) == [
        "/opt/srv",
        "--model",
        "/models/My Models/qwen.gguf",
        "--port=40123",
        "two words",
        ";",
        "rm",
    ]


def test_an_empty_or_broken_custom_command_is_a_clear_error() -> None:
    with pytest.raises(RunnerConfigError, match="no custom command"):
        args_for(Model(), Settings(runtime="custom"))
    with pytest.raises(RunnerConfigError, match="cannot be parsed"):
        args_for(Model(), Settings(runtime="custom", custom_command="srv 'unclosed {port}"))


def test_the_whisper_runtime_uses_whisper_server() -> None:
    args = args_for(Model(path="/m/ggml-tiny.bin"), Settings(runtime="whisper-server"))
    assert args == ["/bin/whisper-server", "-m", "/m/ggml-tiny.bin", "--host", "127.0.0.1", "--port", "40123"]


def test_a_missing_binary_says_how_to_install_it() -> None:
    with pytest.raises(RunnerConfigError, match="install_llama_server"):
        runner_args(Model(), None, host="127.0.0.1", port=1, find_binary=lambda kind: None)
