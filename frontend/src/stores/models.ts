// The catalog and the live state of each model's runner: fetched once (and after each
// reconnection), then kept current by runner.state / runner.progress / catalog.changed events.
import { defineStore } from "pinia";
import { computed, ref } from "vue";
import { api } from "../lib/api";
import { debounce } from "../lib/debounce";
import type { LiveChannel, LiveEvent } from "../lib/live";

export interface RunnerSettings {
  runtime: string;
  server_binary: string;
  custom_command: string;
  parameters: Record<string, unknown>;
  extra_args: string[];
  sampling: Record<string, unknown>;
  ttl_seconds: number | null;
  pinned: boolean;
  group: string;
  exclusive: boolean;
  preload: boolean;
}

export interface CatalogModel {
  name: string;
  display_name: string;
  path: string;
  base: string | null;
  folder: string | null;
  kind: string;
  state: string;
  error: string;
  enabled: boolean;
  aliases: string[];
  architecture: string;
  quantization: string;
  size_label: string;
  parameter_count: number | null;
  size_bytes: number;
  split_count?: number;
  mmproj_path?: string;
  source?: string;
  context_length: number | null;
  capabilities: string[];
  settings: RunnerSettings | null;
  chat_template?: string;
  metadata?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface Progress {
  stage: string;
  percent: number | null;
  message: string;
}

export interface RunnerStatus {
  model: string;
  state: string;
  host?: string | null;
  port?: number | null;
  pid?: number | null;
  started_at?: string | null;
  ready_at?: string | null;
  last_used_at?: string | null;
  expires_at?: string | null;
  memory_estimate?: number | null;
  size_vram?: number;
  in_flight?: number;
  queued?: number;
  progress?: Progress | null;
  failure_reason?: string;
  log_excerpt?: string;
  context_length?: number | null;
  parameters?: Record<string, unknown>;
}

export const RUNNING_STATES = ["starting", "ready", "draining", "stopping"];

export function applyRunnerEvent(current: RunnerStatus | undefined, event: LiveEvent): RunnerStatus {
  const base: RunnerStatus = current ? { ...current } : { model: event.model, state: "stopped" };
  if (event.type === "runner.memory") {
    return { ...base, size_vram: typeof event.vram_bytes === "number" ? event.vram_bytes : base.size_vram };
  }
  if (event.type === "runner.progress") {
    return { ...base, state: base.state === "stopped" || base.state === "failed" ? "starting" : base.state,
      progress: { stage: event.stage, percent: event.percent ?? null, message: event.message ?? "" } };
  }
  const next: RunnerStatus = { ...base, state: event.state };
  for (const key of ["host", "port", "pid", "failure_reason", "log_excerpt"] as const) {
    if (key in event) (next as any)[key] = event[key];
  }
  const now = new Date().toISOString();
  if (event.state === "starting") {
    next.started_at = now;
    next.ready_at = null;
    next.progress = null;
  } else if (event.state === "ready") {
    next.ready_at = base.state === "ready" && base.ready_at ? base.ready_at : now;
    next.progress = null;
  } else if (event.state === "stopped" || event.state === "failed") {
    next.port = event.state === "stopped" ? null : next.port;
    next.ready_at = null;
    next.size_vram = 0;
    next.progress = null;
  }
  return next;
}

export const useModelsStore = defineStore("models", () => {
  const catalog = ref<CatalogModel[]>([]);
  const runners = ref<Record<string, RunnerStatus>>({});
  const loaded = ref(false);
  const error = ref<string | null>(null);
  const busy = ref<Record<string, string>>({}); // model → action in flight

  async function fetchCatalog(): Promise<void> {
    catalog.value = await api.get<CatalogModel[]>("/models");
  }
  async function fetchRunners(): Promise<void> {
    const rows = await api.get<RunnerStatus[]>("/runners");
    const map: Record<string, RunnerStatus> = {};
    for (const row of rows) if (row.model) map[row.model] = row;
    runners.value = map;
  }
  async function refresh(): Promise<void> {
    try {
      await Promise.all([fetchCatalog(), fetchRunners()]);
      error.value = null;
      loaded.value = true;
    } catch (e) {
      error.value = (e as Error).message;
    }
  }
  const refetchRunners = debounce(() => fetchRunners().catch(() => {}), 400);
  const refetchCatalog = debounce(() => fetchCatalog().catch(() => {}), 300);

  function onRunnerEvent(event: LiveEvent): void {
    if (!event.model) return;
    runners.value = { ...runners.value, [event.model]: applyRunnerEvent(runners.value[event.model], event) };
    if (event.type === "runner.state") refetchRunners(); // memory, TTL, timestamps from the scheduler
  }

  function bind(channel: LiveChannel): void {
    channel.on("runner.state", onRunnerEvent);
    channel.on("runner.progress", onRunnerEvent);
    channel.on("runner.memory", onRunnerEvent);
    channel.on("catalog.changed", () => refetchCatalog());
    channel.onOpen(() => refresh());
  }

  function runnerOf(name: string): RunnerStatus {
    return runners.value[name] ?? { model: name, state: "stopped" };
  }

  async function act(name: string, action: "load" | "unload" | "restart"): Promise<void> {
    busy.value = { ...busy.value, [name]: action };
    try {
      await api.post(`/runners/${encodeURIComponent(name)}/${action}`);
    } finally {
      const { [name]: _, ...rest } = busy.value;
      busy.value = rest;
    }
  }
  async function unloadAll(): Promise<void> {
    await api.post("/runners/unload-all");
  }
  async function setEnabled(names: string[], enabled: boolean): Promise<void> {
    for (const name of names) {
      const updated = await api.patch<CatalogModel>(`/models/${encodeURIComponent(name)}`, { enabled });
      replace(updated);
    }
  }
  async function scan(): Promise<Record<string, unknown>> {
    const result = await api.post<Record<string, unknown>>("/scan");
    await fetchCatalog();
    return result;
  }
  async function detail(name: string): Promise<CatalogModel> {
    return api.get<CatalogModel>(`/models/${encodeURIComponent(name)}`);
  }
  async function update(name: string, changes: Record<string, unknown>): Promise<CatalogModel> {
    const updated = await api.patch<CatalogModel>(`/models/${encodeURIComponent(name)}`, changes);
    replace(updated);
    return updated;
  }
  // Remove an entry (its runner stopped first); with `deleteFiles` its file goes from disk too.
  async function remove(name: string, deleteFiles: boolean): Promise<{ deleted: string; files: string[] }> {
    const query = deleteFiles ? "?delete_files=true" : "";
    const result = await api.del<{ deleted: string; files: string[] }>(`/models/${encodeURIComponent(name)}${query}`);
    catalog.value = catalog.value.filter((m) => m.name !== result.deleted);
    return result;
  }
  function replace(model: CatalogModel): void {
    const index = catalog.value.findIndex((m) => m.name === model.name);
    if (index >= 0) catalog.value.splice(index, 1, { ...catalog.value[index], ...model });
  }

  const loadedCount = computed(() => Object.values(runners.value).filter((r) => r.state === "ready").length);

  return {
    catalog, runners, loaded, error, busy, loadedCount,
    refresh, fetchCatalog, fetchRunners, bind, runnerOf, act, unloadAll, setEnabled, scan, detail, update,
    remove, onRunnerEvent,
  };
});
