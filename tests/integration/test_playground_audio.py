"""The Playground's audio box through the real stack: `POST /api/playground/v1/audio/...` on the
dashboard port transcribes with a real whisper-server for a logged-in staff user (no API key),
refuses anonymous users (401) and requests without the CSRF token (403), and records its usage
rows with face "playground". The whisper model has random weights, so no words are asserted."""

from __future__ import annotations

import httpx
import pytest

from models_catalog.tiny_whisper import write_tiny_whisper_model
from tests.integration.test_audio import WHISPER, tone_wav, wait_for_rows, whisper_server_binary

pytestmark = pytest.mark.integration

__all__ = ["whisper_server_binary"]  # the fixture, imported for this module's stack

PATH = "/api/playground/v1/audio/"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary, whisper_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("playground-audio-stack")
    env, ports = stack_env(root, llama_server_binary, LLAMAPROXY_WHISPER_SERVER=str(whisper_server_binary))
    stack = Stack(root=root, env=env, ports=ports)
    write_tiny_whisper_model(stack.models_dir / f"{WHISPER}.bin", seed=3)
    stack.manage("migrate", "--noinput")
    stack.manage("scan_models")
    stack.start()
    yield stack
    stack.stop()


def csrf_session(stack) -> tuple[httpx.Client, str]:
    """A browser-like client with the dashboard's CSRF cookie (not logged in)."""
    client = httpx.Client(base_url=stack.url("dashboard"), timeout=60)
    client.get("/api/manage/auth/me").raise_for_status()
    return client, client.cookies["csrftoken"]


@pytest.fixture(scope="module")
def staff(stack):
    """A client logged in to the dashboard as the first (staff) user, and its CSRF token."""
    client, token = csrf_session(stack)
    setup = client.post(
        "/api/manage/auth/setup",
        json={"username": "boss", "password": "long-enough-pw"},
        headers={"X-CSRFToken": token},
    )
    assert setup.status_code == 200, setup.text
    yield client, client.cookies.get("csrftoken") or token
    client.close()


def upload(seconds: float = 1.5) -> dict:
    return {"file": ("tone.wav", tone_wav(seconds), "audio/wav")}


def test_a_staff_user_transcribes_a_wav_and_the_usage_row_has_face_playground(staff, stack) -> None:
    client, token = staff
    response = client.post(
        PATH + "transcriptions",
        data={"model": WHISPER, "response_format": "verbose_json", "language": "en"},
        files=upload(1.5),
        headers={"X-CSRFToken": token},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["task"] == "transcribe"
    assert isinstance(body["text"], str)
    assert isinstance(body["segments"], list)
    assert body["duration"] == pytest.approx(1.5)
    rows = wait_for_rows(stack, lambda r: r["face"] == "playground", endpoint="audio/transcriptions")
    assert rows, stack.usage_rows()
    assert (rows[0]["model"], rows[0]["status"], rows[0]["audio_seconds"]) == (
        WHISPER,
        200,
        pytest.approx(1.5),
    )


def test_a_translation_in_text_format_and_a_bad_field_named_in_the_error(staff, stack) -> None:
    client, token = staff
    text = client.post(
        PATH + "translations",
        data={"model": WHISPER, "response_format": "text"},
        files=upload(1.0),
        headers={"X-CSRFToken": token},
    )
    assert text.status_code == 200, text.text
    assert text.headers["content-type"] == "text/plain; charset=utf-8"

    bad = client.post(
        PATH + "transcriptions",
        data={"model": WHISPER, "language": "klingon"},
        files=upload(1.0),
        headers={"X-CSRFToken": token},
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "language"
    assert wait_for_rows(
        stack, lambda r: r["face"] == "playground" and r["status"] == 200, endpoint="audio/translations"
    )


def test_an_anonymous_user_gets_401_and_a_request_without_csrf_gets_403(staff, stack) -> None:
    anonymous, token = csrf_session(stack)
    try:
        refused = anonymous.post(
            PATH + "transcriptions", data={"model": WHISPER}, files=upload(), headers={"X-CSRFToken": token}
        )
    finally:
        anonymous.close()
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "log in to the dashboard first"

    client, staff_token = staff
    no_csrf = client.post(PATH + "transcriptions", data={"model": WHISPER}, files=upload())
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]["message"]

    # An API key is no way in: the route is the dashboard's, not the API's.
    keyed = httpx.post(
        stack.url("dashboard") + PATH + "transcriptions",
        data={"model": WHISPER},
        files=upload(),
        headers={"Authorization": "Bearer sk-anything"},
        timeout=60,
    )
    assert keyed.status_code == 401 and keyed.json()["error"]["message"] == "log in to the dashboard first"
    assert client.get(PATH + "transcriptions").status_code == 405
    assert client.post(PATH + "summaries", headers={"X-CSRFToken": staff_token}).status_code == 404
