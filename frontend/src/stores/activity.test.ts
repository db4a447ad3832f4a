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

  it("keeps a request announced while the history was being fetched", async () => {
    let answer: (r: Response) => void = () => {};
    vi.spyOn(globalThis, "fetch").mockReturnValue(new Promise<Response>((resolve) => (answer = resolve)));
    const store = useActivityStore();
    const fetching = store.fetchRows();
    store.onRequestDone({ ...done, id: 7 });
    answer(new Response(JSON.stringify({ count: 0, results: [] }), { headers: { "content-type": "application/json" } }));
    await fetching;
    expect(store.rows.map((r) => r.id)).toEqual([7]);
    expect(store.count).toBe(1);
  });

  it("does not list a request twice when the fetch already has it", async () => {
    const stored = { ...done, id: 9 };
    let answer: (r: Response) => void = () => {};
    vi.spyOn(globalThis, "fetch").mockReturnValue(new Promise<Response>((resolve) => (answer = resolve)));
    const store = useActivityStore();
    const fetching = store.fetchRows();
    store.onRequestDone(stored);
    answer(new Response(JSON.stringify({ count: 1, results: [stored] }), { headers: { "content-type": "application/json" } }));
    await fetching;
    expect(store.rows.map((r) => r.id)).toEqual([9]);
    store.onRequestDone(stored);
    expect(store.rows).toHaveLength(1);
  });

  it("writes CSV with quoting", () => {
    expect(toCsv(["a", "b"], [{ a: 'x,"y"', b: null }])).toBe('a,b\r\n"x,""y""",\r\n');
  });
});
