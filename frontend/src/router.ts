import { createRouter, createWebHistory } from "vue-router";

export const router = createRouter({
  history: createWebHistory("/"),
  routes: [
    { path: "/", redirect: "/models" },
    { path: "/models", component: () => import("./views/ModelsView.vue"), meta: { title: "Models" } },
    { path: "/models/:name", component: () => import("./views/ModelDetailView.vue"), props: true, meta: { title: "Model" } },
    { path: "/activity", component: () => import("./views/ActivityView.vue"), meta: { title: "Activity" } },
    { path: "/playground", component: () => import("./views/PlaygroundView.vue"), meta: { title: "Playground" } },
    { path: "/system", component: () => import("./views/SystemView.vue"), meta: { title: "System" } },
    { path: "/settings", component: () => import("./views/SettingsView.vue"), meta: { title: "Settings" } },
    { path: "/:rest(.*)*", redirect: "/models" },
  ],
});

router.afterEach((to) => {
  document.title = `${(to.meta.title as string) || "Dashboard"} · llamaproxy`;
});
