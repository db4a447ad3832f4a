// The Playground's audio box: one multipart request to the dashboard's same-origin audio route
// (the OpenAI face's /v1/audio/transcriptions and /translations behind the staff session), and
// its answer read into text (+ segments for verbose_json).
import { ApiError, request } from "./api";

export type AudioTask = "transcriptions" | "translations";
export const AUDIO_FORMATS = ["json", "text", "srt", "vtt", "verbose_json"] as const;
export type AudioFormat = (typeof AUDIO_FORMATS)[number];
// WAV, MP3, FLAC and OGG Vorbis are read by whisper-server itself; the rest need ffmpeg on the server.
export const AUDIO_ACCEPT = "audio/*,video/mp4,video/webm,.wav,.mp3,.flac,.ogg,.oga,.opus,.m4a,.mp4,.aac,.webm";
export const PLAYGROUND_AUDIO = "/api/playground/v1/audio/";

export interface AudioOptions {
  task: AudioTask;
  model: string;
  file: File;
  language?: string;
  responseFormat?: AudioFormat;
  prompt?: string;
}

export interface AudioSegment {
  id: number;
  start: number;
  end: number;
  text: string;
}

export interface AudioResult {
  format: AudioFormat;
  text: string;
  language?: string;
  duration?: number;
  segments?: AudioSegment[];
}

export function audioForm(options: AudioOptions): FormData {
  const form = new FormData();
  form.append("model", options.model);
  form.append("response_format", options.responseFormat ?? "json");
  const language = options.language?.trim();
  if (language) form.append("language", language);
  const prompt = options.prompt?.trim();
  if (prompt) form.append("prompt", prompt);
  form.append("file", options.file, options.file.name || "audio");
  return form;
}

export function readAudioAnswer(format: AudioFormat, body: unknown): AudioResult {
  if (typeof body === "string") return { format, text: body.replace(/\n$/, "") };
  const data = (body ?? {}) as Record<string, any>;
  const result: AudioResult = { format, text: typeof data.text === "string" ? data.text : "" };
  if (typeof data.language === "string") result.language = data.language;
  if (typeof data.duration === "number") result.duration = data.duration;
  if (Array.isArray(data.segments)) {
    result.segments = data.segments.map((s: any, i: number) => ({
      id: typeof s.id === "number" ? s.id : i,
      start: Number(s.start) || 0,
      end: Number(s.end) || 0,
      text: String(s.text ?? "").trim(),
    }));
  }
  return result;
}

export async function runAudio(options: AudioOptions): Promise<AudioResult> {
  const format = options.responseFormat ?? "json";
  try {
    const body = await request<unknown>("POST", PLAYGROUND_AUDIO + options.task, audioForm(options));
    return readAudioAnswer(format, body);
  } catch (e) {
    // Django's CSRF refusal is an HTML page: say what it means instead of "403 Forbidden".
    if (e instanceof ApiError && e.status === 403 && /^403\b/.test(e.message)) {
      throw new ApiError(403, "the CSRF check failed: reload the page and try again");
    }
    throw e;
  }
}

export function clock(value: number): string {
  const millis = Math.max(0, Math.round(value * 1000));
  const m = Math.floor(millis / 60000);
  const s = ((millis % 60000) / 1000).toFixed(2).padStart(5, "0");
  return `${m}:${s}`;
}
