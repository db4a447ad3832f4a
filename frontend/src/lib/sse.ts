// Server-sent events from a fetch body: whole frames only, `data:` payloads parsed as JSON.
export class SseParser {
  private buffer = "";

  push(text: string): unknown[] {
    this.buffer += text.replace(/\r\n/g, "\n");
    const out: unknown[] = [];
    let end: number;
    while ((end = this.buffer.indexOf("\n\n")) >= 0) {
      const frame = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const data = frame
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data || data === "[DONE]") continue;
      try {
        out.push(JSON.parse(data));
      } catch {
        // a malformed frame is skipped, the stream goes on
      }
    }
    return out;
  }
}
