import { flushPromises, mount, RouterLinkStub } from "@vue/test-utils";
import { createPinia, setActivePinia } from "pinia";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { audioForm, readAudioAnswer, runAudio } from "../lib/audio";
import { useModelsStore, type CatalogModel } from "../stores/models";
import AudioBox from "./AudioBox.vue";

function whisper(name: string, extra: Partial<CatalogModel> = {}): CatalogModel {
  return { name, kind: "whisper", enabled: true, state: "available", ...extra } as CatalogModel;
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

function mountBox(catalog: CatalogModel[]) {
  const store = useModelsStore();
  store.catalog = catalog;
  store.loaded = true;
  return mount(AudioBox, { global: { stubs: { RouterLink: RouterLinkStub } } });
}

async function chooseFile(wrapper: ReturnType<typeof mount>, file: File) {
  const input = wrapper.find("[data-test=audio-file]");
  Object.defineProperty(input.element, "files", { value: [file], configurable: true });
  await input.trigger("change");
}

const wav = () => new File([new Uint8Array([82, 73, 70, 70])], "hello.wav", { type: "audio/wav" });

describe("audio requests", () => {
  beforeEach(() => {
    setActivePinia(createPinia());
    document.cookie = "csrftoken=tok-123";
  });
  afterEach(() => vi.restoreAllMocks());

  it("posts the form to the dashboard's same-origin route with the CSRF token", async () => {
    const fetch = vi.spyOn(globalThis, "fetch").mockResolvedValue(json({ text: "hi there" }));
    const result = await runAudio({ task: "translations", model: "ggml-tiny", file: wav(), language: " de ", responseFormat: "json" });

    expect(result).toEqual({ format: "json", text: "hi there" });
    const [url, init] = fetch.mock.calls[0] as [string, RequestInit];
    expect(url).toBe("/api/playground/v1/audio/translations");
    expect(init.method).toBe("POST");
    expect(init.credentials).toBe("same-origin");
    expect((init.headers as Record<string, string>)["X-CSRFToken"]).toBe("tok-123");
    expect((init.headers as Record<string, string>)["Content-Type"]).toBeUndefined(); // the browser sets the boundary
    const form = init.body as FormData;
    expect(form.get("model")).toBe("ggml-tiny");
    expect(form.get("language")).toBe("de");
    expect(form.get("response_format")).toBe("json");
    expect((form.get("file") as File).name).toBe("hello.wav");
  });

  it("leaves out a blank language (whisper detects it) and reads text and verbose answers", () => {
    const form = audioForm({ task: "transcriptions", model: "m", file: wav(), language: "  " });
    expect(form.has("language")).toBe(false);
    expect(form.get("response_format")).toBe("json");
    expect(readAudioAnswer("text", "hello\n")).toEqual({ format: "text", text: "hello" });
    const verbose = readAudioAnswer("verbose_json", {
      text: "a b", language: "en", duration: 2.5,
      segments: [{ id: 0, start: 0, end: 1.2, text: " a" }, { id: 1, start: 1.2, end: 2.5, text: " b" }],
    });
    expect(verbose.segments).toEqual([{ id: 0, start: 0, end: 1.2, text: "a" }, { id: 1, start: 1.2, end: 2.5, text: "b" }]);
    expect(verbose.duration).toBe(2.5);
  });

  it("turns Django's HTML CSRF refusal into a sentence", async () => {
    vi.spyOn(globalThis, "fetch").mockResolvedValue(new Response("<html>Forbidden</html>", { status: 403, statusText: "Forbidden" }));
    await expect(runAudio({ task: "transcriptions", model: "m", file: wav() })).rejects.toThrow(/CSRF check failed/);
  });
});

describe("AudioBox", () => {
  beforeEach(() => setActivePinia(createPinia()));
  afterEach(() => vi.restoreAllMocks());

  it("says plainly when there is no whisper model, with links to Settings and Models", () => {
    const box = mountBox([{ ...whisper("chat"), kind: "llm" }]);
    const notice = box.find("[data-test=audio-no-model]");
    expect(notice.text()).toContain("No whisper model is in the catalog");
    expect(box.findAllComponents(RouterLinkStub).map((l) => l.props("to"))).toEqual(["/settings", "/models"]);
    expect(box.find("[data-test=audio-transcribe]").exists()).toBe(false);
  });

  it("offers only usable whisper models and shows the server's error inline", async () => {
    const fetch = vi.spyOn(globalThis, "fetch").mockResolvedValue(
      json({ error: { message: "language 'klingon' is not one whisper knows", param: "language" } }, 400),
    );
    const box = mountBox([whisper("ggml-base"), whisper("ggml-off", { enabled: false }), { ...whisper("chat"), kind: "llm" }]);
    await flushPromises();
    expect(box.findAll("[data-test=audio-model] option").map((o) => o.text())).toEqual(["ggml-base"]);
    expect(box.find("[data-test=audio-transcribe]").attributes("disabled")).toBeDefined(); // no file yet

    await chooseFile(box, wav());
    await box.find("[data-test=audio-language]").setValue("klingon");
    await box.find("[data-test=audio-transcribe]").trigger("submit");
    await flushPromises();

    const form = (fetch.mock.calls[0][1] as RequestInit).body as FormData;
    expect(form.get("model")).toBe("ggml-base");
    expect(form.get("language")).toBe("klingon");
    expect(box.find("[data-test=audio-error]").text()).toBe("language 'klingon' is not one whisper knows");
    expect(box.find("[data-test=audio-result]").exists()).toBe(false);
  });

  it("translates and shows the text and the segments of verbose_json", async () => {
    const fetch = vi.spyOn(globalThis, "fetch").mockResolvedValue(
      json({ task: "translate", language: "english", duration: 1.5, text: "one two",
        segments: [{ id: 0, start: 0, end: 0.75, text: " one" }, { id: 1, start: 0.75, end: 1.5, text: " two" }] }),
    );
    const box = mountBox([whisper("ggml-base")]);
    await flushPromises();
    await chooseFile(box, wav());
    await box.find("[data-test=audio-format]").setValue("verbose_json");
    await box.find("[data-test=audio-translate]").trigger("click");
    await flushPromises();

    expect(fetch.mock.calls[0][0]).toBe("/api/playground/v1/audio/translations");
    expect(box.find("[data-test=audio-error]").exists()).toBe(false);
    expect(box.find("[data-test=audio-text]").text()).toBe("one two");
    const rows = box.findAll("[data-test=audio-segments] tbody tr").map((r) => r.findAll("td").map((c) => c.text()));
    expect(rows).toEqual([["0:00.00", "0:00.75", "one"], ["0:00.75", "0:01.50", "two"]]);
  });
});
