"""The memory estimate: weights plus KV cache at the configured context and cache types."""

from __future__ import annotations

from runners.memory import (
    MIB,
    OVERHEAD_BYTES,
    ModelShape,
    context_size,
    estimate_memory_bytes,
    kv_cache_bytes,
)

# A 7B-like llama: 32 layers, width 4096, 32 heads, 8 kv heads (GQA), 4 GiB of weights.
LLAMA = ModelShape(
    size_bytes=4 * 1024 * MIB,
    context_length=8192,
    block_count=32,
    embedding_length=4096,
    head_count=32,
    head_count_kv=8,
)


def test_kv_cache_at_the_models_own_context_in_f16() -> None:
    # 2 (K and V) x 32 layers x 8192 cells x 1024 (4096 * 8/32) x 2 bytes = 1 GiB
    assert kv_cache_bytes(LLAMA, {}) == 1024 * MIB


def test_ctx_size_in_the_parameters_wins_over_the_models_context() -> None:
    assert kv_cache_bytes(LLAMA, {"ctx_size": 4096}) == 512 * MIB
    assert context_size(LLAMA, {"ctx_size": 0}) == 8192


def test_a_quantized_cache_needs_less() -> None:
    q8 = kv_cache_bytes(LLAMA, {"cache_type_k": "q8_0", "cache_type_v": "q8_0"})
    assert q8 == int(1024 * MIB * (34 / 32) / 2)
    mixed = kv_cache_bytes(LLAMA, {"cache_type_k": "q4_0"})
    assert mixed < 1024 * MIB and mixed > q8 / 2


def test_the_estimate_is_weights_plus_cache_plus_overhead() -> None:
    assert estimate_memory_bytes(LLAMA, {}) == 4 * 1024 * MIB + 1024 * MIB + OVERHEAD_BYTES


def test_a_model_without_shape_metadata_counts_its_file_size_only() -> None:
    shape = ModelShape(size_bytes=100 * MIB)
    assert estimate_memory_bytes(shape) == 100 * MIB + OVERHEAD_BYTES


def test_a_catalog_like_object_is_accepted() -> None:
    class Model:
        size_bytes = 10 * MIB
        context_length = 1024
        block_count = 2
        embedding_length = 64
        head_count = 4
        head_count_kv = 2

    # 2 x 2 layers x 1024 x 32 x 2 bytes
    assert estimate_memory_bytes(Model(), {}) == 10 * MIB + 2 * 2 * 1024 * 32 * 2 + OVERHEAD_BYTES
