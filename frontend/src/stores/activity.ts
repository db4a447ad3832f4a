// Usage history: the latest rows and totals, fetched on load and after each reconnection, with
// each finished request (request.done) added live as it happens.
import { defineStore } from "pinia";
import { reactive, ref } from "vue";
import { api } from "../lib/api";
import { debounce } from "../lib/debounce";
import { toCsv } from "../lib/format";
import type { LiveChannel, LiveEvent } from "../lib/live";

export interface UsageRow {
  id?: number;
  created_at: string;
  face: string;
  endpoint: string;
  model: string;
  client_address?: string;
  api_key_id: number | null;
  api_key_name?: string;
  status: number;
  stream: boolean;
  prompt_tokens: number | null;
  completion_tokens: number | null;
  cached_tokens?: number | null;
  ttft_ms: number | null;
  prefill_tps: number | null;
  decode_tps: number | null;
  duration_ms: number;
  load_ms?: number | null;
  error: string;
  live?: boolean;
}

export interface Totals {
  period?: string | null;
  model?: string | null;
  face?: string | null;
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  avg_ttft_ms: number | null;
  avg_decode_tps: number | null;
}

export interface Filters {
  model: string;
  face: string;
  key: string;
  status: string;
  hours: number;
}

export const CSV_COLUMNS = [
  "created_at", "face", "endpoint", "model", "api_key_name", "status", "stream", "prompt_tokens",
  "completion_tokens", "cached_tokens", "ttft_ms", "prefill_tps", "decode_tps", "duration_ms", "load_ms", "error",
];

export function matches(row: UsageRow, filters: Filters): boolean {
  if (filters.model && row.model !== filters.model) return false;
  if (filters.face && row.face !== filters.face) return false;
  if (filters.key && String(row.api_key_id ?? "") !== filters.key) return false;
  if (filters.status && String(row.status) !== filters.status) return false;
  return true;
}

const PAGE = 200;

export const useActivityStore = defineStore("activity", () => {
  const rows = ref<UsageRow[]>([]);
  const count = ref(0);
  const hourly = ref<Totals[]>([]);
  const byModel = ref<Totals[]>([]);
  const byFace = ref<Totals[]>([]);
  const filters = reactive<Filters>({ model: "", face: "", key: "", status: "", hours: 24 });
  const keyNames = ref<Record<number, string>>({});
  const error = ref<string | null>(null);

  function query(extra: Record<string, unknown> = {}) {
    const since = new Date(Date.now() - filters.hours * 3600 * 1000).toISOString();
    return {
      model: filters.model, face: filters.face, key: filters.key, status: filters.status, since, ...extra,
    } as Record<string, string | number>;
  }

  // Rows announced live while a fetch is under way: the fetch may have been answered before they
  // were stored, so they are kept (by id) rather than overwritten by the fetched page.
  let liveDuringFetch: UsageRow[] | null = null;

  async function fetchRows(): Promise<void> {
    liveDuringFetch = [];
    try {
      const page = await api.get<{ count: number; results: UsageRow[] }>("/usage", query({ limit: PAGE }));
      const fetchedIds = new Set(page.results.map((r) => r.id));
      const missed = liveDuringFetch.filter((r) => r.id === undefined || !fetchedIds.has(r.id));
      rows.value = [...missed, ...page.results].slice(0, PAGE);
      count.value = page.count + missed.length;
    } finally {
      liveDuringFetch = null;
    }
  }
  async function fetchTotals(): Promise<void> {
    const [h, m, f] = await Promise.all([
      api.get<Totals[]>("/usage/totals", query({ by: "hour" })),
      api.get<Totals[]>("/usage/totals", query({ by: "model" })),
      api.get<Totals[]>("/usage/totals", query({ by: "face" })),
    ]);
    hourly.value = h;
    byModel.value = m;
    byFace.value = f;
  }
  async function fetchKeys(): Promise<void> {
    const keys = await api.get<{ id: number; name: string }[]>("/keys");
    keyNames.value = Object.fromEntries(keys.map((k) => [k.id, k.name]));
  }
  async function refresh(): Promise<void> {
    try {
      await Promise.all([fetchRows(), fetchTotals(), fetchKeys()]);
      error.value = null;
    } catch (e) {
      error.value = (e as Error).message;
    }
  }
  const refetchTotals = debounce(() => fetchTotals().catch(() => {}), 1500);

  function onRequestDone(event: LiveEvent): void {
    const { type: _, ...fields } = event;
    const row = { ...(fields as unknown as UsageRow), live: true };
    if (row.api_key_id !== null && row.api_key_id !== undefined) row.api_key_name = keyNames.value[row.api_key_id] ?? "";
    if (!matches(row, filters)) return;
    if (row.id !== undefined && rows.value.some((r) => r.id === row.id)) return;
    liveDuringFetch?.push(row);
    rows.value = [row, ...rows.value].slice(0, PAGE);
    count.value += 1;
    refetchTotals();
  }

  function bind(channel: LiveChannel): void {
    channel.on("request.done", onRequestDone);
    channel.onOpen(() => refresh());
  }

  async function exportCsv(): Promise<string> {
    const page = await api.get<{ count: number; results: UsageRow[] }>("/usage", query({ limit: 5000 }));
    return toCsv(CSV_COLUMNS, page.results as unknown as Record<string, unknown>[]);
  }

  return { rows, count, hourly, byModel, byFace, filters, keyNames, error, refresh, fetchRows, fetchTotals, onRequestDone, bind, exportCsv };
});
