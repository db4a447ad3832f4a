import { flushPromises, mount, RouterLinkStub } from "@vue/test-utils";
import { createPinia, setActivePinia } from "pinia";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { DownloadJob, HubListing } from "../stores/downloads";
import HubDownloads from "./HubDownloads.vue";

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

const MiB = 1024 * 1024;
const LISTING: HubListing = {
  repo: "acme/Tiny-GGUF",
  default: "Q4_K_M",
  choices: [
    { label: "Q4_K_M", size: 3 * MiB, files: [{ path: "tiny-Q4_K_M.gguf", size: 3 * MiB }], projector: null, downloaded: "tiny" },
    {
      label: "Q8_0", size: 12 * MiB, downloaded: null, projector: { path: "mmproj-F16.gguf", size: 2 * MiB },
      files: [{ path: "Q8_0/tiny-00001-of-00002.gguf", size: 5 * MiB }, { path: "Q8_0/tiny-00002-of-00002.gguf", size: 5 * MiB }],
    },
  ],
};

function job(extra: Partial<DownloadJob> = {}): DownloadJob {
  return {
    job_id: "j1", status: "downloading", repo: "acme/Tiny-GGUF", quantization: "Q8_0", alias: "hf.co/acme/Tiny-GGUF:Q8_0",
    model: null, files: [], total_size_bytes: 12 * MiB, downloaded_bytes: 3 * MiB, started_at: "2026-01-01T00:00:00Z",
    bytes_per_second: 2 * MiB, ...extra,
  };
}

describe("the Hugging Face panel", () => {
  let jobs: DownloadJob[];
  let posted: unknown[];

  beforeEach(() => {
    setActivePinia(createPinia());
    jobs = [];
    posted = [];
    vi.spyOn(globalThis, "fetch").mockImplementation(async (input, init) => {
      const url = String(input);
      if (url.startsWith("/api/manage/hub/files")) {
        return url.includes("No-Such")
          ? json({ error: { message: "no model repository acme/No-Such-GGUF on Hugging Face", field: "repo" } }, 404)
          : json(LISTING);
      }
      if (url === "/api/manage/downloads" && init?.method === "POST") {
        posted.push(JSON.parse(String(init.body)));
        jobs = [job()];
        return json(jobs[0], 202);
      }
      if (url === "/api/manage/downloads") return json(jobs);
      if (url === "/api/manage/downloads/j1" && init?.method === "DELETE") {
        jobs = [job({ status: "cancelled", downloaded_bytes: 0 })];
        return json(jobs[0]);
      }
      return json({ error: { message: `unexpected ${url}` } }, 500);
    });
  });
  afterEach(() => vi.restoreAllMocks());

  const mountPanel = () => mount(HubDownloads, { global: { stubs: { RouterLink: RouterLinkStub } } });

  it("lists a repository's choices: sizes, parts, projector, the default, what is downloaded", async () => {
    const wrapper = mountPanel();
    await flushPromises();
    expect(wrapper.find("[data-test=downloads]").text()).toContain("No downloads yet.");
    await wrapper.find("[data-test=hub-repo]").setValue("hf.co/acme/Tiny-GGUF");
    await wrapper.find("form").trigger("submit");
    await flushPromises();
    const rows = wrapper.findAll("[data-test=hub-choice]");
    expect(rows).toHaveLength(2);
    expect(rows[0].text()).toContain("Q4_K_M");
    expect(rows[0].text()).toContain("default");
    expect(rows[0].text()).toContain("3.0 MiB");
    expect(rows[0].text()).toContain("downloaded as tiny");
    expect(rows[0].findComponent(RouterLinkStub).props("to")).toBe("/models/tiny");
    expect(rows[0].find("[data-test=hub-download]").exists()).toBe(false);
    expect(rows[1].text()).not.toContain("default");
    expect(rows[1].text()).toContain("12.0 MiB");
    expect(rows[1].text()).toContain("2 parts");
    expect(rows[1].text()).toContain("+ projector");
    expect(wrapper.find("[data-test=hub-name]").attributes("placeholder")).toBe("name (optional)");
  });

  it("downloads a choice under a name, shows its progress, and cancels it", async () => {
    const wrapper = mountPanel();
    await wrapper.find("[data-test=hub-repo]").setValue("acme/Tiny-GGUF");
    await wrapper.find("[data-test=hub-find]").trigger("submit");
    await flushPromises();
    await wrapper.find("[data-test=hub-name]").setValue("my-tiny");
    await wrapper.find("[data-choice=Q8_0] [data-test=hub-download]").trigger("click");
    await flushPromises();
    expect(posted).toEqual([{ model: "acme/Tiny-GGUF", quantization: "Q8_0", name: "my-tiny" }]);
    expect((wrapper.find("[data-test=hub-name]").element as HTMLInputElement).value).toBe("");
    const row = wrapper.find("[data-test=download-job]");
    expect(row.text()).toContain("acme/Tiny-GGUF:Q8_0");
    expect(row.text()).toContain("3.0 MiB / 12.0 MiB");
    expect(row.text()).toContain("2.0 MiB/s");
    expect(row.text()).toContain("4s"); // 9 MiB left at 2 MiB/s
    const progress = row.find("[data-test=download-progress]").element as HTMLProgressElement;
    expect([progress.getAttribute("value"), progress.getAttribute("max")]).toEqual([String(3 * MiB), String(12 * MiB)]);
    await row.find("[data-test=download-cancel]").trigger("click");
    await flushPromises();
    expect(wrapper.find("[data-test=download-status]").text()).toBe("cancelled");
    expect(wrapper.find("[data-test=download-cancel]").exists()).toBe(false);
    wrapper.unmount();
  });

  it("shows a completed job's model and a failed one's error", async () => {
    jobs = [
      job({ job_id: "j2", status: "completed", model: "my-tiny", downloaded_bytes: 12 * MiB }),
      job({ job_id: "j3", status: "failed", error: "the hub answered 500" }),
    ];
    const wrapper = mountPanel();
    await flushPromises();
    const [done, failed] = wrapper.findAll("[data-test=download-job]");
    expect(done.find("[data-test=download-model]").text()).toBe("my-tiny");
    expect(done.findComponent(RouterLinkStub).props("to")).toBe("/models/my-tiny");
    expect(done.text()).not.toContain("MiB/s");
    expect(failed.find("[data-test=download-error]").text()).toBe("the hub answered 500");
    expect(failed.find("[data-test=download-cancel]").exists()).toBe(false);
  });

  it("shows the hub's error", async () => {
    const wrapper = mountPanel();
    await wrapper.find("[data-test=hub-repo]").setValue("acme/No-Such-GGUF");
    await wrapper.find("form").trigger("submit");
    await flushPromises();
    expect(wrapper.find("[data-test=hub-error]").text()).toBe("no model repository acme/No-Such-GGUF on Hugging Face");
    expect(wrapper.find("[data-test=hub-choices]").exists()).toBe(false);
  });
});
