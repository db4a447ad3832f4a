"""The dashboard's own routes: login and first run, runtime settings, parameter metadata, the SPA
and its assets, and the playground's login requirement (Django test client)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.test import Client

from llamaproxy.runtime import current_limits, invalidate_limits

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client: Client) -> Client:
    User.objects.create_superuser("admin", "a@b.c", "pw-123456")
    client.login(username="admin", password="pw-123456")
    return client


@pytest.fixture(autouse=True)
def _fresh_limits():
    invalidate_limits()
    yield
    invalidate_limits()


def csrf_client() -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    token = client.get("/api/manage/auth/me").json()["csrf_token"]
    return client, client.cookies["csrftoken"].value or token


def test_first_run_creates_the_first_user_once_and_logs_in() -> None:
    client, token = csrf_client()
    assert client.get("/api/manage/auth/me").json()["needs_setup"] is True
    created = client.post(
        "/api/manage/auth/setup",
        {"username": "boss", "password": "long-enough-pw"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert created.status_code == 200, created.content
    assert created.json()["is_staff"] is True
    again = Client(enforce_csrf_checks=True)
    token2 = again.get("/api/manage/auth/me").json()["csrf_token"]
    refused = again.post(
        "/api/manage/auth/setup",
        {"username": "intruder", "password": "long-enough-pw"},
        content_type="application/json",
        headers={"X-CSRFToken": again.cookies["csrftoken"].value or token2},
    )
    assert refused.status_code == 409
    assert User.objects.filter(username="intruder").count() == 0


def test_login_needs_the_csrf_token_and_the_right_password() -> None:
    User.objects.create_superuser("admin", "a@b.c", "pw-123456")
    client, token = csrf_client()
    body = {"username": "admin", "password": "pw-123456"}
    no_token = client.post("/api/manage/auth/login", body, content_type="application/json")
    assert no_token.status_code == 403
    wrong = client.post(
        "/api/manage/auth/login",
        {**body, "password": "nope"},
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"]["field"] == "password"
    ok = client.post(
        "/api/manage/auth/login", body, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert ok.status_code == 200
    assert ok.json()["username"] == "admin"


def test_manage_routes_refuse_anonymous_users(client: Client) -> None:
    assert client.get("/api/manage/settings").status_code == 401
    assert client.get("/api/manage/system").status_code == 401


def test_a_limit_saved_in_the_dashboard_is_in_force_and_null_restores_the_environment(staff: Client) -> None:
    env_default = current_limits().max_loaded_models
    saved = staff.patch(
        "/api/manage/settings",
        {"max_loaded_models": 3, "memory_budget": "2GiB"},
        content_type="application/json",
    )
    assert saved.status_code == 200, saved.content
    assert saved.json()["effective"]["max_loaded_models"] == 3
    assert current_limits().max_loaded_models == 3
    assert current_limits().memory_budget == 2 * 1024**3
    cleared = staff.patch(
        "/api/manage/settings", {"max_loaded_models": None}, content_type="application/json"
    )
    assert cleared.json()["effective"]["max_loaded_models"] == env_default
    assert current_limits().memory_budget == 2 * 1024**3  # untouched fields keep their override


def test_a_bad_limit_is_refused_with_the_field_named(staff: Client) -> None:
    response = staff.patch("/api/manage/settings", {"default_ttl": "soon"}, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "default_ttl"
    zero = staff.patch("/api/manage/settings", {"max_loaded_models": 0}, content_type="application/json")
    assert zero.json()["error"]["field"] == "max_loaded_models"


def test_parameter_metadata_describes_types_help_and_choices(staff: Client) -> None:
    body = staff.get("/api/manage/parameters").json()
    by_name = {p["name"]: p for p in body["parameters"]}
    assert by_name["ctx_size"] == {
        "name": "ctx_size",
        "flag": "--ctx-size",
        "kind": "int",
        "help": by_name["ctx_size"]["help"],
        "choices": None,
        "minimum": 0,
        "maximum": None,
        "multiline": False,
    }
    assert by_name["flash_attn"]["choices"] == ["on", "off", "auto"]
    sampling = {p["name"]: p for p in body["sampling"]}
    assert "temperature" in sampling and sampling["system"]["multiline"] is True
    assert sampling["stop"]["kind"] == "list" and sampling["messages"]["kind"] == "messages"
    assert (sampling["mirostat"]["minimum"], sampling["mirostat"]["maximum"]) == (0, 2)


def test_client_side_routes_get_the_app_and_assets_are_served_safely(
    client: Client, settings, tmp_path
) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<div id=app></div>")
    (dist / "assets" / "app-123.js").write_text("console.log(1)")
    (dist / "favicon.svg").write_text("<svg/>")
    (tmp_path / "secret.txt").write_text("no")
    settings.FRONTEND_DIST = dist
    for route in ("/", "/models", "/models/tiny-chat", "/settings"):
        page = client.get(route)
        assert page.status_code == 200, route
        assert b"<div id=app>" in b"".join(page.streaming_content)
    asset = client.get("/assets/app-123.js")
    assert asset.status_code == 200
    assert "immutable" in asset["Cache-Control"]
    assert client.get("/favicon.svg").status_code == 200
    assert client.get("/assets/../../secret.txt").status_code == 404
    assert client.get("/assets/%2e%2e/%2e%2e/secret.txt").status_code == 404
    assert client.get("/api/manage/nothing-here").status_code == 404  # API routes never fall back to the app


def test_an_api_request_sent_to_the_dashboards_port_is_told_where_to_go() -> None:
    browser = Client(enforce_csrf_checks=True)  # (as a script would be: no CSRF token)
    body = json.dumps({"model": "x", "messages": []})
    lost = browser.post("/v1/chat/completions", body, content_type="application/json")
    assert lost.status_code == 404 and "port 8585" in lost.json()["error"]["message"]
    assert browser.get("/v1/models").status_code == 404
    # The app's pages only read: another method is a 405, not a CSRF page.
    refused = browser.post("/models/tiny-chat", body, content_type="application/json")
    assert refused.status_code == 405 and b"<html" not in refused.content.lower()


def test_the_playground_needs_a_dashboard_login(client: Client) -> None:
    response = client.post(
        "/api/playground/v1/chat/completions",
        json.dumps({"model": "x", "messages": []}),
        content_type="application/json",
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"]


def test_the_playground_refuses_a_post_without_the_csrf_token_in_openais_shape() -> None:
    User.objects.create_superuser("admin", "a@b.c", "pw-123456")
    browser, _token = csrf_client()
    browser.login(username="admin", password="pw-123456")
    body = json.dumps({"model": "nobody", "messages": [{"role": "user", "content": "hi"}]})
    for path in ("/api/playground/v1/chat/completions", "/api/playground/v1/audio/transcriptions"):
        refused = browser.post(path, body, content_type="application/json")
        assert refused.status_code == 403 and refused["content-type"] == "application/json", path
        assert "CSRF" in refused.json()["error"]["message"]
    token = browser.cookies["csrftoken"].value
    passed = browser.post(
        "/api/playground/v1/chat/completions",
        body,
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert passed.status_code == 404 and passed.json()["error"]["message"]  # past the gate: no such model
    # Not logged in, no token either: told to log in, in JSON (not Django's CSRF page).
    anonymous = Client(enforce_csrf_checks=True).post(
        "/api/playground/v1/chat/completions", body, content_type="application/json"
    )
    assert anonymous.status_code == 401 and anonymous.json()["error"]["message"]


HUGE = str(2**70)


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("get", f"/api/manage/usage?key={HUGE}", "key"),
        ("get", f"/api/manage/usage?offset={HUGE}", "offset"),
        ("get", f"/api/manage/usage/totals?status={HUGE}", "status"),
        ("delete", f"/api/manage/keys/{HUGE}", None),
        ("delete", f"/api/manage/folders/{HUGE}", None),
        ("post", f"/api/manage/runners/{HUGE}/load", None),
    ],
)
def test_numbers_too_large_for_the_database_are_a_400_in_the_apis_shape(
    staff: Client, method: str, path: str, field: str | None
) -> None:
    response = getattr(staff, method)(path)
    assert response.status_code in (400, 404), response.content
    assert response["content-type"].startswith("application/json")
    if field is not None:
        assert response.status_code == 400 and response.json()["error"]["field"] == field


def test_a_huge_folder_id_filter_matches_nothing(staff: Client) -> None:
    response = staff.get(f"/api/manage/models?folder={HUGE}")
    assert response.status_code == 200 and response.json() == []


def test_a_failure_of_ours_on_an_api_path_is_json(rf) -> None:
    from llamaproxy.views import server_error

    response = server_error(rf.get("/api/manage/models"))
    assert (
        response.status_code == 500 and "internal error" in json.loads(response.content)["error"]["message"]
    )
    assert b"<html" in server_error(rf.get("/models/x")).content.lower()
