import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, api, csrfToken, onUnauthorized, postStreamed, withQuery } from "./api";

function reply(status: number, body: unknown) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

describe("api", () => {
  afterEach(() => {
    vi.restoreAllMocks();
    document.cookie = "csrftoken=; expires=Thu, 01 Jan 1970 00:00:00 GMT";
  });

  it("sends the CSRF cookie's token on writes, not on reads", async () => {
    document.cookie = "csrftoken=tok123";
    const fetch = vi.spyOn(globalThis, "fetch").mockImplementation(async () => reply(200, { ok: true }));
    await api.get("/models");
    await api.patch("/models/x", { enabled: false });
    const [, getInit] = fetch.mock.calls[0];
    const [url, patchInit] = fetch.mock.calls[1];
    expect((getInit!.headers as Record<string, string>)["X-CSRFToken"]).toBeUndefined();
    expect(url).toBe("/api/manage/models/x");
    expect((patchInit!.headers as Record<string, string>)["X-CSRFToken"]).toBe("tok123");
    expect(patchInit!.body).toBe('{"enabled":false}');
    expect(csrfToken()).toBe("tok123");
  });

  it("turns the manage API's error shape into an ApiError naming the field", async () => {
    vi.spyOn(globalThis, "fetch").mockResolvedValue(
      reply(400, { error: { message: "ctx_size must be at least 0", field: "parameters.ctx_size" } }),
    );
    const error = (await api.patch("/models/x", { parameters: { ctx_size: -1 } }).catch((e) => e)) as ApiError;
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(400);
    expect(error.field).toBe("parameters.ctx_size");
    expect(error.message).toBe("ctx_size must be at least 0");
  });

  it("tells listeners when the session is gone", async () => {
    vi.spyOn(globalThis, "fetch").mockResolvedValue(reply(401, { error: { message: "log in" } }));
    const listener = vi.fn();
    const off = onUnauthorized(listener);
    await api.get("/runners").catch(() => {});
    off();
    expect(listener).toHaveBeenCalledOnce();
  });

  it("leaves empty filters out of the query string", () => {
    expect(withQuery("/usage", { model: "a b", face: "", key: null, limit: 5 })).toBe("/usage?model=a+b&limit=5");
  });

  it("reads NDJSON progress lines however the chunks split them, and an error line throws", async () => {
    const chunks = ['{"status":"quantizing","completed":1', ',"total":2}\n{"status":"quantizing","completed":2,"total":2}\n{"sta', 'tus":"success","model":"m-q8"}'];
    const stream = () =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          chunks.forEach((chunk) => controller.enqueue(new TextEncoder().encode(chunk)));
          controller.close();
        },
      });
    vi.spyOn(globalThis, "fetch").mockImplementation(async () => new Response(stream(), { status: 200 }));
    const lines: Record<string, unknown>[] = [];
    await postStreamed("/models/m/quantize", { name: "m-q8", type: "Q8_0" }, (line) => lines.push(line));
    expect(lines.map((l) => l.status)).toEqual(["quantizing", "quantizing", "success"]);
    expect(lines[0].completed).toBe(1);
    chunks.splice(0, chunks.length, '{"status":"quantizing"}\n{"error":"llama-quantize failed"}\n');
    const error = await postStreamed("/models/m/quantize", {}, () => {}).catch((e) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.message).toBe("llama-quantize failed");
  });

  it("a refusal before the stream is an ApiError naming the field", async () => {
    vi.spyOn(globalThis, "fetch").mockResolvedValue(reply(409, { error: { message: "taken", field: "model" } }));
    const error = (await postStreamed("/models/m/quantize", {}, () => {}).catch((e) => e)) as ApiError;
    expect([error.status, error.field]).toEqual([409, "model"]);
  });
});
