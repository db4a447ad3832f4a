// Downloads from Hugging Face: a repository's GGUF choices (hub/files), download jobs started
// from them (downloads), followed by polling once a second while one is downloading (the jobs
// send no live events). A job that completes adds a catalog entry: the catalog is refetched.
import { defineStore } from "pinia";
import { computed, ref } from "vue";
import { api } from "../lib/api";
import { useModelsStore } from "./models";

export interface HubFile {
  path: string;
  size: number;
}

export interface HubChoice {
  label: string;
  size: number; // all its files, the projector included
  files: HubFile[];
  projector: HubFile | null;
  downloaded: string | null; // the catalog entry that has it already
}

export interface HubListing {
  repo: string;
  default: string;
  choices: HubChoice[];
}

export type JobStatus = "downloading" | "completed" | "failed" | "cancelled";

export interface DownloadJob {
  job_id: string;
  status: JobStatus;
  source?: string;
  repo: string;
  quantization: string;
  alias: string;
  model: string | null;
  files: { path: string; size: number; downloaded: number }[];
  total_size_bytes: number;
  downloaded_bytes: number;
  started_at: string;
  completed_at?: string;
  bytes_per_second?: number;
  estimated_completion?: string;
  error?: string;
}

export type Started = { status: "already_downloaded"; model: string } | DownloadJob;

export const POLL_MS = 1000;

export function isDownloading(job: DownloadJob): boolean {
  return job.status === "downloading";
}

// The server's list (newest first), kept from going back in time by answers that were on their
// way while this page learned newer things: a job started after the list was asked for is kept
// at the top until a list has it, and a job seen finished (cancelled here, say) stays finished.
export function mergeJobs(current: DownloadJob[], incoming: DownloadJob[], learnedSince: Set<string>): DownloadJob[] {
  const known = new Map(current.map((job) => [job.job_id, job]));
  const listed = new Set(incoming.map((job) => job.job_id));
  const newer = current.filter((job) => !listed.has(job.job_id) && learnedSince.has(job.job_id));
  const merged = incoming.map((job) => {
    const before = known.get(job.job_id);
    return before && !isDownloading(before) && isDownloading(job) ? before : job;
  });
  return [...newer, ...merged];
}

// One job's new state in the list: in place, or at the top if it is new.
export function upsertJob(jobs: DownloadJob[], job: DownloadJob): DownloadJob[] {
  const index = jobs.findIndex((j) => j.job_id === job.job_id);
  if (index < 0) return [job, ...jobs];
  const next = [...jobs];
  next[index] = job;
  return next;
}

// The jobs that were downloading in `before` and are completed in `after`.
export function newlyCompleted(before: DownloadJob[], after: DownloadJob[]): DownloadJob[] {
  const was = new Map(before.map((job) => [job.job_id, job.status]));
  return after.filter((job) => job.status === "completed" && was.get(job.job_id) === "downloading");
}

// Seconds left, from the server's estimate (or its speed); null while it cannot tell.
export function etaSeconds(job: DownloadJob, now: number): number | null {
  if (!isDownloading(job)) return null;
  if (job.estimated_completion) {
    const at = Date.parse(job.estimated_completion);
    if (!Number.isNaN(at)) return Math.max(0, (at - now) / 1000);
  }
  const speed = job.bytes_per_second ?? 0;
  if (speed > 0) return Math.max(0, job.total_size_bytes - job.downloaded_bytes) / speed;
  return null;
}

export function jobLabel(job: DownloadJob): string {
  return job.quantization ? `${job.repo}:${job.quantization}` : job.repo;
}

export function percentDone(job: DownloadJob): number {
  if (job.status === "completed") return 100;
  return job.total_size_bytes > 0 ? Math.min(100, (100 * job.downloaded_bytes) / job.total_size_bytes) : 0;
}

export const useDownloadsStore = defineStore("downloads", () => {
  const listing = ref<HubListing | null>(null);
  const jobs = ref<DownloadJob[]>([]);
  const finding = ref(false);
  const starting = ref<string | null>(null); // the choice being asked for
  const error = ref<string | null>(null);
  const notice = ref<string | null>(null);
  const active = computed(() => jobs.value.some(isDownloading));

  let watching = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let learned = new Set<string>(); // jobs this page learned of since the last list was asked for

  function setJobs(next: DownloadJob[]): void {
    const done = newlyCompleted(jobs.value, next);
    jobs.value = next;
    if (done.length) onCompleted(done);
  }
  function onCompleted(done: DownloadJob[]): void {
    useModelsStore().fetchCatalog().catch(() => {});
    const shown = listing.value;
    if (shown && done.some((job) => job.repo === shown.repo)) relist(shown.repo);
  }
  async function relist(repo: string): Promise<void> {
    try {
      const fresh = await api.get<HubListing>("/hub/files", { repo });
      if (listing.value?.repo === fresh.repo) listing.value = fresh;
    } catch {
      // the listing stays as it was; the job row says what was made
    }
  }
  function learn(job: DownloadJob): void {
    learned.add(job.job_id);
    setJobs(upsertJob(jobs.value, job));
    schedule();
  }

  async function find(repo: string): Promise<void> {
    error.value = notice.value = null;
    finding.value = true;
    try {
      listing.value = await api.get<HubListing>("/hub/files", { repo: repo.trim() });
    } catch (e) {
      listing.value = null;
      error.value = (e as Error).message;
    } finally {
      finding.value = false;
    }
  }

  async function start(repo: string, quantization: string, name?: string): Promise<Started | null> {
    error.value = notice.value = null;
    starting.value = quantization;
    const body: Record<string, string> = { model: repo, quantization };
    if (name?.trim()) body.name = name.trim();
    try {
      const answer = await api.post<Started>("/downloads", body);
      if (answer.status === "already_downloaded") {
        notice.value = `${repo}:${quantization} is already downloaded, as ${answer.model}.`;
      } else {
        learn(answer as DownloadJob);
      }
      return answer;
    } catch (e) {
      error.value = (e as Error).message;
      return null;
    } finally {
      starting.value = null;
    }
  }

  async function cancel(jobId: string): Promise<void> {
    error.value = null;
    try {
      learn(await api.del<DownloadJob>(`/downloads/${encodeURIComponent(jobId)}`));
    } catch (e) {
      error.value = (e as Error).message;
    }
  }

  async function load(): Promise<void> {
    learned = new Set();
    const asked = learned;
    try {
      const listed = await api.get<DownloadJob[]>("/downloads");
      setJobs(mergeJobs(jobs.value, listed, asked));
    } finally {
      schedule();
    }
  }

  // Polls while watched and a job is downloading; one timer at most.
  function schedule(): void {
    if (timer) clearTimeout(timer);
    timer = null;
    if (!watching || !active.value) return;
    timer = setTimeout(() => {
      timer = null;
      load().catch(() => {}); // a missed poll: the next one tries again
    }, POLL_MS);
  }
  async function watch(): Promise<void> {
    watching = true;
    try {
      await load();
    } catch (e) {
      error.value = (e as Error).message;
    }
  }
  function unwatch(): void {
    watching = false;
    schedule();
  }

  return { listing, jobs, finding, starting, error, notice, active, find, start, cancel, load, watch, unwatch };
});
