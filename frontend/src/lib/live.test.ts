import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { LiveChannel } from "./live";

class FakeSocket {
  static made: FakeSocket[] = [];
  readyState = 0;
  sent: string[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((m: { data: string }) => void) | null = null;
  onclose: (() => void) | null = null;
  onerror: (() => void) | null = null;
  constructor(public url: string) {
    FakeSocket.made.push(this);
  }
  send(data: string) {
    this.sent.push(data);
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  close() {
    this.readyState = 3;
    this.onclose?.();
  }
  message(event: unknown) {
    this.onmessage?.({ data: JSON.stringify(event) });
  }
}

describe("LiveChannel", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakeSocket.made = [];
  });
  afterEach(() => vi.useRealTimers());

  const channel = () => new LiveChannel(() => "ws://x/ws/status", (u) => new FakeSocket(u) as unknown as WebSocket);

  it("dispatches events to the handlers of their type", () => {
    const live = channel();
    const seen: string[] = [];
    live.on("runner.state", (e) => seen.push(`${e.model}:${e.state}`));
    live.connect();
    FakeSocket.made[0].open();
    FakeSocket.made[0].message({ type: "runner.state", model: "tiny", state: "ready" });
    FakeSocket.made[0].message({ type: "log.line", model: "tiny", lines: [] });
    expect(seen).toEqual(["tiny:ready"]);
    expect(live.state.value).toBe("open");
  });

  it("reconnects by itself with back-off and tells listeners to refetch", () => {
    const live = channel();
    const opened = vi.fn();
    live.onOpen(opened);
    live.connect();
    FakeSocket.made[0].open();
    FakeSocket.made[0].close();
    expect(live.state.value).toBe("closed");
    vi.advanceTimersByTime(499);
    expect(FakeSocket.made).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(FakeSocket.made).toHaveLength(2);
    FakeSocket.made[1].close(); // refused again: waits longer
    vi.advanceTimersByTime(999);
    expect(FakeSocket.made).toHaveLength(2);
    vi.advanceTimersByTime(1);
    FakeSocket.made[2].open();
    expect(opened).toHaveBeenCalledTimes(2);
  });

  it("queues messages until the socket is open and stops for good on disconnect", () => {
    const live = channel();
    live.send({ type: "log.subscribe", model: "tiny" });
    live.connect();
    FakeSocket.made[0].open();
    expect(FakeSocket.made[0].sent).toEqual(['{"type":"log.subscribe","model":"tiny"}']);
    live.disconnect();
    vi.advanceTimersByTime(60000);
    expect(FakeSocket.made).toHaveLength(1);
  });
});
