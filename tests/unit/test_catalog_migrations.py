"""Catalog migrations that change data, run forwards and back on a real (test) database."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE_RERANK = ("models_catalog", "0003_move_app_settings_to_runtime_settings")
RERANK = ("models_catalog", "0004_cap_rerank")
INSERT = ("models_catalog", "0005_cap_insert")


def migrate_to(target: tuple[str, str]):
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


def test_rerank_capability_is_backfilled_for_rank_pooled_models_and_given_back_on_reverse() -> None:
    try:
        apps = migrate_to(BEFORE_RERANK)
        CatalogModel = apps.get_model("models_catalog", "CatalogModel")

        def entry(name: str, kind: str, metadata: dict, arch: str = "qwen3") -> None:
            CatalogModel.objects.create(
                name=name,
                path=f"/models/{name}.gguf",
                kind=kind,
                architecture=arch,
                metadata=metadata,
                cap_completion=kind == "llm",
                cap_embedding=kind == "embedding",
            )

        entry("reranker", "embedding", {"qwen3.pooling_type": 4})
        entry("embedder", "embedding", {"qwen3.pooling_type": 1})
        entry("bert", "embedding", {}, arch="bert")
        entry("other-arch-key", "embedding", {"llama.pooling_type": 4})  # not its architecture's key
        entry("chat", "llm", {})

        apps = migrate_to(RERANK)
        rows = {
            m.name: (m.cap_rerank, m.cap_embedding)
            for m in apps.get_model("models_catalog", "CatalogModel").objects.all()
        }
        assert rows == {
            "reranker": (True, False),
            "embedder": (False, True),
            "bert": (False, True),
            "other-arch-key": (False, True),
            "chat": (False, False),
        }

        apps = migrate_to(BEFORE_RERANK)
        back = apps.get_model("models_catalog", "CatalogModel").objects.get(name="reranker")
        assert back.cap_embedding
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_insert_is_set_where_the_metadata_names_the_fim_tokens_and_language_models_are_read_again() -> None:
    from datetime import UTC, datetime

    try:
        apps = migrate_to(RERANK)
        CatalogModel = apps.get_model("models_catalog", "CatalogModel")
        stamp = datetime(2026, 1, 1, tzinfo=UTC)
        named = {
            "tokenizer.ggml.fim_pre_token_id": 5,
            "tokenizer.ggml.fim_suf_token_id": 6,
            "tokenizer.ggml.fim_mid_token_id": 7,
        }
        for name, kind, metadata in (
            ("coder", "llm", named),
            ("chat", "llm", {"tokenizer.ggml.fim_pre_token_id": 5}),
            ("embedder", "embedding", named),
        ):
            CatalogModel.objects.create(
                name=name, path=f"/m/{name}.gguf", kind=kind, metadata=metadata, mtime=stamp
            )

        apps = migrate_to(INSERT)
        rows = {
            m.name: (m.cap_insert, m.mtime)
            for m in apps.get_model("models_catalog", "CatalogModel").objects.all()
        }
        assert rows == {"coder": (True, None), "chat": (False, None), "embedder": (False, stamp)}
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
