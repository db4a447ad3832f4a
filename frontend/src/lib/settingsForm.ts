// The model settings form: what to PATCH (only what changed; removed parameters as null) and
// whether the change needs the runner restarted.
import type { RunnerSettings } from "../stores/models";

export interface FormState {
  runtime: string;
  server_binary: string;
  custom_command: string;
  parameters: Record<string, unknown>;
  sampling: Record<string, unknown>;
  extra_args: string;
  ttl_seconds: string;
  pinned: boolean;
  group: string;
  exclusive: boolean;
  preload: boolean;
  aliases: string;
}

export const RESTART_FIELDS = ["runtime", "server_binary", "custom_command", "parameters", "extra_args"];

export function formFrom(settings: RunnerSettings | null, aliases: string[]): FormState {
  const s = settings ?? ({} as Partial<RunnerSettings>);
  return {
    runtime: s.runtime ?? "llama-server",
    server_binary: s.server_binary ?? "",
    custom_command: s.custom_command ?? "",
    parameters: { ...(s.parameters ?? {}) },
    sampling: { ...(s.sampling ?? {}) },
    extra_args: (s.extra_args ?? []).join(" "),
    ttl_seconds: s.ttl_seconds === null || s.ttl_seconds === undefined ? "" : String(s.ttl_seconds),
    pinned: !!s.pinned,
    group: s.group ?? "",
    exclusive: !!s.exclusive,
    preload: !!s.preload,
    aliases: aliases.join(", "),
  };
}

// Lists (stop sequences) are compared by what they hold.
function same(a: unknown, b: unknown): boolean {
  return a === b || (Array.isArray(a) && Array.isArray(b) && JSON.stringify(a) === JSON.stringify(b));
}

function mapChanges(before: Record<string, unknown>, after: Record<string, unknown>): Record<string, unknown> | null {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(after)) {
    if (v === null || v === undefined || v === "") continue;
    if (!same(before[k], v)) out[k] = v;
  }
  for (const k of Object.keys(before)) {
    const v = after[k];
    if (v === null || v === undefined || v === "") out[k] = null;
  }
  return Object.keys(out).length ? out : null;
}

export function splitArgs(text: string): string[] {
  return text.match(/"[^"]*"|'[^']*'|\S+/g)?.map((a) => a.replace(/^(["'])(.*)\1$/, "$2")) ?? [];
}

export function diffForm(before: FormState, after: FormState): Record<string, unknown> {
  const changes: Record<string, unknown> = {};
  for (const key of ["runtime", "server_binary", "custom_command", "group"] as const) {
    if (before[key] !== after[key]) changes[key] = after[key];
  }
  for (const key of ["pinned", "exclusive", "preload"] as const) {
    if (before[key] !== after[key]) changes[key] = after[key];
  }
  if (before.ttl_seconds !== after.ttl_seconds) {
    const t = after.ttl_seconds.trim();
    changes.ttl_seconds = t === "" ? null : /^\d+$/.test(t) ? Number(t) : t;
  }
  if (before.extra_args !== after.extra_args) changes.extra_args = splitArgs(after.extra_args);
  if (before.aliases !== after.aliases) {
    changes.aliases = after.aliases.split(",").map((a) => a.trim()).filter(Boolean);
  }
  const params = mapChanges(before.parameters, after.parameters);
  if (params) changes.parameters = params;
  const sampling = mapChanges(before.sampling, after.sampling);
  if (sampling) changes.sampling = sampling;
  return changes;
}

export function needsRestart(changes: Record<string, unknown>): boolean {
  return RESTART_FIELDS.some((f) => f in changes);
}

// A server error's field ("parameters.ctx_size", "ttl_seconds", "parameters") → the form's key.
export function errorKey(field: string | null | undefined): string {
  if (!field) return "";
  const parts = field.split(".");
  if ((parts[0] === "parameters" || parts[0] === "sampling") && parts.length > 1) return `${parts[0]}.${parts[1]}`;
  return parts[0];
}
