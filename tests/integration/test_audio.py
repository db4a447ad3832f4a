"""Audio transcription and translation through the real stack and a real whisper-server.

The whisper model is a random-weight one (models_catalog.tiny_whisper): its text is nonsense,
so the tests assert shapes, content types, durations and usage, never words.
"""

from __future__ import annotations

import asyncio
import io
import re
import struct
import time
import wave
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from models_catalog.tiny_model import write_tiny_model
from models_catalog.tiny_whisper import write_tiny_whisper_model

pytestmark = pytest.mark.integration

WHISPER = "ggml-tiny-random"
CHAT = "tiny-chat"
SRT_TIME = r"\d\d:\d\d:\d\d,\d\d\d --> \d\d:\d\d:\d\d,\d\d\d"
VTT_TIME = r"\d\d:\d\d:\d\d\.\d\d\d --> \d\d:\d\d:\d\d\.\d\d\d"


def tone_wav(seconds: float, *, rate: int = 16000, channels: int = 1, frequency: float = 440.0) -> bytes:
    """A sine tone as 16-bit PCM WAV."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * frequency * t) * 32767).astype("<i2")
    if channels > 1:
        samples = np.repeat(samples[:, None], channels, axis=1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def _crc(data: bytes, poly: int, bits: int) -> int:
    crc, top, mask = 0, 1 << (bits - 1), (1 << bits) - 1
    for byte in data:
        crc ^= byte << (bits - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & mask if crc & top else (crc << 1) & mask
    return crc


def tone_flac(seconds: float, *, rate: int = 16000, block: int = 4096) -> bytes:
    """A mono 16-bit FLAC file with VERBATIM subframes (no compression, no encoder needed)."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(">i2")
    total = len(samples)
    info = struct.pack(">HH", block, block) + bytes(6)  # block sizes; frame sizes unknown
    info += ((rate << 44) | (0 << 41) | (15 << 36) | total).to_bytes(8, "big") + bytes(16)  # no MD5
    out = b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info
    for number, start in enumerate(range(0, total, block)):
        chunk = samples[start : start + block]
        # sync + fixed blocking, block size "16 bit field follows", 16 kHz, mono, 16 bits, frame number
        head = bytes([0xFF, 0xF8, 0x75, 0x08, number]) + struct.pack(">H", len(chunk) - 1)
        head += bytes([_crc(head, 0x07, 8)])
        frame = head + b"\x02" + chunk.tobytes()  # subframe: VERBATIM
        out += frame + struct.pack(">H", _crc(frame, 0x8005, 16))
    return out


@pytest.fixture(scope="module")
def whisper_server_binary() -> Path:
    from runners.provisioning import installed_binary

    binary = installed_binary("whisper-server")
    if binary is None:
        pytest.fail(
            "whisper-server is not installed: run `python manage.py install_llama_server --whisper` "
            "(or set LLAMAPROXY_WHISPER_SERVER to an existing binary)"
        )
    return binary


@pytest.fixture(scope="module")
def stack(tmp_path_factory, llama_server_binary, whisper_server_binary):
    from tests.integration.conftest import Stack, stack_env

    root = tmp_path_factory.mktemp("audio-stack")
    env, ports = stack_env(
        root,
        llama_server_binary,
        LLAMAPROXY_WHISPER_SERVER=str(whisper_server_binary),
        LLAMAPROXY_MAX_LOADED_MODELS="1",
    )
    stack = Stack(root=root, env=env, ports=ports)
    write_tiny_model(stack.models_dir / f"{CHAT}.gguf", name=CHAT, seed=1)
    write_tiny_whisper_model(stack.models_dir / f"{WHISPER}.bin", seed=3)
    stack.manage("migrate", "--noinput")
    stack.manage("scan_models")
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url("api") + "/v1", api_key="sk-anything", max_retries=0, timeout=60)


def post_audio(
    stack,
    endpoint: str = "transcriptions",
    *,
    face: str = "api",
    audio: bytes | None = None,
    filename: str = "tone.wav",
    data: dict | list | None = None,
    files: dict | None = None,
) -> httpx.Response:
    if files is None:
        files = {"file": (filename, tone_wav(2.0) if audio is None else audio, "audio/wav")}
    fields = {"model": WHISPER} if data is None else data
    return httpx.post(f"{stack.url(face)}/v1/audio/{endpoint}", data=fields, files=files, timeout=60)


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code", "param"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def wait_for_rows(stack, predicate, timeout: float = 10, **filters: str) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [row for row in stack.usage_rows(**filters) if predicate(row)]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def runner_state(stack, model: str) -> str:
    models = httpx.get(stack.url("api") + "/v1/models", timeout=10).json()["data"]
    return next(m["state"] for m in models if m["id"] == model)


def test_the_whisper_model_is_catalogued_for_whisper_server(stack) -> None:
    response = httpx.get(
        stack.url("dashboard") + f"/api/manage/models/{WHISPER}", headers=stack.admin_headers(), timeout=10
    )
    assert response.status_code == 200, response.text
    model = response.json()
    assert (model["kind"], model["architecture"], model["size_label"]) == ("whisper", "whisper", "tiny")
    assert model["settings"]["runtime"] == "whisper-server"


def test_the_openai_sdk_transcribes_a_wav_file(client: openai.OpenAI) -> None:
    transcription = client.audio.transcriptions.create(model=WHISPER, file=("tone.wav", tone_wav(2.0)))

    assert isinstance(transcription.text, str)


@pytest.mark.parametrize("endpoint", ["transcriptions", "translations"])
def test_every_response_format_has_openais_shape_and_content_type(stack, endpoint: str) -> None:
    answers = {
        fmt: post_audio(stack, endpoint, data={"model": WHISPER, "response_format": fmt})
        for fmt in ("json", "text", "srt", "vtt", "verbose_json")
    }
    for fmt, response in answers.items():
        assert response.status_code == 200, (fmt, response.text)

    assert answers["json"].headers["content-type"] == "application/json"
    assert isinstance(answers["json"].json()["text"], str)
    for fmt in ("text", "srt", "vtt"):
        assert answers[fmt].headers["content-type"] == "text/plain; charset=utf-8"
    assert answers["text"].text.endswith("\n")
    srt = answers["srt"].text
    assert srt.startswith("1\n") and re.search(SRT_TIME, srt), srt
    vtt = answers["vtt"].text
    assert vtt.startswith("WEBVTT\n\n") and re.search(VTT_TIME, vtt), vtt

    verbose = answers["verbose_json"].json()
    assert verbose["task"] == ("translate" if endpoint == "translations" else "transcribe")
    assert verbose["duration"] == pytest.approx(2.0)
    assert isinstance(verbose["language"], str) and verbose["language"]
    assert verbose["segments"], verbose
    for segment in verbose["segments"]:
        assert set(segment) >= {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob"}
        assert 0 <= segment["start"] <= segment["end"] <= 2.0
    assert verbose["usage"] == {"type": "duration", "seconds": 2}


def test_word_timestamps_come_with_timestamp_granularities_word(stack) -> None:
    response = post_audio(
        stack,
        data={
            "model": WHISPER,
            "response_format": "verbose_json",
            "timestamp_granularities[]": ["word", "segment"],
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["words"] and body["segments"]
    for word in body["words"]:
        assert set(word) == {"word", "start", "end"} and 0 <= word["start"] <= word["end"] <= 2.0


def test_language_prompt_and_temperature_are_accepted_and_other_rates_and_stereo_are_read(stack) -> None:
    audio = tone_wav(1.5, rate=44100, channels=2)
    response = post_audio(
        stack,
        audio=audio,
        data={
            "model": WHISPER,
            "language": "de",
            "prompt": "Ein Gespräch.",
            "temperature": "0.2",
            "response_format": "verbose_json",
        },
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(1.5)
    assert body["language"] == "german"


def test_flac_is_read_by_whisper_server_itself_without_ffmpeg(stack) -> None:
    response = post_audio(
        stack,
        audio=tone_flac(1.75),
        filename="tone.flac",
        data={"model": WHISPER, "response_format": "verbose_json"},
    )

    assert response.status_code == 200, response.text
    assert response.json()["duration"] == pytest.approx(1.75)


def test_a_request_without_a_model_uses_the_catalogs_whisper_model(stack) -> None:
    response = post_audio(stack, data={"response_format": "text"})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_the_audio_routes_answer_on_the_ollama_and_lm_studio_ports(stack) -> None:
    for face in ("ollama", "lmstudio"):
        response = post_audio(stack, face=face)
        assert response.status_code == 200, (face, response.text)
        assert "text" in response.json()


def test_bad_requests_get_openai_shaped_4xx_errors(stack) -> None:
    no_file = {"notes": ("notes.txt", b"hello", "text/plain")}
    assert_openai_error(post_audio(stack, files=no_file), 400, "file")
    assert_openai_error(post_audio(stack, audio=b""), 400, "file")
    not_audio = assert_openai_error(
        post_audio(stack, audio=b"just some text, not audio\n" * 20, filename="a.txt"), 400
    )
    assert "a.txt" in not_audio["message"] or "ffmpeg" in not_audio["message"]
    broken = assert_openai_error(post_audio(stack, audio=b"RIFF\x10\x00\x00\x00WAVEjunk"), 400, "file")
    assert "WAV" in broken["message"]
    assert_openai_error(post_audio(stack, audio=tone_wav(0.0)), 400, "file")
    assert_openai_error(post_audio(stack, data={"model": "no-such-model"}), 404, "model")
    chat = assert_openai_error(post_audio(stack, data={"model": CHAT}), 400, "model")
    assert chat["code"] == "model_not_supported"
    assert_openai_error(
        post_audio(stack, data={"model": WHISPER, "response_format": "xml"}), 400, "response_format"
    )
    assert_openai_error(post_audio(stack, data={"model": WHISPER, "temperature": "hot"}), 400, "temperature")
    assert_openai_error(post_audio(stack, data={"model": WHISPER, "language": "klingon"}), 400, "language")
    json_body = httpx.post(stack.url("api") + "/v1/audio/transcriptions", json={"model": WHISPER}, timeout=10)
    assert_openai_error(json_body, 400)


def test_a_format_that_needs_ffmpeg_is_refused_naming_it_when_ffmpeg_is_missing(stack) -> None:
    import shutil

    if shutil.which("ffmpeg"):
        pytest.skip("ffmpeg is installed here: m4a would be converted")
    m4a = b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00M4A isomiso2" + bytes(64)
    error = assert_openai_error(post_audio(stack, audio=m4a, filename="voice.m4a"), 400, "file")

    assert "M4A" in error["message"] and "ffmpeg" in error["message"]


def test_concurrent_requests_each_get_their_own_audio(stack) -> None:
    lengths = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]

    async def one(client: httpx.AsyncClient, seconds: float) -> float:
        response = await client.post(
            stack.url("api") + "/v1/audio/transcriptions",
            data={"model": WHISPER, "response_format": "verbose_json"},
            files={"file": ("tone.wav", tone_wav(seconds, frequency=200 + 100 * seconds), "audio/wav")},
        )
        assert response.status_code == 200, response.text
        return response.json()["duration"]

    async def run_all() -> list[float]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(one(client, s) for s in lengths))

    assert asyncio.run(run_all()) == pytest.approx(lengths)


def test_audio_requests_are_recorded_with_audio_seconds_and_duration(stack) -> None:
    assert post_audio(stack, "translations", audio=tone_wav(1.25)).status_code == 200
    assert post_audio(stack, data={"model": WHISPER, "response_format": "bogus"}).status_code == 400

    done = wait_for_rows(
        stack, lambda r: r["audio_seconds"] == pytest.approx(1.25), endpoint="audio/translations"
    )
    refused = wait_for_rows(
        stack,
        lambda r: r["status"] == 400 and "response_format" in r["error"],
        endpoint="audio/transcriptions",
    )

    assert done, stack.usage_rows()
    row = done[0]
    assert (row["model"], row["status"], row["face"]) == (WHISPER, 200, "api")
    assert row["duration_ms"] > 0
    assert refused


def test_a_chat_model_and_the_whisper_model_swap_with_one_model_allowed(stack, client: openai.OpenAI) -> None:
    client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert runner_state(stack, CHAT) == "ready"

    assert (
        client.audio.transcriptions.create(model=WHISPER, file=("tone.wav", tone_wav(1.0))).text is not None
    )
    assert runner_state(stack, WHISPER) == "ready"
    assert runner_state(stack, CHAT) != "ready"

    client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert runner_state(stack, CHAT) == "ready"
    assert runner_state(stack, WHISPER) != "ready"


@pytest.mark.parametrize(
    ("face", "path", "body"),
    [
        ("api", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("api", "/v1/embeddings", {"input": "hi"}),
        ("ollama", "/api/chat", {"messages": [{"role": "user", "content": "hi"}]}),
        ("lmstudio", "/api/v0/completions", {"prompt": "hi"}),
    ],
)
def test_a_whisper_model_named_for_text_gets_a_400_without_starting_it(
    stack, face: str, path: str, body: dict
) -> None:
    response = httpx.post(stack.url(face) + path, json={"model": WHISPER, **body}, timeout=30)
    assert response.status_code == 400, response.text
    payload = response.json()
    message = payload["error"] if isinstance(payload["error"], str) else payload["error"]["message"]
    assert "speech-to-text" in message or "does not support" in message
