import { describe, expect, it } from "vitest";
import { SseParser } from "./sse";

describe("SseParser", () => {
  it("parses only whole frames, across network chunks", () => {
    const parser = new SseParser();
    expect(parser.push('data: {"a":')).toEqual([]);
    expect(parser.push('1}\n\ndata: {"b":2}\n')).toEqual([{ a: 1 }]);
    expect(parser.push("\ndata: [DONE]\n\n")).toEqual([{ b: 2 }]);
  });
});
