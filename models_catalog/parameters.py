"""The llama-server parameters a model's runner settings may hold, validated by type.

One table drives validation (admin, manage API, import) and the argument list a runner is
started with, so a flag is described once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Messages(list):
    """The kind of a parameter that is a conversation: `{role, content}` objects."""


MESSAGE_ROLES = ("system", "user", "assistant")


def _messages(name: str, value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not all(
        isinstance(item, dict)
        and set(item) == {"role", "content"}
        and item["role"] in MESSAGE_ROLES
        and isinstance(item["content"], str)
        for item in value
    ):
        raise ValueError(f"{name} must be a list of {{role, content}} (role {', '.join(MESSAGE_ROLES)})")
    return [{"role": item["role"], "content": item["content"]} for item in value]


class ParameterError(ValueError):
    """A parameter value that cannot be used; `name` is the parameter's canonical name."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


@dataclass(frozen=True)
class Param:
    flag: str
    kind: type  # int, float, bool, str, list (of texts), Messages
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    multiline: bool = False  # a text edited in a text area (kept as typed, line breaks included)

    def validate(self, name: str, value: Any) -> Any:
        try:
            return self._validate(name, value)
        except ParameterError:
            raise
        except ValueError as exc:
            raise ParameterError(name, str(exc)) from None

    def _validate(self, name: str, value: Any) -> Any:
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {
                "true",
                "false",
                "1",
                "0",
                "on",
                "off",
                "yes",
                "no",
            }:
                return value.lower() in {"true", "1", "on", "yes"}
            raise ValueError(f"{name} must be true or false")
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError(f"{name} must be a whole number")
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"{name} must be a whole number, not {value!r}") from None
            self._check_range(name, number)
            return number
        if self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"{name} must be a number")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"{name} must be a number, not {value!r}") from None
            self._check_range(name, number)
            return number
        if self.kind is list:
            return self._texts(name, value)
        if self.kind is Messages:
            return _messages(name, value)
        if isinstance(value, bool) and self.choices and {"on", "off"} <= set(self.choices):
            return "on" if value else "off"  # older configs write `"flash-attn": true`
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} must be a non-empty text")
        if self.choices and value not in self.choices:
            raise ValueError(f"{name} must be one of {', '.join(self.choices)}")
        return value

    def _check_range(self, name: str, number: float) -> None:
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"{name} must be at least {self.minimum:g}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"{name} must be at most {self.maximum:g}")

    @staticmethod
    def _texts(name: str, value: Any) -> list[str]:
        """A list of texts (one text is a list of one); an empty list means no default."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise ValueError(f"{name} must be a list of texts")
        if any(item == "" for item in items):
            raise ValueError(f"{name} must not hold an empty text")
        return items


CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")

LLAMA_SERVER_PARAMS: dict[str, Param] = {
    "ctx_size": Param("--ctx-size", int, "Context size in tokens (0 = the model's own)", minimum=0),
    "n_gpu_layers": Param("--n-gpu-layers", int, "Layers offloaded to the GPU (-1 = all)", minimum=-1),
    "threads": Param("--threads", int, "CPU threads for generation", minimum=1),
    "threads_batch": Param("--threads-batch", int, "CPU threads for prompt processing", minimum=1),
    "batch_size": Param("--batch-size", int, "Logical batch size", minimum=1),
    "ubatch_size": Param("--ubatch-size", int, "Physical batch size", minimum=1),
    "parallel": Param("--parallel", int, "Parallel slots (concurrent requests)", minimum=1),
    "flash_attn": Param("--flash-attn", str, "Flash attention", choices=("on", "off", "auto")),
    "cache_type_k": Param("--cache-type-k", str, "KV cache type for K", choices=CACHE_TYPES),
    "cache_type_v": Param("--cache-type-v", str, "KV cache type for V", choices=CACHE_TYPES),
    "rope_scaling": Param("--rope-scaling", str, "RoPE scaling method", choices=("none", "linear", "yarn")),
    "rope_freq_base": Param("--rope-freq-base", float, "RoPE base frequency", minimum=0),
    "rope_freq_scale": Param("--rope-freq-scale", float, "RoPE frequency scale", minimum=0),
    "mmproj": Param("--mmproj", str, "Multimodal projector file (vision)"),
    "jinja": Param("--jinja", bool, "Use the model's Jinja chat template (tools)"),
    "embeddings": Param("--embeddings", bool, "Serve embeddings"),
    "pooling": Param("--pooling", str, "Embedding pooling", choices=("none", "mean", "cls", "last", "rank")),
    "reranking": Param("--reranking", bool, "Serve reranking"),
    "mlock": Param("--mlock", bool, "Keep the model in RAM"),
    "no_mmap": Param("--no-mmap", bool, "Do not memory-map the model"),
    "cont_batching": Param("--cont-batching", bool, "Continuous batching"),
    "seed": Param("--seed", int, "Random seed"),
    "n_predict": Param("--n-predict", int, "Default maximum tokens to predict (-1 = unlimited)", minimum=-1),
    "keep": Param("--keep", int, "Tokens kept from the prompt when the context shifts", minimum=-1),
    "chat_template": Param(
        "--chat-template",
        str,
        "Chat template instead of the model's: a built-in one's name (chatml, llama3, ...) or a Jinja template",
        multiline=True,
    ),
    "reasoning_format": Param(
        "--reasoning-format", str, "How thinking is returned", choices=("none", "deepseek", "auto")
    ),
    "reasoning_budget": Param(
        "--reasoning-budget", int, "Thinking budget (-1 = unlimited, 0 = off)", minimum=-1
    ),
    "no_kv_offload": Param("--no-kv-offload", bool, "Keep the KV cache in system memory"),
    "override_tensor": Param(
        "--override-tensor", str, "Tensor buffer overrides, e.g. (up_exps|down_exps)=CPU"
    ),
    "n_cpu_moe": Param("--n-cpu-moe", int, "MoE expert layers kept on the CPU", minimum=0),
    "main_gpu": Param("--main-gpu", int, "GPU used for the model (split mode none)", minimum=0),
    "split_mode": Param("--split-mode", str, "How to split across GPUs", choices=("none", "layer", "row")),
    "tensor_split": Param("--tensor-split", str, "Fraction of the model per GPU, e.g. 3,1"),
    "rope_scale": Param("--rope-scale", float, "RoPE context scaling factor", minimum=0),
    "yarn_orig_ctx": Param("--yarn-orig-ctx", int, "YaRN: the model's original context size", minimum=0),
    "model_draft": Param("--model-draft", str, "Draft model for speculative decoding"),
    "draft_max": Param("--draft-max", int, "Tokens drafted per step", minimum=0),
    "chat_template_file": Param(
        "--chat-template-file", str, "A Jinja chat template file to use instead of the model's"
    ),
    "swa_full": Param("--swa-full", bool, "Full-size sliding-window attention cache"),
}

SAMPLING_PARAMS: dict[str, Param] = {
    "temperature": Param("", float, "Sampling temperature", minimum=0),
    "top_p": Param("", float, "Nucleus sampling", minimum=0),
    "top_k": Param("", int, "Top-k sampling", minimum=0),
    "min_p": Param("", float, "Min-p sampling", minimum=0),
    "repeat_penalty": Param("", float, "Repetition penalty", minimum=0),
    "presence_penalty": Param("", float, "Presence penalty"),
    "frequency_penalty": Param("", float, "Frequency penalty"),
    "max_tokens": Param("", int, "Default maximum tokens", minimum=1),
    "repeat_last_n": Param("", int, "Tokens considered by the repetition penalty", minimum=-1),
    "typical_p": Param("", float, "Locally typical sampling", minimum=0),
    "seed": Param("", int, "Random seed (-1 = a new one each request)", minimum=-1),
    "stop": Param("", list, "Stop sequences: generation ends before any of them (one per line)"),
    "mirostat": Param(
        "", int, "Mirostat sampling (0 = off, 1 = Mirostat, 2 = Mirostat 2.0)", minimum=0, maximum=2
    ),
    "mirostat_tau": Param("", float, "Mirostat target entropy", minimum=0),
    "mirostat_eta": Param("", float, "Mirostat learning rate", minimum=0),
    "n_keep": Param("", int, "Prompt tokens kept when the context fills (-1 = all)", minimum=-1),
    "top_n_sigma": Param("", float, "Top-n-sigma sampling (-1 = off)"),
    "xtc_probability": Param("", float, "XTC sampling: chance of removing top tokens", minimum=0),
    "xtc_threshold": Param("", float, "XTC sampling: probability threshold", minimum=0),
    "dry_multiplier": Param("", float, "DRY repetition penalty strength (0 = off)", minimum=0),
    "dry_base": Param("", float, "DRY repetition penalty base", minimum=1),
    "dry_allowed_length": Param("", int, "DRY: repeats up to this length go unpenalized", minimum=0),
    "dry_penalty_last_n": Param("", int, "DRY: tokens scanned for repeats (-1 = the context)", minimum=-1),
    "system": Param("", str, "Default system prompt, for chat requests that bring none", multiline=True),
    "messages": Param(
        "",
        Messages,
        "Messages every chat begins with, after its system prompt (Ollama's MESSAGE lines): "
        'a JSON list of {"role", "content"}',
    ),
}

# Names used by the seed project's config files and by llama.cpp's CLI spelled differently.
PARAM_ALIASES = {
    "n_ctx": "ctx_size",
    "ctx": "ctx_size",
    "ngl": "n_gpu_layers",
    "gpu_layers": "n_gpu_layers",
    "n_threads": "threads",
    "n_batch": "batch_size",
    "n_ubatch": "ubatch_size",
    "n_parallel": "parallel",
    "temp": "temperature",
    "embedding": "embeddings",
    "cache_type": "cache_type_k",
    "fa": "flash_attn",
    "c": "ctx_size",
    "t": "threads",
    "b": "batch_size",
    "ub": "ubatch_size",
    "np": "parallel",
    "ot": "override_tensor",
    "nkvo": "no_kv_offload",
    "ctk": "cache_type_k",
    "ctv": "cache_type_v",
    "num_ctx": "ctx_size",
    "num_gpu": "n_gpu_layers",
    "num_thread": "threads",
    "num_batch": "batch_size",
    "num_predict": "max_tokens",
    "num_keep": "n_keep",
}


def canonical_name(name: str) -> str:
    key = name.strip().lstrip("-").replace("-", "_")
    return PARAM_ALIASES.get(key, key)


def validate_parameters(values: dict[str, Any]) -> dict[str, Any]:
    """Known llama-server parameters, by canonical name; raises ValueError naming the field."""
    return _validated(
        values,
        LLAMA_SERVER_PARAMS,
        "parameters",
        "unknown llama-server parameter (put other flags in extra_args)",
    )


def validate_sampling(values: dict[str, Any]) -> dict[str, Any]:
    return _validated(
        values, SAMPLING_PARAMS, "sampling", f"unknown sampling parameter ({', '.join(SAMPLING_PARAMS)})"
    )


def _validated(values: dict[str, Any], table: dict[str, Param], group: str, unknown: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise ParameterError("", f"{group} must be an object of name → value")
    clean: dict[str, Any] = {}
    for raw_name, value in values.items():
        name = canonical_name(raw_name)
        spec = table.get(name)
        if spec is None:
            raise ParameterError(name, f"{raw_name}: {unknown}")
        if value is not None and (value := spec.validate(name, value)) != []:  # no stop sequences: no default
            clean[name] = value
    return clean


def split_parameters(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Seed configs mix runner flags and sampling defaults in one object: separate them."""
    runner, sampling = {}, {}
    for raw_name, value in values.items():
        name = canonical_name(raw_name)
        if name in SAMPLING_PARAMS:
            sampling[raw_name] = value
        else:
            runner[raw_name] = value
    return validate_parameters(runner), validate_sampling(sampling)


def parameter_args(parameters: dict[str, Any]) -> list[str]:
    """The argument list for validated parameters (booleans are bare flags when true)."""
    args: list[str] = []
    for name, value in parameters.items():
        spec = LLAMA_SERVER_PARAMS[name]
        if spec.kind is bool:
            if value:
                args.append(spec.flag)
        else:
            args += [spec.flag, str(value)]
    return args


def lora_files(extra_args: list[str] | None) -> list[str]:
    """The LoRA adapter files a runner's extra arguments load (`--lora FILE`, `--lora=FILE`)."""
    args, files = list(extra_args or []), []
    for index, arg in enumerate(args):
        if arg == "--lora" and index + 1 < len(args):
            files.append(args[index + 1])
        elif arg.startswith("--lora="):
            files.append(arg.removeprefix("--lora="))
    return files
