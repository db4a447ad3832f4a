import { createPinia, setActivePinia } from "pinia";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  type DownloadJob,
  etaSeconds,
  jobLabel,
  mergeJobs,
  newlyCompleted,
  percentDone,
  POLL_MS,
  upsertJob,
  useDownloadsStore,
} from "./downloads";
import { useModelsStore } from "./models";

function job(id: string, extra: Partial<DownloadJob> = {}): DownloadJob {
  return {
    job_id: id, status: "downloading", repo: "acme/Tiny-GGUF", quantization: "Q8_0", alias: "hf.co/acme/Tiny-GGUF:Q8_0",
    model: null, files: [{ path: "tiny-Q8_0.gguf", size: 1000, downloaded: 0 }], total_size_bytes: 1000, downloaded_bytes: 0,
    started_at: "2026-01-01T00:00:00.000Z", ...extra,
  };
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

type Route = (url: string, init: RequestInit) => Response | Promise<Response>;
function serve(route: Route) {
  return vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => route(String(input), init ?? {}));
}

describe("download jobs", () => {
  it("takes the server's list but keeps a job started while it was on its way, and a cancelled one cancelled", () => {
    const started = job("new");
    const cancelled = job("old", { status: "cancelled" });
    const listed = [job("old", { downloaded_bytes: 500 }), job("older", { status: "completed" })];
    expect(mergeJobs([started, cancelled], listed, new Set(["new"])).map((j) => [j.job_id, j.status])).toEqual([
      ["new", "downloading"], ["old", "cancelled"], ["older", "completed"],
    ]);
    // A job the list no longer has, learned of before it was asked for, is gone.
    expect(mergeJobs([started], [], new Set())).toEqual([]);
    // A later state from the server wins.
    expect(mergeJobs([job("a")], [job("a", { status: "completed" })], new Set())[0].status).toBe("completed");
  });

  it("puts a job in place or at the top", () => {
    const list = [job("a"), job("b")];
    expect(upsertJob(list, job("b", { status: "cancelled" })).map((j) => [j.job_id, j.status])).toEqual([
      ["a", "downloading"], ["b", "cancelled"],
    ]);
    expect(upsertJob(list, job("c")).map((j) => j.job_id)).toEqual(["c", "a", "b"]);
  });

  it("tells which jobs have just completed", () => {
    const before = [job("a"), job("b", { status: "completed" }), job("c")];
    const after = [job("a", { status: "completed" }), job("b", { status: "completed" }), job("c", { status: "failed" }), job("d", { status: "completed" })];
    expect(newlyCompleted(before, after).map((j) => j.job_id)).toEqual(["a"]);
  });

  it("estimates the time left from the server's estimate, or its speed", () => {
    const now = Date.parse("2026-01-01T00:00:10.000Z");
    expect(etaSeconds(job("a", { estimated_completion: "2026-01-01T00:01:40.000Z" }), now)).toBe(90);
    expect(etaSeconds(job("a", { estimated_completion: "2026-01-01T00:00:05.000Z" }), now)).toBe(0);
    expect(etaSeconds(job("a", { downloaded_bytes: 400, bytes_per_second: 200 }), now)).toBe(3);
    expect(etaSeconds(job("a", { bytes_per_second: 0 }), now)).toBeNull();
    expect(etaSeconds(job("a", { status: "completed", bytes_per_second: 200 }), now)).toBeNull();
  });

  it("names a job repo:quantization and says how far it is", () => {
    expect(jobLabel(job("a"))).toBe("acme/Tiny-GGUF:Q8_0");
    expect(jobLabel(job("a", { quantization: "" }))).toBe("acme/Tiny-GGUF");
    expect(percentDone(job("a", { downloaded_bytes: 250 }))).toBe(25);
    expect(percentDone(job("a", { status: "completed" }))).toBe(100);
    expect(percentDone(job("a", { total_size_bytes: 0 }))).toBe(0);
  });
});

describe("downloads store", () => {
  beforeEach(() => {
    setActivePinia(createPinia());
    document.cookie = "csrftoken=tok-9";
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.restoreAllMocks();
  });

  it("finds a repository's choices, and says why not", async () => {
    const listing = { repo: "acme/Tiny-GGUF", default: "Q4_K_M", choices: [] };
    const fetch = serve((url) =>
      url.includes("No-Such")
        ? json({ error: { message: "no model repository acme/No-Such-GGUF on Hugging Face", field: "repo" } }, 404)
        : json(listing),
    );
    const store = useDownloadsStore();
    await store.find(" hf.co/acme/Tiny-GGUF ");
    expect(fetch.mock.calls[0][0]).toBe("/api/manage/hub/files?repo=hf.co%2Facme%2FTiny-GGUF");
    expect(store.listing).toEqual(listing);
    await store.find("acme/No-Such-GGUF");
    expect(store.listing).toBeNull();
    expect(store.error).toBe("no model repository acme/No-Such-GGUF on Hugging Face");
  });

  it("starts a download under a name, and names the model a choice is already downloaded as", async () => {
    const fetch = serve((_url, init) => {
      const body = JSON.parse(String(init.body));
      return body.quantization === "Q4_K_M" ? json({ status: "already_downloaded", model: "tiny" }) : json(job("j1"), 202);
    });
    const store = useDownloadsStore();
    await store.start("acme/Tiny-GGUF", "Q8_0", "  my-tiny ");
    const [url, init] = fetch.mock.calls[0] as [string, RequestInit];
    expect([url, init.method]).toEqual(["/api/manage/downloads", "POST"]);
    expect(JSON.parse(String(init.body))).toEqual({ model: "acme/Tiny-GGUF", quantization: "Q8_0", name: "my-tiny" });
    expect((init.headers as Record<string, string>)["X-CSRFToken"]).toBe("tok-9");
    expect(store.jobs.map((j) => j.job_id)).toEqual(["j1"]);

    await store.start("acme/Tiny-GGUF", "Q4_K_M", "");
    expect(JSON.parse(String((fetch.mock.calls[1][1] as RequestInit).body))).toEqual({ model: "acme/Tiny-GGUF", quantization: "Q4_K_M" });
    expect(store.notice).toContain("already downloaded, as tiny");
    expect(store.error).toBeNull();
  });

  it("shows a name that is taken", async () => {
    serve(() => json({ error: { message: "tiny is already the name of a model", field: "name" } }, 409));
    const store = useDownloadsStore();
    expect(await store.start("acme/Tiny-GGUF", "Q8_0", "tiny")).toBeNull();
    expect(store.error).toBe("tiny is already the name of a model");
    expect(store.jobs).toEqual([]);
  });

  it("polls each second while a job downloads, refetches the catalog when it completes, then stops", async () => {
    vi.useFakeTimers();
    const answers = [
      [job("j1", { downloaded_bytes: 100 })],
      [job("j1", { downloaded_bytes: 600 })],
      [job("j1", { status: "completed", downloaded_bytes: 1000, model: "tiny" })],
    ];
    let listed = 0;
    const fetch = serve((url) => {
      if (url === "/api/manage/downloads") return json(answers[Math.min(listed++, answers.length - 1)]);
      if (url === "/api/manage/models") return json([{ name: "tiny" }]);
      return json({ error: { message: `unexpected ${url}` } }, 500);
    });
    const downloads = useDownloadsStore();
    const models = useModelsStore();
    await downloads.watch();
    expect(downloads.jobs[0].downloaded_bytes).toBe(100);
    await vi.advanceTimersByTimeAsync(POLL_MS);
    expect(downloads.jobs[0].downloaded_bytes).toBe(600);
    await vi.advanceTimersByTimeAsync(POLL_MS);
    expect(downloads.jobs[0].status).toBe("completed");
    expect(downloads.active).toBe(false);
    await vi.waitFor(() => expect(models.catalog.map((m) => m.name)).toEqual(["tiny"]));
    await vi.advanceTimersByTimeAsync(5 * POLL_MS);
    expect(listed).toBe(3); // nothing downloads: no more polls
    expect(fetch.mock.calls.filter(([u]) => u === "/api/manage/models")).toHaveLength(1);
  });

  it("stops polling when no longer watched", async () => {
    vi.useFakeTimers();
    let listed = 0;
    serve(() => {
      listed += 1;
      return json([job("j1")]);
    });
    const store = useDownloadsStore();
    await store.watch();
    await vi.advanceTimersByTimeAsync(POLL_MS);
    expect(listed).toBe(2);
    store.unwatch();
    await vi.advanceTimersByTimeAsync(5 * POLL_MS);
    expect(listed).toBe(2);
  });

  it("cancels a job: it shows cancelled even if a poll on its way still says downloading", async () => {
    let answerList: (r: Response) => void = () => {};
    serve((url, init) => {
      if (init.method === "DELETE") return json(job("j1", { status: "cancelled" }));
      if (url === "/api/manage/downloads") return new Promise<Response>((resolve) => (answerList = resolve));
      return json({}, 500);
    });
    const store = useDownloadsStore();
    store.jobs = [job("j1")];
    const polling = store.load();
    await store.cancel("j1");
    expect(store.jobs[0].status).toBe("cancelled");
    answerList(json([job("j1", { downloaded_bytes: 300 })]));
    await polling;
    expect(store.jobs.map((j) => j.status)).toEqual(["cancelled"]);
  });
});
