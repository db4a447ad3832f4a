import { defineStore } from "pinia";
import { ref } from "vue";
import { api } from "../lib/api";

export interface Me {
  authenticated: boolean;
  username: string | null;
  is_staff: boolean;
  needs_setup: boolean;
  csrf_token: string;
}

export const useAuthStore = defineStore("auth", () => {
  const me = ref<Me | null>(null);

  async function refresh(): Promise<Me> {
    me.value = await api.get<Me>("/auth/me");
    return me.value;
  }
  async function login(username: string, password: string): Promise<void> {
    me.value = await api.post<Me>("/auth/login", { username, password });
  }
  async function setup(username: string, password: string, email = ""): Promise<void> {
    me.value = await api.post<Me>("/auth/setup", { username, password, email });
  }
  async function logout(): Promise<void> {
    me.value = await api.post<Me>("/auth/logout");
  }
  function expire(): void {
    if (me.value) me.value = { ...me.value, authenticated: false, is_staff: false };
  }
  return { me, refresh, login, setup, logout, expire };
});
