"""The pure parts of the audio endpoints: format sniffing, WAV checks, fields, rendering, conversion."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import struct
import sys
import wave
from pathlib import Path

import pytest
from django.http import QueryDict
from django.http.multipartparser import MultiPartParser
from django.utils.datastructures import MultiValueDict

from proxies import audio
from proxies.audio import (
    AudioError,
    AudioRequest,
    PreparedAudio,
    multipart_body,
    normalize_language,
    parse_fields,
    prepare_audio,
    render,
    sniff_format,
    timestamp,
    transcript_from_whisper,
    upstream_fields,
    wav_info,
    words_of,
)


def pcm_wav(seconds: float, rate: int = 16000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(2 * channels * int(seconds * rate)))
    return buffer.getvalue()


def float_wav(seconds: float, rate: int = 22050) -> bytes:
    frames = int(seconds * rate)
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    data = bytes(4 * frames)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


WHISPER_ANSWER = {
    "task": "transcribe",
    "language": "english",
    "duration": 2.0,
    "text": " Hello world.\n Again\n",
    "segments": [
        {
            "id": 0,
            "text": " Hello world.",
            "start": 0.0,
            "end": 1.2,
            "tokens": [1, 2, 3],
            "words": [
                {"word": " Hello", "start": 0.0, "end": 0.5, "probability": 0.9},
                {"word": " wor", "start": 0.5, "end": 0.8, "probability": 0.9},
                {"word": "ld.", "start": 0.8, "end": 1.2, "probability": 0.9},
            ],
            "temperature": 0.0,
            "avg_logprob": -0.3,
            "no_speech_prob": 0.01,
        },
        {
            "id": 1,
            "text": " Again",
            "start": 1.2,
            "end": 30.0,  # whisper's window end, past the audio
            "tokens": [4],
            "words": [{"word": " Again", "start": 1.2, "end": 30.0}],
            "temperature": 0.0,
            "avg_logprob": -0.5,
            "no_speech_prob": 0.02,
        },
    ],
}


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (pcm_wav(0.1), "wav"),
        (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x64\x00", "mp3"),
        (b"\xff\xf1\x50\x80\x02", "aac"),
        (b"OggS\x00\x02" + bytes(22) + b"\x01vorbis", "ogg-vorbis"),
        (b"OggS\x00\x02" + bytes(22) + b"OpusHead", "ogg-opus"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "webm"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00", "mp4"),
        (b"FORM\x00\x00\x00\x10AIFFCOMM", "aiff"),
        (b"#!AMR\n", "amr"),
        (b"hello, I am text", ""),
        (b"", ""),
    ],
)
def test_the_audio_format_is_recognised_from_the_first_bytes(head: bytes, expected: str) -> None:
    assert sniff_format(head) == expected


def test_a_pcm_wav_gives_its_channels_rate_and_duration() -> None:
    info = wav_info(pcm_wav(1.5, rate=44100, channels=2))

    assert (info.channels, info.sample_rate, info.bits_per_sample) == (2, 44100, 16)
    assert info.duration == pytest.approx(1.5)


def test_a_float_wav_and_a_streamed_wav_with_a_placeholder_size_are_read() -> None:
    assert wav_info(float_wav(0.5)).duration == pytest.approx(0.5)
    streamed = bytearray(pcm_wav(1.0))
    data_at = streamed.index(b"data")
    streamed[data_at + 4 : data_at + 8] = b"\xff\xff\xff\xff"  # as ffmpeg writes to a pipe

    assert wav_info(bytes(streamed)).duration == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"RIFF\x04\x00\x00\x00WAVE", "no fmt chunk"),
        (b"RIFF\x10\x00\x00\x00WAVEjunk\x00\x00\x00\x00", "no fmt chunk"),
        (pcm_wav(0.1).replace(b"data", b"dat_"), "no data chunk"),
        (b"not a wav at all", "no RIFF/WAVE header"),
    ],
)
def test_a_broken_wav_is_a_400_saying_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(AudioError, match=message) as caught:
        wav_info(data)
    assert (caught.value.status, caught.value.param) == (400, "file")


def test_fields_default_to_json_and_segment_timestamps() -> None:
    parsed = parse_fields(QueryDict("model=whisper"))

    assert (parsed.model, parsed.response_format, parsed.granularities) == ("whisper", "json", ["segment"])
    assert parsed.language is None and parsed.temperature is None


def test_fields_are_read_as_openai_sends_them() -> None:
    fields = QueryDict(
        "model=w&language=German&prompt=Hi&response_format=verbose_json&temperature=0.4"
        "&timestamp_granularities[]=word&timestamp_granularities[]=segment"
    )
    parsed = parse_fields(fields)

    assert (parsed.language, parsed.prompt, parsed.temperature) == ("de", "Hi", 0.4)
    assert parsed.granularities == ["word", "segment"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("response_format=xml", "response_format"),
        ("temperature=warm", "temperature"),
        ("temperature=1.5", "temperature"),
        ("language=klingon", "language"),
        ("timestamp_granularities[]=char&response_format=verbose_json", "timestamp_granularities[]"),
        ("timestamp_granularities[]=word", "timestamp_granularities[]"),  # needs verbose_json
    ],
)
def test_a_bad_field_is_a_400_naming_it(query: str, param: str) -> None:
    with pytest.raises(AudioError) as caught:
        parse_fields(QueryDict(query))
    assert caught.value.param == param


@pytest.mark.parametrize(("value", "code"), [("en", "en"), ("EN", "en"), ("en-US", "en"), ("japanese", "ja")])
def test_languages_are_whisper_codes_from_codes_names_or_locales(value: str, code: str) -> None:
    assert normalize_language(value) == code


def test_whisper_server_is_asked_for_verbose_json_with_the_task_and_auto_language() -> None:
    request = AudioRequest("w", None, "context", "srt", 0.2)

    assert dict(upstream_fields(request, translate=True)) == {
        "response_format": "verbose_json",
        "no_language_probabilities": "true",
        "translate": "true",
        "language": "auto",
        "temperature": "0.2",
        "prompt": "context",
    }
    assert (
        dict(upstream_fields(AudioRequest("w", "de", None, "json", None), translate=False))["translate"]
        == "false"
    )


def test_the_multipart_body_parses_back_into_the_fields_and_the_file() -> None:
    prepared = PreparedAudio(pcm_wav(0.2), 'we"ird.wav', "audio/wav", "wav", 0.2)
    body, content_type = multipart_body([("language", "de"), ("prompt", "Grüße")], prepared)
    meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body))}

    fields, files = MultiPartParser(meta, io.BytesIO(body), [_memory_handler()], "utf-8").parse()

    assert (fields["language"], fields["prompt"]) == ("de", "Grüße")
    assert isinstance(files, MultiValueDict) and files["file"].read() == prepared.data


def _memory_handler():
    from django.core.files.uploadhandler import MemoryFileUploadHandler

    return MemoryFileUploadHandler()


def test_segments_are_kept_inside_the_audio_and_words_are_merged_from_tokens() -> None:
    transcript = transcript_from_whisper(WHISPER_ANSWER, translate=False, duration=2.0)

    assert transcript.text == "Hello world. Again"
    assert [(s["start"], s["end"]) for s in transcript.segments] == [(0.0, 1.2), (1.2, 2.0)]
    assert [w["word"] for w in transcript.segments[0]["_words"]] == ["Hello", "world."]
    assert transcript.segments[0]["_words"][1] == {"word": "world.", "start": 0.5, "end": 1.2}
    assert transcript.token_count == 4


def test_a_translation_reports_its_task_and_english() -> None:
    transcript = transcript_from_whisper(
        {**WHISPER_ANSWER, "language": "german"}, translate=True, duration=None
    )

    assert (transcript.task, transcript.language, transcript.duration) == ("translate", "english", 2.0)


def test_json_and_text_are_openais_shapes() -> None:
    transcript = transcript_from_whisper(WHISPER_ANSWER, translate=False, duration=2.0)

    body, content_type = render(transcript, "json", ["segment"])
    assert content_type == "application/json"
    assert json.loads(body) == {"text": "Hello world. Again", "usage": {"type": "duration", "seconds": 2}}
    assert render(transcript, "text", ["segment"]) == ("Hello world. Again\n", "text/plain; charset=utf-8")


def test_srt_and_vtt_are_numbered_cues_with_their_own_time_separators() -> None:
    transcript = transcript_from_whisper(WHISPER_ANSWER, translate=False, duration=2.0)

    srt, _ = render(transcript, "srt", ["segment"])
    vtt, content_type = render(transcript, "vtt", ["segment"])

    assert srt == (
        "1\n00:00:00,000 --> 00:00:01,200\nHello world.\n\n2\n00:00:01,200 --> 00:00:02,000\nAgain\n\n"
    )
    assert (
        vtt
        == "WEBVTT\n\n00:00:00.000 --> 00:00:01.200\nHello world.\n\n00:00:01.200 --> 00:00:02.000\nAgain\n\n"
    )
    assert content_type == "text/plain; charset=utf-8"


def test_verbose_json_has_segments_or_words_as_the_granularities_ask() -> None:
    transcript = transcript_from_whisper(WHISPER_ANSWER, translate=False, duration=2.0)

    segments = json.loads(render(transcript, "verbose_json", ["segment"])[0])
    words = json.loads(render(transcript, "verbose_json", ["word"])[0])

    assert set(segments) == {"task", "language", "duration", "text", "segments", "usage"}
    assert set(segments["segments"][0]) == {
        "id",
        "seek",
        "start",
        "end",
        "text",
        "tokens",
        "temperature",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
    }
    assert "segments" not in words
    assert [w["word"] for w in words["words"]] == ["Hello", "world.", "Again"]


def test_timestamps_carry_hours_and_milliseconds() -> None:
    assert timestamp(3723.4567, ",") == "01:02:03,457"
    assert timestamp(0, ".") == "00:00:00.000"


def test_special_tokens_are_not_words() -> None:
    tokens = [{"word": "[_BEG_]", "start": 0, "end": 0}, {"word": " Hi", "start": 0.1, "end": 0.2}]

    assert words_of(tokens, 0.0, 1.0) == [{"word": "Hi", "start": 0.1, "end": 0.2}]


async def test_wav_and_the_formats_whisper_server_decodes_go_through_unconverted(monkeypatch) -> None:
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)

    wav = await prepare_audio(pcm_wav(1.0), "a.wav", "audio/wav")
    mp3 = await prepare_audio(b"ID3\x04" + bytes(100), "a.mp3", "audio/mpeg")

    assert (wav.source_format, wav.duration) == ("wav", pytest.approx(1.0))
    assert (mp3.source_format, mp3.duration, mp3.filename) == ("mp3", None, "a.mp3")


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "invalid_file_format"), (pcm_wav(0.0), "audio_too_short"), (pcm_wav(0.05), "audio_too_short")],
)
async def test_empty_and_too_short_audio_are_refused(data: bytes, code: str) -> None:
    with pytest.raises(AudioError) as caught:
        await prepare_audio(data, "a.wav", "audio/wav")
    assert caught.value.code == code


async def test_without_ffmpeg_other_formats_are_refused_naming_the_format(monkeypatch) -> None:
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: None)

    with pytest.raises(AudioError, match="M4A format needs ffmpeg"):
        await prepare_audio(b"\x00\x00\x00\x20ftypM4A " + bytes(64), "memo.m4a", "audio/mp4")
    with pytest.raises(AudioError, match="OGG Opus format needs ffmpeg"):
        await prepare_audio(b"OggS" + bytes(24) + b"OpusHead" + bytes(20), "a.ogg", "audio/ogg")
    with pytest.raises(AudioError, match=r"'notes\.txt' is not audio"):
        await prepare_audio(b"plain text\n" * 10, "notes.txt", "text/plain")


def fake_ffmpeg(folder: Path, *, fail: bool = False) -> str:
    """A stand-in for ffmpeg: writes, as the output WAV, a WAV whose length is the input's size in ms."""
    script = folder / "ffmpeg"
    body = (
        "import sys, wave, time\n"
        "args = sys.argv[1:]\n"
        "src, dst = args[args.index('-i') + 1], args[-1]\n"
        "data = open(src, 'rb').read()\n"
        + ("sys.stderr.write('Invalid data found when processing input\\n'); sys.exit(1)\n" if fail else "")
        + "time.sleep(0.2)\n"
        "with wave.open(dst, 'wb') as out:\n"
        "    out.setnchannels(1); out.setsampwidth(2); out.setframerate(16000)\n"
        "    out.writeframes(bytes(2 * 16 * len(data)))\n"
    )
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


async def test_concurrent_conversions_each_use_their_own_temporary_files(
    tmp_path: Path, settings, monkeypatch
) -> None:
    settings.LLAMAPROXY_HOME = tmp_path / "home"
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: fake_ffmpeg(tmp_path))
    sizes = [200, 400, 600, 800, 1000]

    prepared = await asyncio.gather(
        *(prepare_audio(b"\x1a\x45\xdf\xa3" + bytes(n - 4), "clip.webm", "audio/webm") for n in sizes)
    )

    assert [p.duration for p in prepared] == pytest.approx([n / 1000 for n in sizes])
    assert all(p.filename == "clip.wav" and p.source_format == "webm" for p in prepared)
    assert list((tmp_path / "home" / "tmp" / "audio").iterdir()) == []  # nothing left behind


async def test_a_file_ffmpeg_cannot_read_is_a_400_with_ffmpegs_reason(
    tmp_path: Path, settings, monkeypatch
) -> None:
    settings.LLAMAPROXY_HOME = tmp_path / "home"
    monkeypatch.setattr(audio, "ffmpeg_path", lambda: fake_ffmpeg(tmp_path, fail=True))

    with pytest.raises(AudioError, match="ffmpeg could not read the file as audio: Invalid data") as caught:
        await prepare_audio(b"not audio at all" * 10, "x.bin", "application/octet-stream")
    assert caught.value.status == 400
