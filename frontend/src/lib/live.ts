// The live channel (/ws/status): one WebSocket for the whole app, reconnecting by itself with
// back-off. Stores subscribe to event types; `onOpen` listeners refetch their state after each
// (re)connection, so nothing is missed while the socket was down and nothing polls.
import { ref } from "vue";

export type LiveEvent = { type: string; [key: string]: any };
type Handler = (event: LiveEvent) => void;
type SocketFactory = (url: string) => WebSocket;

export type LiveState = "idle" | "connecting" | "open" | "closed";

export class LiveChannel {
  state = ref<LiveState>("idle");
  private socket: WebSocket | null = null;
  private handlers = new Map<string, Set<Handler>>();
  private openListeners = new Set<() => void>();
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private attempts = 0;
  private wanted = false;
  private pending: LiveEvent[] = [];

  constructor(
    private url: () => string,
    private factory: SocketFactory = (u) => new WebSocket(u),
    private maxDelayMs = 10000,
  ) {}

  on(type: string, handler: Handler): () => void {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type)!.add(handler);
    return () => this.handlers.get(type)?.delete(handler);
  }

  onOpen(listener: () => void): () => void {
    this.openListeners.add(listener);
    return () => this.openListeners.delete(listener);
  }

  send(message: LiveEvent): void {
    if (this.socket && this.socket.readyState === 1) this.socket.send(JSON.stringify(message));
    else this.pending.push(message);
  }

  connect(): void {
    this.wanted = true;
    if (this.socket) return;
    this.state.value = "connecting";
    const socket = this.factory(this.url());
    this.socket = socket;
    socket.onopen = () => {
      this.attempts = 0;
      this.state.value = "open";
      const queued = this.pending.splice(0);
      queued.forEach((m) => socket.send(JSON.stringify(m)));
      this.openListeners.forEach((l) => l());
    };
    socket.onmessage = (message: MessageEvent) => {
      let event: LiveEvent;
      try {
        event = JSON.parse(message.data);
      } catch {
        return;
      }
      this.dispatch(event);
    };
    socket.onclose = () => {
      this.socket = null;
      this.state.value = "closed";
      if (this.wanted) this.scheduleRetry();
    };
    socket.onerror = () => socket.close();
  }

  dispatch(event: LiveEvent): void {
    this.handlers.get(event.type)?.forEach((h) => h(event));
    this.handlers.get("*")?.forEach((h) => h(event));
  }

  retryDelay(): number {
    return Math.min(this.maxDelayMs, 500 * 2 ** Math.min(this.attempts, 5));
  }

  private scheduleRetry(): void {
    if (this.retryTimer) return;
    const delay = this.retryDelay();
    this.attempts += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.wanted) this.connect();
    }, delay);
  }

  disconnect(): void {
    this.wanted = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.socket?.close();
    this.socket = null;
    this.state.value = "idle";
  }
}

export function statusUrl(): string {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws/status`;
}

export const live = new LiveChannel(statusUrl);
