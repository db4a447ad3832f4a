// A ticking "now" for uptimes and countdowns (display only: no data is fetched by it).
import { onBeforeUnmount, onMounted, ref } from "vue";

export function useNow(intervalMs = 1000) {
  const now = ref(Date.now());
  let timer: ReturnType<typeof setInterval> | null = null;
  onMounted(() => (timer = setInterval(() => (now.value = Date.now()), intervalMs)));
  onBeforeUnmount(() => timer && clearInterval(timer));
  return now;
}
