"""The `insert` capability: fill-in-the-middle (code completion between a prefix and a suffix).

Set now where the kept metadata names all three FIM tokens by id; the vocabulary's token texts
(how most coder models have them) are not kept, so every language model's header is read again
by the next scan (its stored mtime is cleared, which the scan takes for a changed file).
"""

from django.db import migrations, models

FIM_KEYS = (
    ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
)


def _names_fim_tokens(metadata: dict) -> bool:
    return all(
        any(isinstance(metadata.get(key), int) and not isinstance(metadata.get(key), bool) for key in keys)
        for keys in FIM_KEYS
    )


def forwards(apps, schema_editor) -> None:
    CatalogModel = apps.get_model("models_catalog", "CatalogModel")
    for model in CatalogModel.objects.filter(kind="llm").only("pk", "metadata"):
        CatalogModel.objects.filter(pk=model.pk).update(
            cap_insert=_names_fim_tokens(model.metadata or {}), mtime=None
        )


class Migration(migrations.Migration):
    dependencies = [
        ("models_catalog", "0004_cap_rerank"),
    ]

    operations = [
        migrations.AddField(
            model_name="catalogmodel",
            name="cap_insert",
            field=models.BooleanField(
                default=False, help_text="Fill-in-the-middle (code completion)", verbose_name="insert"
            ),
        ),
        migrations.RunPython(forwards, migrations.RunPython.noop),
    ]
