"""The gateway's in-memory copies (the catalog view, API keys): a write this process makes is
seen by the very next request (for the catalog, the `catalog.changed` it publishes is heard
locally, before its response goes out), and a read that began before a write never replaces one
that began after it."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from models_catalog import services
from models_catalog.models import CatalogModel, RunnerSettings
from proxies.catalog_view import CatalogView, catalog_view
from proxies.keys import create_key, key_cache, revoke_key

pytestmark = pytest.mark.django_db(transaction=True)  # (read back through other threads)

refresh = async_to_sync(catalog_view.refresh)
resolve = async_to_sync(catalog_view.resolve)


def add(name: str) -> CatalogModel:
    model = CatalogModel.objects.create(name=name, path=f"/models/{name}.gguf", state="available")
    RunnerSettings.objects.create(model=model)
    return model


def test_a_settings_change_made_here_is_what_the_next_resolve_sees() -> None:
    add("m")
    refresh(force=True)
    assert resolve("m").sampling == {}
    services.update_model("m", {"sampling": {"temperature": 0.25}})
    assert resolve("m").sampling == {"temperature": 0.25}  # within REFRESH_SECONDS of the last read


def test_a_model_created_here_is_listed_at_once() -> None:
    add("m")
    async_to_sync(catalog_view.listed)()
    add("n")
    assert "n" not in {m.name for m in async_to_sync(catalog_view.listed)()}  # no event: not yet
    services.add_alias("n", "n-alias")  # publishes catalog.changed
    assert {"m", "n"} <= {m.name for m in async_to_sync(catalog_view.listed)()}


def test_a_read_begun_before_a_write_does_not_replace_a_later_one(monkeypatch: pytest.MonkeyPatch) -> None:
    view = CatalogView()
    add("m")
    reads = iter([({"old": None}, {}), ({"new": None}, {})])

    def load(self: CatalogView) -> tuple[dict, dict]:
        models, aliases = next(reads)
        if "old" in models:  # the slow read: a write and a whole later read happen meanwhile
            self.invalidate()
            async_to_sync(self.refresh)()
        return models, aliases

    monkeypatch.setattr(CatalogView, "_load", load)
    refresh_view = async_to_sync(view.refresh)
    refresh_view()
    assert set(view.models) == {"new"}


def test_a_key_made_or_revoked_here_counts_at_once() -> None:
    lookup = async_to_sync(key_cache.lookup)
    key, plaintext = create_key("k")
    assert lookup(plaintext) is not None
    revoke_key(key)
    assert lookup(plaintext) is None  # within REFRESH_SECONDS of the last read
