import { defineStore } from "pinia";
import { ref } from "vue";
import { api } from "../lib/api";
import { debounce } from "../lib/debounce";
import type { LiveChannel } from "../lib/live";

export const useSystemStore = defineStore("system", () => {
  const info = ref<Record<string, any> | null>(null);
  const error = ref<string | null>(null);
  const fetchedAt = ref<Date | null>(null);

  async function refresh() {
    try {
      info.value = await api.get("/system");
      fetchedAt.value = new Date();
      error.value = null;
    } catch (e) {
      error.value = (e as Error).message;
    }
  }
  const refetch = debounce(() => {
    if (info.value) refresh();
  }, 800);
  function bind(channel: LiveChannel) {
    channel.on("runner.state", () => refetch());
  }
  return { info, error, fetchedAt, refresh, bind };
});
