import { createPinia, setActivePinia } from "pinia";
import { beforeEach, describe, expect, it, vi } from "vitest";
import { applyRunnerEvent, useModelsStore } from "./models";

describe("models store", () => {
  beforeEach(() => setActivePinia(createPinia()));

  it("follows a runner from loading with progress to ready", () => {
    let state = applyRunnerEvent(undefined, { type: "runner.state", model: "tiny", state: "starting" });
    state = applyRunnerEvent(state, { type: "runner.progress", model: "tiny", stage: "loading tensors", percent: 40, message: "" });
    expect(state.state).toBe("starting");
    expect(state.progress?.percent).toBe(40);
    state = applyRunnerEvent(state, { type: "runner.state", model: "tiny", state: "ready", port: 4321, pid: 9 });
    expect(state).toMatchObject({ state: "ready", port: 4321, pid: 9, progress: null });
    expect(state.ready_at).toBeTruthy();
    state = applyRunnerEvent(state, { type: "runner.state", model: "tiny", state: "stopped", port: null });
    expect(state.port).toBeNull();
  });

  it("shows the GPU memory a ready runner holds until it stops", () => {
    let state = applyRunnerEvent(undefined, { type: "runner.state", model: "tiny", state: "ready", port: 4321 });
    state = applyRunnerEvent(state, { type: "runner.memory", model: "tiny", attempt: "a1", vram_bytes: 512 * 1024 * 1024 });
    expect(state).toMatchObject({ state: "ready", port: 4321, size_vram: 512 * 1024 * 1024 });
    state = applyRunnerEvent(state, { type: "runner.state", model: "tiny", state: "stopped", port: null });
    expect(state.size_vram).toBe(0);
  });

  it("updates the table's state from events without refetching the catalog", () => {
    vi.spyOn(globalThis, "fetch").mockResolvedValue(new Response("[]", { headers: { "content-type": "application/json" } }));
    const store = useModelsStore();
    expect(store.runnerOf("tiny").state).toBe("stopped");
    store.onRunnerEvent({ type: "runner.state", model: "tiny", state: "ready", port: 1 });
    expect(store.runnerOf("tiny").state).toBe("ready");
    expect(store.loadedCount).toBe(1);
  });

  it("removes an entry, asking for its file to be deleted only when told to", async () => {
    const calls: string[] = [];
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
      calls.push(`${init?.method} ${String(input)}`);
      const files = String(input).includes("delete_files") ? ["/m/tiny.gguf"] : [];
      return new Response(JSON.stringify({ deleted: "tiny", files }), { headers: { "content-type": "application/json" } });
    });
    const store = useModelsStore();
    store.catalog = [{ name: "tiny" }, { name: "other" }] as never;
    expect(await store.remove("tiny", false)).toEqual({ deleted: "tiny", files: [] });
    expect(store.catalog.map((m) => m.name)).toEqual(["other"]);
    expect((await store.remove("tiny", true)).files).toEqual(["/m/tiny.gguf"]);
    expect(calls).toEqual(["DELETE /api/manage/models/tiny", "DELETE /api/manage/models/tiny?delete_files=true"]);
  });
});
