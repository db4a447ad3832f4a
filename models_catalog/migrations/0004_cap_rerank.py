"""Rerankers get their own capability, `rerank`, and lose `embedding`.

A model whose file declares `<arch>.pooling_type` = rank (kept in `metadata` by the scan) is a
reranker: its runner serves /v1/rerank, and the vectors /v1/embeddings would give are its scores.
Reversing gives them `embedding` back, as before.
"""

from django.db import migrations, models

RANK = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK


def _is_reranker(model) -> bool:
    value = (model.metadata or {}).get(f"{model.architecture}.pooling_type")
    return not isinstance(value, bool) and value == RANK


def forwards(apps, schema_editor) -> None:
    CatalogModel = apps.get_model("models_catalog", "CatalogModel")
    for model in CatalogModel.objects.filter(kind="embedding").only("pk", "architecture", "metadata"):
        if _is_reranker(model):
            CatalogModel.objects.filter(pk=model.pk).update(cap_rerank=True, cap_embedding=False)


def backwards(apps, schema_editor) -> None:
    CatalogModel = apps.get_model("models_catalog", "CatalogModel")
    CatalogModel.objects.filter(cap_rerank=True).update(cap_embedding=True)


class Migration(migrations.Migration):
    dependencies = [
        ("models_catalog", "0003_move_app_settings_to_runtime_settings"),
    ]

    operations = [
        migrations.AddField(
            model_name="catalogmodel",
            name="cap_rerank",
            field=models.BooleanField(default=False, verbose_name="rerank"),
        ),
        migrations.RunPython(forwards, backwards),
    ]
