// Runtime limits and defaults, parameter metadata for the model form, API keys, model folders,
// backups and config import: everything the Settings page edits.
import { defineStore } from "pinia";
import { ref } from "vue";
import { api } from "../lib/api";
import type { LiveChannel } from "../lib/live";

export interface Limits {
  max_loaded_models: number;
  memory_budget: number | null;
  default_ttl: number;
  default_model: string | null;
  request_timeout: number;
}
export interface SettingsState {
  effective: Limits;
  overrides: Record<keyof Limits, unknown>;
  environment: Limits;
}
export interface ParamSpec {
  name: string;
  flag: string;
  kind: "int" | "float" | "bool" | "str" | "list" | "messages";
  help: string;
  choices: string[] | null;
  minimum: number | null;
  maximum?: number | null;
  multiline?: boolean;
}
export interface ApiKey {
  id: number;
  name: string;
  prefix: string;
  allowed_models: string[];
  is_admin: boolean;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
  key?: string;
}
export interface Folder {
  id: number;
  path: string;
  enabled: boolean;
  configured: boolean;
  last_scanned_at: string | null;
  last_scan_error: string;
  model_count: number;
}
export interface Backup {
  name: string;
  size: number;
  created_at: string;
  reason: string;
}

export const useSettingsStore = defineStore("settings", () => {
  const state = ref<SettingsState | null>(null);
  const params = ref<{ parameters: ParamSpec[]; sampling: ParamSpec[] } | null>(null);
  const keys = ref<ApiKey[]>([]);
  const folders = ref<Folder[]>([]);
  const backups = ref<Backup[]>([]);

  async function fetchSettings() {
    state.value = await api.get<SettingsState>("/settings");
  }
  async function saveSettings(changes: Record<string, unknown>) {
    state.value = await api.patch<SettingsState>("/settings", changes);
  }
  async function fetchParams() {
    if (!params.value) params.value = await api.get("/parameters");
    return params.value!;
  }
  async function fetchKeys() {
    keys.value = await api.get<ApiKey[]>("/keys");
  }
  async function createKey(name: string, allowed_models: string[], is_admin: boolean): Promise<ApiKey> {
    const key = await api.post<ApiKey>("/keys", { name, allowed_models, is_admin });
    await fetchKeys();
    return key;
  }
  async function revokeKey(id: number) {
    await api.del(`/keys/${id}`);
    await fetchKeys();
  }
  async function fetchFolders() {
    folders.value = await api.get<Folder[]>("/folders");
  }
  async function addFolder(path: string) {
    await api.post("/folders", { path });
    await fetchFolders();
  }
  async function removeFolder(id: number) {
    await api.del(`/folders/${id}`);
    await fetchFolders();
  }
  async function fetchBackups() {
    backups.value = await api.get<Backup[]>("/backups");
  }
  async function createBackup() {
    await api.post("/backups");
    await fetchBackups();
  }
  async function restoreBackup(name: string) {
    const result = await api.post<Record<string, unknown>>(`/backups/${encodeURIComponent(name)}/restore`);
    await fetchBackups();
    return result;
  }
  async function importConfigs(configs: unknown[], dry_run = false) {
    return api.post<Record<string, unknown>>("/import", { configs, dry_run });
  }
  async function refresh() {
    await Promise.all([fetchSettings(), fetchKeys(), fetchFolders(), fetchBackups()]);
  }
  function bind(channel: LiveChannel) {
    channel.on("settings.changed", () => fetchSettings().catch(() => {}));
  }

  return {
    state, params, keys, folders, backups,
    fetchSettings, saveSettings, fetchParams, fetchKeys, createKey, revokeKey, fetchFolders, addFolder,
    removeFolder, fetchBackups, createBackup, restoreBackup, importConfigs, refresh, bind,
  };
});
