// The admin listener with `workers`: the primary listens on the admin port, and each scrape, status page or reload
// asks every worker over the cluster's IPC channel and merges the answers. Without this, every worker listened on
// the shared admin port and a request reached one of them: a scrape saw one worker's counters, a reload reached one
// worker. Workers keep their own registry and status (ProxyRuntime.adminListener: false) and answer here.
import type { Worker } from 'node:cluster'
import { AggregatorRegistry, Gauge, type MetricObjectWithValues, type MetricValue } from 'prom-client'
import { type AdminServer, type StatusJson, startAdmin } from './admin.js'
import type { ProxyHandle } from './index.js'
import type { ResolvedProxyOptions } from './options.js'
import type { ReloadResult } from './reload.js'

/** How long the primary waits for a worker's answer; a worker that does not answer in time is left out. */
const WORKER_ANSWER_MS = 5_000

type Ask = 'metrics' | 'status' | 'reload'
type Metrics = Array<MetricObjectWithValues<MetricValue<string>>>
type AdminQuestion = { type: 'autotls:admin'; id: number; ask: Ask }
type AdminAnswer = {
  type: 'autotls:admin-answer'
  id: number
  metrics?: Metrics
  status?: StatusJson
  reload?: ReloadResult
  error?: string
}

interface WorkerRef {
  slot: number
  worker: Worker
}

/** A worker's side: answers the primary's questions from its own proxy. */
export function answerAdminQuestions(proxy: ProxyHandle): void {
  process.on('message', (message: AdminQuestion) => {
    if (message?.type !== 'autotls:admin') return
    const reply = (answer: Omit<AdminAnswer, 'type' | 'id'>) =>
      process.send?.({ type: 'autotls:admin-answer', id: message.id, ...answer } satisfies AdminAnswer)
    const answer = async (): Promise<Omit<AdminAnswer, 'type' | 'id'>> => {
      if (message.ask === 'status') return { status: proxy.status() }
      if (message.ask === 'reload') return { reload: await proxy.reloadFromSource() }
      return { metrics: (await proxy.metrics?.registry.getMetricsAsJSON()) ?? [] }
    }
    answer().then(reply, (err: Error) => reply({ error: err.message }))
  })
}

/** The primary's side: asks every worker and collects the answers (undefined for a worker that did not answer). */
function asker() {
  let next = 0
  const pending = new Map<number, (answer: AdminAnswer) => void>()
  const listen = (worker: Worker) => {
    worker.on('message', (message: AdminAnswer) => {
      if (message?.type === 'autotls:admin-answer') pending.get(message.id)?.(message)
    })
  }
  const ask = (worker: Worker, what: Ask): Promise<AdminAnswer | undefined> =>
    new Promise((resolve) => {
      const id = ++next
      const done = (answer: AdminAnswer | undefined) => {
        clearTimeout(timer)
        worker.off('exit', gone)
        pending.delete(id)
        resolve(answer)
      }
      // A worker that dies after the question went out answers nothing: do not wait for the time limit.
      const gone = () => done(undefined)
      const timer = setTimeout(gone, WORKER_ANSWER_MS)
      worker.once('exit', gone)
      pending.set(id, done)
      if (!worker.isConnected()) return done(undefined)
      worker.send({ type: 'autotls:admin', id, ask: what } satisfies AdminQuestion, undefined, (err) => {
        if (err) done(undefined)
      })
    })
  return { listen, ask }
}

function mergeStatus(answers: Array<{ ref: WorkerRef; status: StatusJson | undefined }>, uptime: number): StatusJson {
  const got = answers.flatMap((a) => (a.status ? [a.status] : []))
  const first = got[0]
  const routes = (first?.routes ?? []).map((route) => ({
    route: route.route,
    upstreams: route.upstreams.map((u) => {
      const seen = got.flatMap(
        (s) => s.routes.find((r) => r.route === route.route)?.upstreams.find((x) => x.url === u.url) ?? [],
      )
      const failing = seen.find((x) => !x.healthy)
      const lastError = (failing ?? seen.find((x) => x.lastError))?.lastError
      return {
        url: u.url,
        healthy: failing === undefined,
        checked: seen.some((x) => x.checked),
        ...(lastError ? { lastError } : {}),
      }
    }),
  }))
  return {
    state: got.some((s) => s.state === 'draining') ? 'draining' : 'running',
    uptimeSeconds: uptime,
    generation: got.length === 0 ? 0 : Math.min(...got.map((s) => s.generation)),
    certificates: first?.certificates ?? [],
    routes,
    workers: answers.map(({ ref, status }) => ({
      worker: ref.slot,
      pid: ref.worker.process.pid,
      answered: status !== undefined,
      ...(status ? { state: status.state, generation: status.generation } : {}),
    })),
  }
}

function mergeReloads(answers: Array<{ ref: WorkerRef; result: ReloadResult | undefined }>): ReloadResult & {
  workers: Array<{ worker: number; pid: number | undefined; applied: boolean; generation?: number; answered: boolean }>
} {
  const got = answers.flatMap((a) => (a.result ? [a.result] : []))
  const union = (pick: (r: ReloadResult) => string[]) => [...new Set(got.flatMap(pick))]
  const missing = answers.filter((a) => a.result === undefined).map((a) => `worker ${a.ref.slot} did not answer`)
  return {
    applied: got.length > 0 && missing.length === 0 && got.every((r) => r.applied),
    generation: got.length === 0 ? 0 : Math.min(...got.map((r) => r.generation)),
    errors: [...union((r) => r.errors), ...missing],
    ignored: union((r) => r.ignored),
    routesAdded: union((r) => r.routesAdded),
    routesRemoved: union((r) => r.routesRemoved),
    workers: answers.map(({ ref, result }) => ({
      worker: ref.slot,
      pid: ref.worker.process.pid,
      answered: result !== undefined,
      applied: result?.applied ?? false,
      ...(result ? { generation: result.generation } : {}),
    })),
  }
}

export interface ClusterAdminDeps {
  options: NonNullable<ResolvedProxyOptions['admin']>
  /** The primary's log (one JSON line, as workers.ts writes them). */
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void
  /** The workers serving now (forked and ready). */
  workers: () => WorkerRef[]
  /** How many workers the configuration asks for. */
  configured: number
}

/** Starts the primary's admin listener. `listen(worker)` must be called for every worker forked. */
export async function startClusterAdmin(
  deps: ClusterAdminDeps,
): Promise<{ server: AdminServer; listen: (worker: Worker) => void }> {
  const { listen, ask } = asker()
  const started = Date.now()
  const everyWorker = <T>(what: Ask, pick: (a: AdminAnswer | undefined) => T) =>
    Promise.all(deps.workers().map(async (ref) => ({ ref, value: pick(await ask(ref.worker, what)) })))
  const server = await startAdmin({
    options: deps.options,
    log: { level: 'info', base: { pid: process.pid, role: 'primary', listener: 'admin' } },
    metrics: {
      contentType: AggregatorRegistry.PROMETHEUS_CONTENT_TYPE,
      async text() {
        const answers = await everyWorker('metrics', (a) => a?.metrics)
        const merged = AggregatorRegistry.aggregate(answers.flatMap((a) => (a.value ? [a.value] : [])))
        const workers = new Gauge({
          name: 'autotls_workers',
          help: 'Workers of this primary: configured, serving (forked and ready), answered (this scrape)',
          labelNames: ['state'],
          registers: [merged],
        })
        workers.set({ state: 'configured' }, deps.configured)
        workers.set({ state: 'serving' }, answers.length)
        workers.set({ state: 'answered' }, answers.filter((a) => a.value !== undefined).length)
        return merged.metrics()
      },
    },
    status: async () => {
      const answers = await everyWorker('status', (a) => a?.status)
      return mergeStatus(
        answers.map((a) => ({ ref: a.ref, status: a.value })),
        Math.round((Date.now() - started) / 1000),
      )
    },
    reload: async () => {
      const answers = await everyWorker('reload', (a) => a?.reload)
      const result = mergeReloads(answers.map((a) => ({ ref: a.ref, result: a.value })))
      deps.log('info', 'reload of every worker (admin)', { applied: result.applied, workers: result.workers })
      return result
    },
  })
  return { server, listen }
}
