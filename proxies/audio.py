"""OpenAI's audio endpoints, served by whisper.cpp's whisper-server runners.

`POST /v1/audio/transcriptions` and `/v1/audio/translations` (multipart: `file`, `model`,
`language`, `prompt`, `response_format`, `temperature`, `timestamp_granularities[]`) on every
port that has the OpenAI routes. Everything is checked before a runner is asked for, so a bad
upload never swaps a model in. The audio goes to the model's whisper-server (`POST /inference`)
as WAV, or as MP3 / FLAC / OGG Vorbis, which its built-in decoder reads; any other format is
converted to WAV with ffmpeg when ffmpeg is installed, and refused with a 400 naming the format
otherwise. whisper-server is always asked for `verbose_json`, and each of OpenAI's response
formats is rendered from that here, so every format has OpenAI's shape and content type.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import struct
import tempfile
import uuid
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError

from proxies.catalog_view import ModelView, catalog_view, default_model_name
from proxies.gateway import (
    FaceError,
    acquire_runner,
    authorize,
    finalizer,
    new_context,
    record_failure,
    resolve_model,
)
from proxies.keys import KeyInfo
from proxies.openai_face import api, face_error_response, openai_error
from proxies.relay import RelayContext, open_upstream

if TYPE_CHECKING:
    from runners.scheduler import Lease

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
MAX_AUDIO_BYTES = 512 * 1024 * 1024
MIN_AUDIO_SECONDS = 0.1  # OpenAI's minimum
FFMPEG_TIMEOUT_S = 600.0
WINDOW_SECONDS = 30  # whisper decodes 30-second windows; OpenAI's `seek` counts 10 ms frames
# Formats whisper-server's own decoder (miniaudio, stb_vorbis) reads without ffmpeg.
NATIVE_FORMATS = frozenset({"wav", "mp3", "flac", "ogg-vorbis"})

# whisper.cpp's languages (code:name, "_" for a space), in its order.
_LANGUAGE_TABLE = (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
    "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish it:italian "
    "id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian el:greek ms:malay "
    "cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian th:thai ur:urdu "
    "hr:croatian bg:bulgarian lt:lithuanian la:latin mi:maori ml:malayalam cy:welsh sk:slovak "
    "te:telugu fa:persian lv:latvian bn:bengali sr:serbian az:azerbaijani sl:slovenian "
    "kn:kannada et:estonian mk:macedonian br:breton eu:basque is:icelandic hy:armenian "
    "ne:nepali mn:mongolian bs:bosnian kk:kazakh sq:albanian sw:swahili gl:galician "
    "mr:marathi pa:punjabi si:sinhala km:khmer sn:shona yo:yoruba so:somali af:afrikaans "
    "oc:occitan ka:georgian be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic "
    "yi:yiddish lo:lao uz:uzbek fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk "
    "mt:maltese sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy "
    "as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir jw:javanese "
    "su:sundanese yue:cantonese"
)


def _language_table(table: str) -> dict[str, str]:
    pairs = (item.split(":", 1) for item in table.split())
    return {code: name.replace("_", " ") for code, name in pairs}


LANGUAGES = _language_table(_LANGUAGE_TABLE)
_LANGUAGE_BY_NAME = {name: code for code, name in LANGUAGES.items()}


class AudioError(FaceError):
    """A 4xx about the request's audio or fields, in OpenAI's shape."""

    def __init__(self, message: str, param: str | None = "file", code: str = "invalid_request_error") -> None:
        super().__init__(400, message, code, param)


# --- audio files ------------------------------------------------------------------------------


def sniff_format(head: bytes) -> str:
    """The container/codec of an audio file from its first bytes ('' when unknown)."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] in (b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        page = head[:256]
        if b"\x01vorbis" in page:
            return "ogg-vorbis"
        if b"OpusHead" in page:
            return "ogg-opus"
        if b"\x7fFLAC" in page:
            return "ogg-flac"
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # MPEG audio frame sync; ADTS (AAC) has the same sync with layer bits 00
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:5] == b"#!AMR":
        return "amr"
    if head[:4] == b"caff":
        return "caf"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "wma"
    return ""


@dataclass(frozen=True)
class WavInfo:
    format_tag: int
    channels: int
    sample_rate: int
    bits_per_sample: int
    frames: int | None  # None for compressed WAV (ADPCM...), whose length the data size does not give

    @property
    def duration(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate


WAV_PCM, WAV_FLOAT, WAV_ALAW, WAV_MULAW, WAV_EXTENSIBLE = 1, 3, 6, 7, 0xFFFE


def wav_info(data: bytes) -> WavInfo:
    """Channels, rate and length of a RIFF/WAVE file; AudioError when it is not a readable one."""
    if len(data) < 12 or data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RF64", b"BW64"):
        raise AudioError("the file is not a valid WAV file (no RIFF/WAVE header)")
    fmt: tuple[int, int, int, int, int] | None = None
    data_size: int | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioError("the file is not a valid WAV file (its fmt chunk is truncated)")
            tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", data, body)
            if tag == WAV_EXTENSIBLE and size >= 40 and body + 26 <= len(data):
                (tag,) = struct.unpack_from("<H", data, body + 24)  # the sub-format GUID's first two bytes
            fmt = (tag, channels, rate, bits, block_align)
        elif chunk_id == b"data":
            # Streamed WAVs (and RF64) carry a placeholder size: the bytes present are the data.
            data_size = min(size, len(data) - body)
            break
        offset = body + size + (size & 1)
    if fmt is None:
        raise AudioError("the file is not a valid WAV file (no fmt chunk)")
    if data_size is None:
        raise AudioError("the file is not a valid WAV file (no data chunk)")
    tag, channels, rate, bits, block_align = fmt
    if channels <= 0 or rate <= 0:
        raise AudioError(f"the WAV file is invalid ({channels} channels at {rate} Hz)")
    frames = (
        data_size // block_align if tag in (WAV_PCM, WAV_FLOAT, WAV_ALAW, WAV_MULAW) and block_align else None
    )
    return WavInfo(tag, channels, rate, bits, frames)


@dataclass
class PreparedAudio:
    data: bytes
    filename: str
    content_type: str
    source_format: str
    duration: float | None


def ffmpeg_path() -> str | None:
    return shutil.which("ffmpeg")


def audio_temp_dir() -> Path:
    path = Path(settings.LLAMAPROXY_HOME) / "tmp" / "audio"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def convert_with_ffmpeg(data: bytes, ffmpeg: str, source_format: str) -> bytes:
    """16 kHz mono 16-bit WAV of any audio ffmpeg reads; each call works in its own temporary folder."""
    with tempfile.TemporaryDirectory(dir=audio_temp_dir(), prefix="convert-") as scratch:
        source, target = Path(scratch) / "input", Path(scratch) / "audio.wav"
        await asyncio.to_thread(source.write_bytes, data)
        process = await asyncio.create_subprocess_exec(
            ffmpeg,
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(source),
            "-vn",
            "-ac",
            "1",
            "-ar",
            "16000",
            "-c:a",
            "pcm_s16le",
            "-f",
            "wav",
            str(target),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), FFMPEG_TIMEOUT_S)
        except (TimeoutError, asyncio.CancelledError) as exc:
            process.kill()
            await process.wait()
            if isinstance(exc, TimeoutError):
                raise AudioError(
                    f"converting the audio with ffmpeg took longer than {FFMPEG_TIMEOUT_S:.0f} s"
                ) from None
            raise
        if process.returncode != 0 or not target.is_file():
            lines = stderr.decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"exit status {process.returncode}"
            what = f"{source_format} audio" if source_format else "the file as audio"
            raise AudioError(f"ffmpeg could not read {what}: {why}", code="invalid_file_format")
        return await asyncio.to_thread(target.read_bytes)


async def prepare_audio(data: bytes, filename: str, content_type: str) -> PreparedAudio:
    """The audio as whisper-server reads it: checked WAV, a natively decoded format, or converted."""
    if not data:
        raise AudioError("the audio file is empty", code="invalid_file_format")
    source_format = sniff_format(data[:512])
    if source_format in NATIVE_FORMATS:
        duration = None
        if source_format == "wav":
            duration = wav_info(data).duration
            if duration is not None:
                check_duration(duration)
        return PreparedAudio(data, filename or "audio", content_type, source_format, duration)
    ffmpeg = ffmpeg_path()
    if ffmpeg is None:
        if source_format:
            raise AudioError(
                f"audio in {describe_format(source_format, filename)} format needs ffmpeg to be converted, "
                "and ffmpeg is not installed; install ffmpeg, or send WAV, MP3, FLAC or OGG Vorbis",
                code="invalid_file_format",
            )
        raise AudioError(
            f"the file{f' {filename!r}' if filename else ''} is not audio in a format llamaproxy reads "
            "(WAV, MP3, FLAC, OGG Vorbis; other formats need ffmpeg, which is not installed)",
            code="invalid_file_format",
        )
    wav = await convert_with_ffmpeg(
        data, ffmpeg, describe_format(source_format, filename) if source_format else ""
    )
    duration = wav_info(wav).duration
    if duration is not None:
        check_duration(duration)
    stem = Path(filename).stem if filename else "audio"
    return PreparedAudio(wav, f"{stem}.wav", "audio/wav", source_format or "unknown", duration)


def describe_format(source_format: str, filename: str) -> str:
    suffix = Path(filename).suffix.lower().lstrip(".") if filename else ""
    if source_format == "mp4" and suffix in ("m4a", "mp4", "m4b", "mov", "3gp"):
        return suffix.upper()
    return {"ogg-opus": "OGG Opus", "ogg-flac": "OGG FLAC", "ogg": "OGG", "webm": "WebM"}.get(
        source_format, source_format.upper()
    )


def check_duration(duration: float) -> None:
    if duration <= 0:
        raise AudioError("the audio file contains no audio (0 samples)", code="audio_too_short")
    if duration < MIN_AUDIO_SECONDS:
        raise AudioError(
            f"the audio is too short ({duration:.3f} s); the minimum is {MIN_AUDIO_SECONDS} s",
            code="audio_too_short",
        )


# --- the request ------------------------------------------------------------------------------


@dataclass
class AudioRequest:
    model: str | None
    language: str | None
    prompt: str | None
    response_format: str
    temperature: float | None
    granularities: list[str] = field(default_factory=list)


def parse_fields(fields: Any) -> AudioRequest:
    """The form fields of an audio request, checked as OpenAI checks them (FaceError 400 naming the field)."""

    def text(name: str) -> str | None:
        value = fields.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None

    response_format = (text("response_format") or "json").lower()
    if response_format not in RESPONSE_FORMATS:
        raise AudioError(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)} (got {response_format!r})",
            param="response_format",
        )
    temperature = None
    if (raw := text("temperature")) is not None:
        try:
            temperature = float(raw)
        except ValueError:
            raise AudioError(f"temperature must be a number (got {raw!r})", param="temperature") from None
        if not 0 <= temperature <= 1:  # NaN fails this too
            raise AudioError("temperature must be between 0 and 1", param="temperature")
    language = text("language")
    if language is not None:
        language = normalize_language(language)
    getlist = getattr(fields, "getlist", None)
    raw_granularities: list[str] = []
    for name in ("timestamp_granularities[]", "timestamp_granularities"):
        values = getlist(name) if getlist else ([fields[name]] if name in fields else [])
        for value in values:
            raw_granularities += [v.strip().lower() for v in str(value).split(",") if v.strip()]
    for value in raw_granularities:
        if value not in GRANULARITIES:
            raise AudioError(
                f"timestamp_granularities[] values must be 'word' or 'segment' (got {value!r})",
                param="timestamp_granularities[]",
            )
    if raw_granularities and response_format != "verbose_json":
        raise AudioError(
            "timestamp_granularities[] needs response_format verbose_json", param="timestamp_granularities[]"
        )
    granularities = list(dict.fromkeys(raw_granularities)) or ["segment"]
    return AudioRequest(
        text("model"), language, fields.get("prompt") or None, response_format, temperature, granularities
    )


def normalize_language(value: str) -> str:
    """An ISO-639-1 code whisper knows ('en'), from a code or a name ('English'); 'auto' stays."""
    lowered = value.strip().lower()
    if lowered == "auto" or lowered in LANGUAGES:
        return lowered
    if lowered in _LANGUAGE_BY_NAME:
        return _LANGUAGE_BY_NAME[lowered]
    base = re.split(r"[-_]", lowered)[0]  # en-US, pt_BR
    if base in LANGUAGES:
        return base
    raise AudioError(
        f"language {value!r} is not one whisper knows; use an ISO-639-1 code such as 'en', 'de' or 'ja'",
        param="language",
    )


def upstream_fields(request: AudioRequest, *, translate: bool) -> list[tuple[str, str]]:
    """The form fields of whisper-server's POST /inference (besides the file)."""
    fields = [
        ("response_format", "verbose_json"),
        ("no_language_probabilities", "true"),  # language probabilities cost a second encoder pass
        ("translate", "true" if translate else "false"),
        ("language", request.language or "auto"),
    ]
    if request.temperature is not None:
        fields.append(("temperature", repr(request.temperature)))
    if request.prompt:
        fields.append(("prompt", request.prompt))
    return fields


def multipart_body(fields: Iterable[tuple[str, str]], audio: PreparedAudio) -> tuple[bytes, str]:
    """A multipart/form-data body: the fields, then the audio as `file`."""
    boundary = f"llamaproxy-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value.encode()
            + b"\r\n"
        )
    filename = re.sub(r'["\\\r\n]', "_", audio.filename) or "audio"
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {audio.content_type or 'application/octet-stream'}\r\n\r\n".encode()
        + audio.data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# --- the answer -------------------------------------------------------------------------------


@dataclass
class Transcript:
    task: str
    language: str
    duration: float
    segments: list[dict[str, Any]]

    @property
    def text(self) -> str:
        return "".join(segment["text"] for segment in self.segments).strip()

    @property
    def token_count(self) -> int:
        return sum(len(segment.get("tokens") or ()) for segment in self.segments)


def transcript_from_whisper(body: dict[str, Any], *, translate: bool, duration: float | None) -> Transcript:
    """whisper-server's verbose_json, tidied into OpenAI's segments (times within the audio)."""
    length = duration if duration is not None else _number(body.get("duration"), 0.0)
    segments = []
    for index, raw in enumerate(body.get("segments") or []):
        if not isinstance(raw, dict):
            continue
        start = (
            min(max(_number(raw.get("start"), 0.0), 0.0), length)
            if length
            else _number(raw.get("start"), 0.0)
        )
        end = _number(raw.get("end"), start)
        if length:
            end = min(end, length)
        end = max(end, start)
        text = str(raw.get("text") or "")
        tokens = [t for t in raw.get("tokens") or [] if isinstance(t, int)]
        segments.append(
            {
                "id": index,
                "seek": int(start // WINDOW_SECONDS) * WINDOW_SECONDS * 100,
                "start": round(start, 3),
                "end": round(end, 3),
                "text": text,
                "tokens": tokens,
                "temperature": _number(raw.get("temperature"), 0.0),
                "avg_logprob": _finite(raw.get("avg_logprob")),
                "compression_ratio": compression_ratio(text),
                "no_speech_prob": _finite(raw.get("no_speech_prob")),
                "_words": words_of(raw.get("words") or [], start, end),
            }
        )
    language = str(body.get("language") or "")
    return Transcript(
        task="translate" if translate else "transcribe",
        language="english" if translate else language,
        duration=round(length, 3),
        segments=segments,
    )


def words_of(tokens: list[Any], start: float, end: float) -> list[dict[str, Any]]:
    """whisper-server's per-token timings merged into words (a token starting with a space starts one)."""
    words: list[dict[str, Any]] = []
    for token in tokens:
        if not isinstance(token, dict):
            continue
        piece = str(token.get("word") or "")
        if not piece or (piece.startswith("[_") and piece.endswith("]")):
            continue
        t0 = min(max(_number(token.get("start"), start), start), end)
        t1 = min(max(_number(token.get("end"), t0), t0), end)
        if words and not piece[:1].isspace():
            words[-1]["word"] += piece
            words[-1]["end"] = max(words[-1]["end"], t1)
        else:
            words.append({"word": piece, "start": t0, "end": t1})
    return [
        {"word": w["word"].strip(), "start": round(w["start"], 3), "end": round(max(w["end"], w["start"]), 3)}
        for w in words
        if w["word"].strip()
    ]


def compression_ratio(text: str) -> float:
    raw = text.encode()
    return round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0


def render(transcript: Transcript, response_format: str, granularities: list[str]) -> tuple[str, str]:
    """(body, content type) in OpenAI's shape for `response_format`."""
    usage = {"type": "duration", "seconds": math.ceil(transcript.duration)}
    if response_format == "json":
        return json.dumps({"text": transcript.text, "usage": usage}, ensure_ascii=False), "application/json"
    if response_format == "text":
        return transcript.text + "\n", TEXT_CONTENT_TYPE
    if response_format == "srt":
        blocks = [
            f"{i}\n{timestamp(s['start'], ',')} --> {timestamp(s['end'], ',')}\n{s['text'].strip()}\n"
            for i, s in enumerate(transcript.segments, start=1)
        ]
        return "\n".join(blocks) + ("\n" if blocks else ""), TEXT_CONTENT_TYPE
    if response_format == "vtt":
        cues = [
            f"{timestamp(s['start'], '.')} --> {timestamp(s['end'], '.')}\n{s['text'].strip()}\n"
            for s in transcript.segments
        ]
        return "WEBVTT\n\n" + "\n".join(cues) + ("\n" if cues else ""), TEXT_CONTENT_TYPE
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": transcript.language,
        "duration": transcript.duration,
        "text": transcript.text,
    }
    if "word" in granularities:
        body["words"] = [word for segment in transcript.segments for word in segment["_words"]]
    if "segment" in granularities:
        body["segments"] = [
            {k: v for k, v in s.items() if not k.startswith("_")} for s in transcript.segments
        ]
    body["usage"] = usage
    return json.dumps(body, ensure_ascii=False), "application/json"


def timestamp(seconds: float, separator: str) -> str:
    """00:01:02,345 (SRT, separator ',') or 00:01:02.345 (WebVTT, '.')."""
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def upstream_error(status: int, body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        if error:
            return f"whisper-server: {error}"
    text = body.decode(errors="replace").strip()
    return f"whisper-server answered {status}" + (f": {text[:300]}" if text else "")


# --- the endpoints ----------------------------------------------------------------------------


async def read_form(request: HttpRequest) -> tuple[Any, Any]:
    """(POST, FILES) of a multipart request, parsed off the event loop (big uploads go to disk)."""
    content_type = request.content_type or ""
    if content_type != "multipart/form-data":
        raise AudioError(
            "send the audio as multipart/form-data with a 'file' field "
            f"(the request's content type is {content_type or 'missing'})"
        )

    def parse() -> tuple[Any, Any]:
        return request.POST, request.FILES

    try:
        return await sync_to_async(parse, thread_sensitive=False)()
    except MultiPartParserError as exc:
        raise AudioError(f"the multipart body cannot be parsed: {exc}") from None
    except RequestDataTooBig:
        raise FaceError(413, "the form fields are too large", "request_too_large") from None


async def whisper_model(name: str | None, key: KeyInfo | None, endpoint: str) -> ModelView:
    """The whisper model named, or (none named) the default model if it is one, else the first whisper model."""
    if not name:
        default = default_model_name()
        candidates = [m for m in await catalog_view.listed() if m.kind == "whisper"]
        if default and any(m.name == default for m in candidates):
            name = default
        elif candidates:
            name = sorted(candidates, key=lambda m: m.name)[0].name
        else:
            raise AudioError(
                "you must provide a model parameter (no whisper model is in the catalog)", "model"
            )
    model = await resolve_model(name, key)
    if model.kind != "whisper":
        raise FaceError(
            400,
            f"model '{model.name}' is a {model.kind} model and cannot be used for /v1/{endpoint}; "
            "name a whisper (speech-to-text) model",
            "model_not_supported",
            "model",
        )
    return model


async def audio_endpoint(request: HttpRequest, *, translate: bool, authorized: bool = False) -> HttpResponse:
    """One audio request, start to end. `authorized`: the caller has already checked who is asking
    (the dashboard's Playground, behind the staff login), so no API key is read."""
    endpoint = "audio/translations" if translate else "audio/transcriptions"
    ctx = new_context(request, endpoint)
    try:
        key = None if authorized else await authorize(request, ctx)
        fields, files = await read_form(request)
        upload = files.get("file")
        if upload is None:
            raise AudioError("'file' is required: the audio, as a multipart file field")
        if upload.size > MAX_AUDIO_BYTES:
            raise FaceError(
                413,
                f"the audio file is larger than {MAX_AUDIO_BYTES // (1024 * 1024)} MiB",
                "file_too_large",
                "file",
            )
        parsed = parse_fields(fields)
        model = await whisper_model(parsed.model, key, endpoint)
        ctx.model = model.name
        data = await sync_to_async(_read_upload, thread_sensitive=False)(upload)
        audio = await prepare_audio(data, upload.name or "", upload.content_type or "")
        ctx.audio_seconds = audio.duration
        lease = await acquire_runner(model, ctx, accepts="audio")
    except FaceError as exc:
        record_failure(ctx, exc)
        return face_error_response(exc)
    return await transcribe(lease, ctx, parsed, audio, translate=translate)


def _read_upload(upload: Any) -> bytes:
    upload.seek(0)
    return upload.read()


async def transcribe(
    lease: Lease, ctx: RelayContext, parsed: AudioRequest, audio: PreparedAudio, *, translate: bool
) -> HttpResponse:
    finish = finalizer(lease)
    body, content_type = multipart_body(upstream_fields(parsed, translate=translate), audio)
    try:
        upstream = await open_upstream(
            lease.base_url, "POST", "/inference", content=body, headers={"content-type": content_type}
        )
        try:
            answer = await upstream.aread()
        finally:
            await upstream.aclose()
    except httpx.HTTPError as exc:
        finish.failed(ctx, exc)
        return openai_error(502, ctx.error, "upstream_error")
    except asyncio.CancelledError:
        finish.abandoned(ctx)
        raise
    ctx.status = upstream.status_code
    if upstream.status_code >= 400:
        ctx.error = upstream_error(upstream.status_code, answer)
        finish(ctx)
        return openai_error(upstream.status_code, ctx.error, "upstream_error")
    try:
        result = json.loads(answer)
        if not isinstance(result, dict):
            raise ValueError("not an object")
    except ValueError:
        ctx.status, ctx.error = 502, "whisper-server's answer is not JSON"
        finish(ctx)
        return openai_error(502, ctx.error, "upstream_error")
    transcript = transcript_from_whisper(result, translate=translate, duration=audio.duration)
    if ctx.audio_seconds is None:
        ctx.audio_seconds = transcript.duration
    ctx.meter.completion_tokens = transcript.token_count
    ctx.meter.finish()
    finish(ctx)
    text, response_type = render(transcript, parsed.response_format, parsed.granularities)
    return HttpResponse(text.encode(), content_type=response_type)


@api.post("/v1/audio/transcriptions", include_in_schema=False)
async def transcriptions(request: HttpRequest) -> HttpResponse:
    return await audio_endpoint(request, translate=False)


@api.post("/v1/audio/translations", include_in_schema=False)
async def translations(request: HttpRequest) -> HttpResponse:
    return await audio_endpoint(request, translate=True)
