"""API keys on every face: required when configured, scoped to models, usage attributed."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest

from models_catalog.tiny_model import write_tiny_model

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "ignore_eos": True}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("keys-stack")
    env, ports = stack_env(
        root, llama_server_binary, LLAMAPROXY_REQUIRE_API_KEY="true", LLAMAPROXY_MAX_LOADED_MODELS="2"
    )
    stack = Stack(root=root, env=env, ports=ports)
    write_tiny_model(stack.models_dir / "tiny-a.gguf", name="tiny-a", seed=3)
    write_tiny_model(stack.models_dir / "tiny-b.gguf", name="tiny-b", seed=4)
    stack.manage("migrate", "--noinput")
    stack.manage("scan_models")
    stack.start()
    yield stack
    stack.stop()


def new_key(stack, name: str, allowed: list[str] | None = None) -> dict:
    response = httpx.post(
        stack.url("dashboard") + "/api/manage/keys",
        json={"name": name, "allowed_models": allowed or []},
        headers=stack.admin_headers(),
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_a_request_without_a_key_is_refused_with_401(stack) -> None:
    response = httpx.post(stack.url("api") + "/v1/chat/completions", json={"model": "tiny-a", **CHAT})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_a_wrong_key_is_refused_with_401(stack) -> None:
    client = openai.OpenAI(base_url=stack.url("api") + "/v1", api_key="lp-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_a_key_is_shown_once_and_stored_hashed(stack) -> None:
    created = new_key(stack, "shown-once")
    assert created["key"].startswith("lp-")
    listed = httpx.get(stack.url("dashboard") + "/api/manage/keys", headers=stack.admin_headers()).json()
    mine = next(k for k in listed if k["id"] == created["id"])
    assert "key" not in mine and created["key"].startswith(mine["prefix"])


def test_a_valid_key_is_accepted_as_bearer_and_as_x_api_key_and_usage_is_attributed(stack) -> None:
    key = new_key(stack, "scripts")
    client = openai.OpenAI(base_url=stack.url("api") + "/v1", api_key=key["key"], max_retries=0)
    completion = client.chat.completions.create(
        model="tiny-a", **{k: v for k, v in CHAT.items() if k != "ignore_eos"}
    )
    assert completion.choices
    response = httpx.post(
        stack.url("ollama") + "/v1/chat/completions",
        json={"model": "tiny-a", **CHAT},
        headers={"x-api-key": key["key"]},
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 10
    rows: list = []
    while len(rows) < 2 and time.monotonic() < deadline:
        rows = httpx.get(
            stack.url("dashboard") + "/api/manage/usage",
            params={"key": key["id"]},
            headers=stack.admin_headers(),
        ).json()["results"]
        time.sleep(0.2)
    assert len(rows) == 2
    assert {row["face"] for row in rows} == {"api", "ollama"}
    assert all(row["api_key_name"] == "scripts" for row in rows)


def test_a_key_limited_to_some_models_gets_403_for_others_and_sees_only_its_models(stack) -> None:
    key = new_key(stack, "only-a", ["tiny-a"])
    headers = {"Authorization": f"Bearer {key['key']}"}
    refused = httpx.post(
        stack.url("api") + "/v1/chat/completions", json={"model": "tiny-b", **CHAT}, headers=headers
    )
    assert refused.status_code == 403
    assert "tiny-b" in refused.json()["error"]["message"]
    allowed = httpx.post(
        stack.url("api") + "/v1/chat/completions", json={"model": "tiny-a", **CHAT}, headers=headers
    )
    assert allowed.status_code == 200
    listed = httpx.get(stack.url("api") + "/v1/models", headers=headers).json()
    assert [m["id"] for m in listed["data"]] == ["tiny-a"]


def test_anthropic_clients_send_their_key_as_x_api_key_and_get_refusals_in_anthropics_shape(stack) -> None:
    key = new_key(stack, "claude-tools", ["tiny-a"])
    messages = {"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    client = anthropic.Anthropic(base_url=stack.url("lmstudio"), api_key=key["key"], max_retries=0)
    assert client.messages.create(model="tiny-a", **messages).content
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model="tiny-b", **messages)
    assert refused.value.body["error"]["type"] == "permission_error"
    assert "tiny-b" in refused.value.body["error"]["message"]
    stranger = anthropic.Anthropic(base_url=stack.url("api"), api_key="lp-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as unknown:
        stranger.messages.create(model="tiny-a", **messages)
    assert unknown.value.body["type"] == "error"
    assert unknown.value.body["error"]["type"] == "authentication_error"
    deadline, rows = time.monotonic() + 10, []
    while len(rows) < 2 and time.monotonic() < deadline:  # rows are written in batches
        rows = httpx.get(
            stack.url("dashboard") + "/api/manage/usage",
            params={"key": key["id"], "endpoint": "messages"},
            headers=stack.admin_headers(),
        ).json()["results"]
        time.sleep(0.2)
    assert sorted((row["status"], row["face"]) for row in rows) == [(200, "lmstudio"), (403, "lmstudio")]


def test_a_revoked_key_stops_working(stack) -> None:
    key = new_key(stack, "short-lived")
    headers = {"Authorization": f"Bearer {key['key']}"}
    assert httpx.get(stack.url("api") + "/v1/models", headers=headers).status_code == 200
    revoked = httpx.delete(
        stack.url("dashboard") + f"/api/manage/keys/{key['id']}", headers=stack.admin_headers()
    )
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert httpx.get(stack.url("api") + "/v1/models", headers=headers).status_code == 401


def test_the_manage_api_needs_a_login_or_key(stack) -> None:
    response = httpx.get(stack.url("dashboard") + "/api/manage/keys")
    assert response.status_code == 401
    assert "error" in response.json()


def test_the_manage_api_on_the_api_port_takes_admin_keys_and_sends_logins_to_the_dashboard(stack) -> None:
    api = stack.url("api") + "/api/manage"
    refused = httpx.get(api + "/keys")  # no key (there are no sessions on this port)
    assert (
        refused.status_code == 401 and refused.json()["error"]["message"] == "log in or send an admin API key"
    )
    cookie = httpx.get(api + "/keys", cookies={"sessionid": "made-up"})
    assert cookie.status_code == 401
    assert httpx.get(api + "/keys", headers=stack.admin_headers()).status_code == 200
    for method, route in (("GET", "/auth/me"), ("POST", "/auth/login"), ("POST", "/auth/logout")):
        response = httpx.request(method, api + route, json={"username": "a", "password": "b"})
        assert response.status_code == 404, (route, response.text)
        assert "logins are on the dashboard port" in response.json()["error"]["message"]
