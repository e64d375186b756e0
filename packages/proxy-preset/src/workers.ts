// Every core of one machine (option `workers`, honoured by `autotls run`): node:cluster. The primary only supervises:
// it forks the workers, each of which runs the whole proxy from the same configuration; they share the listening
// ports (Node's primary accepts and hands connections out round-robin on Linux) and one store (the file store's
// cross-process lock, or Redis), so one worker orders each name and every worker serves it. SIGINT/SIGTERM to the
// primary drains every worker through its graceful close and exits 0; SIGHUP reloads every worker; a worker that
// crashes is forked again after a backoff, and the primary gives up (exit 1) when workers keep crashing at start.
import cluster, { type Worker } from 'node:cluster'
import type { startClusterAdmin } from './cluster-admin.js'
import { ERR_WORKER_CRASH_LOOP, ERR_WORKER_START } from './errors.js'
import type { ProxyHandle } from './index.js'
import type { ProxyOptions, ResolvedProxyOptions } from './options.js'

/** First restart delay of a crashed worker; doubled per crash in a row of the same worker, up to RESTART_MAX_MS. */
const RESTART_MIN_MS = 250
const RESTART_MAX_MS = 30_000
/** A worker that dies sooner than this after it was forked counts towards the crash loop cap. */
const QUICK_CRASH_MS = 30_000
/** Quick crashes in a row (of any worker, none lived longer in between) before the primary gives up. */
const MAX_QUICK_CRASHES = 5
/** Beyond the proxy's own grace period, what a worker gets to exit before it is killed. */
const EXIT_SLACK_MS = 5_000

type Message = { type: 'autotls:ready' } | { type: 'autotls:shutdown' } | { type: 'autotls:reload' }

export interface PrimaryOptions {
  workers: number
  /** Signals that drain the workers (the proxy's shutdown.signals). */
  signals: readonly NodeJS.Signals[]
  /** The proxy's shutdown.graceMs: how long a worker's graceful close may take. */
  graceMs: number
  /** A signal forwarded to every worker as a reload (the CLI: SIGHUP). */
  reloadSignal?: NodeJS.Signals
  /**
   * The admin listener (option `admin`): the primary listens and asks every worker (cluster-admin.ts); the workers
   * must then be started with ProxyRuntime.adminListener false.
   */
  admin?: NonNullable<ResolvedProxyOptions['admin']>
}

/** One JSON line in the proxy's log format (pino's: level, time, pid, msg), from the primary. */
function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  const levels = { info: 30, warn: 40, error: 50 }
  process.stdout.write(
    `${JSON.stringify({ level: levels[level], time: Date.now(), pid: process.pid, role: 'primary', ...fields, msg })}\n`,
  )
}

/**
 * The primary: forks and supervises `workers` workers until a shutdown signal (or a start failure). Resolves with
 * the exit code: 0 when every worker closed gracefully after a signal, 1 otherwise.
 */
export async function runPrimary(options: PrimaryOptions): Promise<number> {
  const started = new Map<Worker, { slot: number; at: number; ready: boolean }>()
  let admin: Awaited<ReturnType<typeof primaryAdmin>>
  try {
    admin = await primaryAdmin(options, started)
  } catch (err) {
    log('error', (err as Error).message, { code: (err as { code?: string }).code })
    return 1
  }
  const crashesInRow = new Map<number, number>()
  let quickCrashes = 0
  let everReady = false
  let stopping = false
  let exitCode = 0
  let forceTimer: NodeJS.Timeout | undefined
  const restarts = new Set<NodeJS.Timeout>()

  return new Promise<number>((resolve) => {
    const fork = (slot: number) => {
      const worker = cluster.fork({ AUTOTLS_WORKER: String(slot) })
      started.set(worker, { slot, at: Date.now(), ready: false })
      admin?.listen(worker)
      worker.on('message', (message: Message) => {
        if (message?.type !== 'autotls:ready') return
        const entry = started.get(worker)
        if (entry) entry.ready = true
        everReady = true
        log('info', 'worker serving', { worker: slot, workerPid: worker.process.pid })
        if (stopping) send(worker, { type: 'autotls:shutdown' })
      })
    }

    const send = (worker: Worker, message: Message) => {
      if (worker.isConnected()) worker.send(message, undefined, () => {})
    }

    const stop = (code: number) => {
      if (code !== 0) exitCode = code
      if (stopping) return
      stopping = true
      for (const timer of restarts) clearTimeout(timer)
      restarts.clear()
      for (const worker of started.keys()) send(worker, { type: 'autotls:shutdown' })
      forceTimer = setTimeout(() => {
        log('warn', 'workers still running after the grace period: killing them', { workers: started.size })
        for (const worker of started.keys()) worker.process.kill('SIGKILL')
        exitCode = 1
      }, options.graceMs + EXIT_SLACK_MS)
      forceTimer.unref()
      if (started.size === 0) finish()
    }

    const finish = () => {
      void admin?.server.close()
      clearTimeout(forceTimer)
      for (const signal of options.signals) process.off(signal, onSignal)
      if (options.reloadSignal) process.off(options.reloadSignal, onReload)
      cluster.off('exit', onExit)
      log('info', 'all workers stopped', { exitCode })
      resolve(exitCode)
    }

    const onExit = (worker: Worker, code: number | null, signal: NodeJS.Signals | null) => {
      const entry = started.get(worker)
      if (entry === undefined) return
      started.delete(worker)
      const lived = Date.now() - entry.at
      const fields = { worker: entry.slot, workerPid: worker.process.pid, code, signal, livedMs: lived }
      if (stopping) {
        if (code !== 0) exitCode = 1
        log('info', 'worker stopped', fields)
        if (started.size === 0) finish()
        return
      }
      if (!everReady) {
        // Nothing served yet: a configuration the primary could not check (a port in use, a certificate file that
        // cannot be read) fails every worker alike; report it as a failed start, as one process would.
        log('error', new ERR_WORKER_START(`worker ${entry.slot}, code ${code}, signal ${signal}`).message, fields)
        stop(1)
        return
      }
      quickCrashes = lived < QUICK_CRASH_MS ? quickCrashes + 1 : 0
      if (quickCrashes >= MAX_QUICK_CRASHES) {
        log('error', new ERR_WORKER_CRASH_LOOP(quickCrashes, QUICK_CRASH_MS).message, fields)
        stop(1)
        return
      }
      const inRow = lived < QUICK_CRASH_MS ? (crashesInRow.get(entry.slot) ?? 0) + 1 : 1
      crashesInRow.set(entry.slot, inRow)
      const delay = Math.min(RESTART_MAX_MS, RESTART_MIN_MS * 2 ** (inRow - 1))
      log('warn', 'worker died: forking a new one', { ...fields, restartInMs: delay })
      const timer = setTimeout(() => {
        restarts.delete(timer)
        if (!stopping) fork(entry.slot)
      }, delay)
      restarts.add(timer)
    }

    let signalled = false
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        log('warn', 'second signal during shutdown: killing the workers now', { signal })
        for (const worker of started.keys()) worker.process.kill('SIGKILL')
        process.exit(130)
      }
      signalled = true
      log('info', 'shutting down the workers gracefully', { signal, workers: started.size })
      stop(0)
    }
    const onReload = () => {
      log('info', 'reloading every worker', { workers: started.size })
      for (const worker of started.keys()) send(worker, { type: 'autotls:reload' })
    }

    cluster.on('exit', onExit)
    for (const signal of options.signals) process.on(signal, onSignal)
    if (options.reloadSignal) process.on(options.reloadSignal, onReload)
    log('info', 'starting workers', { workers: options.workers })
    for (let slot = 1; slot <= options.workers; slot++) fork(slot)
  })
}

/**
 * The admin listener of the primary (listening before any worker is forked, so a port in use fails the start):
 * each scrape, status or reload asks the workers that serve at that moment.
 */
async function primaryAdmin(
  options: PrimaryOptions,
  started: Map<Worker, { slot: number; ready: boolean }>,
): Promise<Awaited<ReturnType<typeof startClusterAdmin>> | undefined> {
  if (options.admin === undefined) return undefined
  const { startClusterAdmin } = await import('./cluster-admin.js')
  const admin = await startClusterAdmin({
    options: options.admin,
    log,
    configured: options.workers,
    workers: () => [...started].flatMap(([worker, e]) => (e.ready ? [{ slot: e.slot, worker }] : [])),
  })
  await admin.server.listen()
  const address = admin.server.address()
  log('info', 'admin listening', { host: address?.address, port: address?.port })
  return admin
}

/** True in a process forked by runPrimary(). */
export function isWorker(): boolean {
  return cluster.isWorker && process.env['AUTOTLS_WORKER'] !== undefined
}

/**
 * A worker's side: tells the primary the proxy serves, and follows its messages (drain, reload). When the primary is
 * gone (its IPC channel closed), the worker drains and exits too, so no worker outlives its primary.
 */
export function serveAsWorker(proxy: ProxyHandle): void {
  const drain = () => {
    proxy.close().then(
      () => process.exit(0),
      () => process.exit(1),
    )
  }
  process.on('message', (message: Message) => {
    if (message?.type === 'autotls:shutdown') drain()
    else if (message?.type === 'autotls:reload') void proxy.reloadFromSource()
  })
  process.once('disconnect', drain)
  const ready = () => process.send?.({ type: 'autotls:ready' } satisfies Message)
  // With `admin`, the primary asks ready workers for their metrics and status (cluster-admin.ts).
  if (proxy.metrics === undefined) ready()
  else
    void import('./cluster-admin.js').then((m) => {
      m.answerAdminQuestions(proxy)
      ready()
    })
}

/**
 * With several workers, a client's next connection may reach any of them: their TLS session-ticket keys are shared
 * through the store (unless the configuration says otherwise), so it resumes its session there.
 */
export function withSharedTickets(options: ProxyOptions): ProxyOptions {
  if (options.acme === undefined || options.acme.sessionTickets !== undefined) return options
  return { ...options, acme: { ...options.acme, sessionTickets: { shared: true } } }
}
