import { createPinia, setActivePinia } from "pinia";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { toCsv } from "../lib/format";
import { useActivityStore } from "./activity";

const done = {
  type: "request.done", created_at: "2026-01-01T00:00:00Z", face: "api", endpoint: "chat/completions", model: "tiny",
  api_key_id: null, status: 200, stream: true, prompt_tokens: 12, completion_tokens: 30, ttft_ms: 5, prefill_tps: 900,
  decode_tps: 400, duration_ms: 80, error: "",
};

describe("activity store", () => {
  beforeEach(() => {
    setActivePinia(createPinia());
    vi.spyOn(globalThis, "fetch").mockResolvedValue(new Response("[]", { headers: { "content-type": "application/json" } }));
  });

  it("adds a finished request live, at the top", () => {
    const store = useActivityStore();
    store.onRequestDone(done);
    expect(store.rows[0]).toMatchObject({ model: "tiny", completion_tokens: 30, live: true });
    expect(store.count).toBe(1);
  });

  it("leaves out live requests the filters exclude", () => {
    const store = useActivityStore();
    store.filters.model = "other";
    store.onRequestDone(done);
    expect(store.rows).toHaveLength(0);
  });

  it("writes CSV with quoting", () => {
    expect(toCsv(["a", "b"], [{ a: 'x,"y"', b: null }])).toBe('a,b\r\n"x,""y""",\r\n');
  });
});
