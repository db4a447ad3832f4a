import { describe, expect, it } from "vitest";
import { diffForm, errorKey, formFrom, needsRestart, splitArgs } from "./settingsForm";

const settings = {
  runtime: "llama-server", server_binary: "", custom_command: "", parameters: { ctx_size: 2048, threads: 2 },
  extra_args: [], sampling: {}, ttl_seconds: null, pinned: false, group: "", exclusive: false, preload: false,
};

describe("settings form", () => {
  it("sends only what changed, removed parameters as null", () => {
    const before = formFrom(settings, ["a"]);
    const after = formFrom(settings, ["a"]);
    after.parameters.ctx_size = 4096;
    after.parameters.threads = null;
    after.sampling.temperature = 0.2;
    after.ttl_seconds = "300";
    expect(diffForm(before, after)).toEqual({
      parameters: { ctx_size: 4096, threads: null },
      sampling: { temperature: 0.2 },
      ttl_seconds: 300,
    });
  });

  it("sends a list of stop sequences only when what it holds changed", () => {
    const withStop = { ...settings, sampling: { stop: ["<|im_end|>"] } };
    const before = formFrom(withStop, []);
    const after = formFrom(withStop, []);
    after.sampling.stop = ["<|im_end|>"]; // typed again, the same
    expect(diffForm(before, after)).toEqual({});
    after.sampling.stop = ["<|im_end|>", "###"];
    expect(diffForm(before, after)).toEqual({ sampling: { stop: ["<|im_end|>", "###"] } });
    after.sampling.stop = null;
    expect(diffForm(before, after)).toEqual({ sampling: { stop: null } });
  });

  it("restarts the runner for parameter changes but not for TTL or pinning", () => {
    expect(needsRestart({ parameters: { ctx_size: 1 } })).toBe(true);
    expect(needsRestart({ ttl_seconds: 5, pinned: true })).toBe(false);
  });

  it("maps server error fields onto form fields", () => {
    expect(errorKey("parameters.ctx_size")).toBe("parameters.ctx_size");
    expect(errorKey("ttl_seconds")).toBe("ttl_seconds");
    expect(errorKey(null)).toBe("");
  });

  it("splits extra arguments like a shell would for quotes", () => {
    expect(splitArgs('--foo 1 --bar "a b"')).toEqual(["--foo", "1", "--bar", "a b"]);
  });
});
