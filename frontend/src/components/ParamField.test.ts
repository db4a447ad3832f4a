import { mount } from "@vue/test-utils";
import { describe, expect, it } from "vitest";
import ParamField from "./ParamField.vue";
import StateBadge from "./StateBadge.vue";

const ctx = { name: "ctx_size", flag: "--ctx-size", kind: "int" as const, help: "Context size", choices: null, minimum: 0 };

describe("ParamField", () => {
  it("emits numbers for numeric text and leaves the rest for the server to judge", async () => {
    const field = mount(ParamField, { props: { spec: ctx, modelValue: null } });
    await field.find("input").setValue("4096");
    await field.find("input").setValue("lots");
    await field.find("input").setValue("");
    expect(field.emitted("update:modelValue")).toEqual([[4096], ["lots"], [null]]);
  });

  it("says a number's bounds in its placeholder", () => {
    const mirostat = { ...ctx, name: "mirostat", flag: "", minimum: 0, maximum: 2 };
    expect(mount(ParamField, { props: { spec: mirostat, modelValue: null } }).find("input").attributes("placeholder")).toBe("int 0–2");
    expect(mount(ParamField, { props: { spec: ctx, modelValue: null } }).find("input").attributes("placeholder")).toBe("int ≥ 0");
  });

  it("shows the server's error on the field", () => {
    const field = mount(ParamField, { props: { spec: ctx, modelValue: -1, error: "ctx_size must be at least 0" } });
    expect(field.find("[data-test=field-error]").text()).toBe("ctx_size must be at least 0");
    expect(field.classes()).toContain("invalid");
  });

  it("edits a multi-line text in a text area, line breaks kept", async () => {
    const spec = { ...ctx, name: "system", flag: "", kind: "str" as const, minimum: null, multiline: true };
    const field = mount(ParamField, { props: { spec, modelValue: "Be brief.\nAnswer in French." } });
    expect(field.find("input").exists()).toBe(false);
    expect(field.find("textarea").element.value).toBe("Be brief.\nAnswer in French.");
    await field.find("textarea").setValue("  One line\nand another  ");
    await field.find("textarea").setValue("   ");
    expect(field.emitted("update:modelValue")).toEqual([["  One line\nand another  "], [null]]);
  });

  it("edits a list of stop sequences one per line, escapes for line breaks", async () => {
    const spec = { ...ctx, name: "stop", flag: "", kind: "list" as const, minimum: null };
    const field = mount(ParamField, { props: { spec, modelValue: ["<|im_end|>", "\n\nUser:", "a\\b"] } });
    const box = field.find("textarea");
    expect(box.element.value).toBe("<|im_end|>\n\\n\\nUser:\na\\\\b");
    await box.setValue("###\n\n\\nQ:\n");
    await box.setValue("\n  \n");
    await box.setValue("");
    expect(field.emitted("update:modelValue")).toEqual([[["###", "\nQ:"]], [["  "]], [null]]);
  });

  it("keeps a stop list's text as typed while it means the same list, and takes a new list", async () => {
    const spec = { ...ctx, name: "stop", flag: "", kind: "list" as const, minimum: null };
    const field = mount(ParamField, { props: { spec, modelValue: ["a"] } });
    const box = field.find("textarea");
    await box.setValue("a\n"); // a new line begun, nothing on it yet
    await field.setProps({ modelValue: ["a"] });
    expect(box.element.value).toBe("a\n");
    await field.setProps({ modelValue: ["b", "c"] });
    expect(box.element.value).toBe("b\nc");
  });

  it("edits preset messages as JSON, sending text that is not JSON as typed", async () => {
    const spec = { ...ctx, name: "messages", flag: "", kind: "messages" as const, minimum: null };
    const presets = [{ role: "user", content: "hi" }];
    const field = mount(ParamField, { props: { spec, modelValue: presets } });
    const box = field.find("textarea");
    expect(JSON.parse(box.element.value)).toEqual(presets);
    await box.setValue('[{"role": "assistant", "content": "ahoy"}]');
    await box.setValue("[{oops");
    await box.setValue(" ");
    expect(field.emitted("update:modelValue")).toEqual([[[{ role: "assistant", content: "ahoy" }]], ["[{oops"], [null]]);
  });

  it("offers the choices of a choice parameter", () => {
    const spec = { ...ctx, name: "flash_attn", kind: "str" as const, choices: ["on", "off", "auto"] };
    const field = mount(ParamField, { props: { spec, modelValue: "on" } });
    expect(field.findAll("option").map((o) => o.text())).toEqual(["default", "on", "off", "auto"]);
  });
});

describe("StateBadge", () => {
  it("shows load progress while starting", () => {
    const badge = mount(StateBadge, { props: { state: "starting", percent: 40 } });
    expect(badge.text()).toContain("loading 40%");
  });
});
