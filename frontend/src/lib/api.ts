// The manage API: JSON in and out, the session's CSRF token on every write, errors as ApiError.

export class ApiError extends Error {
  status: number;
  field: string | null;

  constructor(status: number, message: string, field: string | null = null) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

export function csrfToken(): string {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

type Query = Record<string, string | number | boolean | null | undefined>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

// Listeners told when the server says the session is gone (401), so the app shows the login.
const unauthorizedListeners = new Set<() => void>();
export function onUnauthorized(listener: () => void): () => void {
  unauthorizedListeners.add(listener);
  return () => unauthorizedListeners.delete(listener);
}

export async function errorFrom(response: Response): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  let field: string | null = null;
  try {
    const body = await response.json();
    const error = body?.error ?? body;
    if (typeof error?.message === "string") message = error.message;
    else if (typeof body?.detail === "string") message = body.detail;
    field = error?.field ?? error?.param ?? null;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message, field);
}

export async function request<T = unknown>(
  method: string,
  path: string,
  body?: unknown,
  query?: Query,
): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRFToken"] = csrfToken();
  let payload: BodyInit | undefined;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(withQuery(path, query), {
    method,
    headers,
    body: payload,
    credentials: "same-origin",
  });
  if (!response.ok) {
    const error = await errorFrom(response);
    if (response.status === 401 && !path.includes("/auth/")) unauthorizedListeners.forEach((l) => l());
    throw error;
  }
  if (response.status === 204) return undefined as T;
  const type = response.headers.get("content-type") || "";
  return (type.includes("json") ? await response.json() : await response.text()) as T;
}

export const MANAGE = "/api/manage";

// A manage API route that answers with NDJSON progress lines (quantizing): each object goes to
// `onLine` as it arrives; a refusal before the stream is an ApiError, a line {"error"} too.
export async function postStreamed(
  path: string,
  body: unknown,
  onLine: (line: Record<string, unknown>) => void,
  signal?: AbortSignal,
): Promise<void> {
  const response = await fetch(MANAGE + path, {
    method: "POST",
    headers: { Accept: "application/x-ndjson", "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify(body),
    credentials: "same-origin",
    signal,
  });
  if (!response.ok) throw await errorFrom(response);
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  const take = (text: string) => {
    if (!text.trim()) return;
    const line = JSON.parse(text) as Record<string, unknown>;
    if (typeof line.error === "string") throw new ApiError(500, line.error);
    onLine(line);
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    pending += value;
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    lines.forEach(take);
  }
  take(pending);
}

export const api = {
  get: <T>(path: string, query?: Query) => request<T>("GET", MANAGE + path, undefined, query),
  post: <T>(path: string, body?: unknown, query?: Query) => request<T>("POST", MANAGE + path, body, query),
  patch: <T>(path: string, body?: unknown) => request<T>("PATCH", MANAGE + path, body),
  del: <T>(path: string) => request<T>("DELETE", MANAGE + path),
};
