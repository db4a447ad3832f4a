"""How much memory a runner needs: weights plus KV cache at its context, plus a little overhead.

An estimate, not a measurement: the memory budget is checked before a start, when nothing can
be measured yet. Pure, so the scheduler can compute it from its in-memory catalog view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024

# Bytes per cached element; block-quantized types carry a scale per block of 32.
CACHE_TYPE_BYTES: dict[str, float] = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q4_0": 18 / 32,
    "q4_1": 20 / 32,
    "iq4_nl": 18 / 32,
    "q5_0": 22 / 32,
    "q5_1": 24 / 32,
}
DEFAULT_CACHE_TYPE = "f16"  # llama-server's default for both K and V
DEFAULT_CONTEXT = 4096  # what llama-server uses when neither the settings nor the GGUF say
# Compute buffers and the server's own allocations: small next to weights, never zero.
OVERHEAD_BYTES = 64 * MIB


@dataclass(frozen=True)
class ModelShape:
    """The GGUF facts an estimate needs (CatalogModel has them all)."""

    size_bytes: int
    context_length: int | None = None
    block_count: int | None = None
    embedding_length: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None

    @classmethod
    def of(cls, model: Any) -> ModelShape:
        return cls(
            size_bytes=model.size_bytes or 0,
            context_length=model.context_length,
            block_count=model.block_count,
            embedding_length=model.embedding_length,
            head_count=model.head_count,
            head_count_kv=model.head_count_kv,
        )


def context_size(shape: ModelShape, parameters: Mapping[str, Any]) -> int:
    """The context llama-server will allocate: ctx_size, or the model's own when 0 / unset."""
    requested = int(parameters.get("ctx_size") or 0)
    return requested or shape.context_length or DEFAULT_CONTEXT


def kv_cache_bytes(shape: ModelShape, parameters: Mapping[str, Any]) -> int:
    """K and V for every layer and cell: n_layers * ctx * n_embd_kv * bytes per element, each."""
    if not (shape.block_count and shape.embedding_length):
        return 0
    heads = shape.head_count or 1
    kv_heads = shape.head_count_kv or heads
    # Grouped-query attention caches only the kv heads' share of the embedding width.
    n_embd_kv = shape.embedding_length * kv_heads // heads
    cells = shape.block_count * context_size(shape, parameters) * n_embd_kv
    k_bytes = CACHE_TYPE_BYTES.get(parameters.get("cache_type_k") or DEFAULT_CACHE_TYPE, 2.0)
    v_bytes = CACHE_TYPE_BYTES.get(parameters.get("cache_type_v") or DEFAULT_CACHE_TYPE, 2.0)
    return int(cells * (k_bytes + v_bytes))


def estimate_memory_bytes(model: Any, parameters: Mapping[str, Any] | None = None) -> int:
    """Weights (file size) + KV cache at the configured context and cache types + overhead."""
    shape = model if isinstance(model, ModelShape) else ModelShape.of(model)
    return shape.size_bytes + kv_cache_bytes(shape, parameters or {}) + OVERHEAD_BYTES
