// Applying a reload to the running proxy (which options a reload may change is reload.ts): new certificate files are
// checked on a scratch resolver first, new ACME names are ordered, the next routing generation is built beside the
// running one and swapped in, and the replaced one closes once its last requests are done. Reloads run one at a
// time; a refused one leaves the running state as it was.
import { CertResolver, type FastifyAcme } from '@autotls/fastify-acme'
import type { FastifyBaseLogger, FastifyInstance } from 'fastify'
import { type CertificatePlan, planCertificates } from './certificates.js'
import { atOption } from './errors.js'
import type { Generation } from './generation.js'
import type { ManualCertificates } from './manual-certs.js'
import type { ProxyMetrics } from './metrics.js'
import { type ProxyOptions, type ResolvedProxyOptions, resolveProxyOptions } from './options.js'
import { type ReloadResult, reloadable, restartOnlyChanges } from './reload.js'

/** How long a replaced generation keeps its upstream pools open for requests that entered it just before a swap. */
const RETIRE_AFTER_MS = 2_000

/** The running proxy's state: set while createProxy() builds it, then replaced only by an applied reload (here). */
export interface LiveState {
  /** The running configuration. */
  active: ResolvedProxyOptions
  /** The routing generation serving requests (undefined only while the proxy is being built). */
  current: Generation | undefined
  /** The manual certificate files, when any are configured. */
  certificates: ManualCertificates | undefined
  /** Which names are served from where. */
  plan: CertificatePlan
}

export interface ReloaderDeps {
  live: LiveState
  /** Names fastify-acme manages now; a reload adds and removes names in place. */
  acmeNames: Set<string>
  /** Replaced generations, until they have closed; a reload adds the one it replaces. */
  retiring: Map<Generation, Promise<void>>
  app: FastifyInstance
  /** The SNI resolver the listener serves from. */
  resolver: CertResolver
  acme: FastifyAcme | undefined
  metrics: ProxyMetrics | undefined
  log: FastifyBaseLogger
  draining: () => boolean
  /** ProxyRuntime.reloadSource: where reloadFromSource() reads the next configuration. */
  reloadSource: (() => Promise<{ options: ProxyOptions; describeError?: (err: unknown) => string }>) | undefined
  /** Loads (and validates) the certificate files of `opts` into `into`. */
  loadCertificates: (opts: ResolvedProxyOptions, into: CertResolver) => Promise<ManualCertificates | undefined>
  /** Builds the next routing generation. */
  buildNext: (opts: ResolvedProxyOptions) => Promise<Generation>
  /** Listens to the listener's upgrades while the current generation proxies websockets. */
  syncUpgrade: () => void
}

export interface Reloader {
  /** Applies `input` after the reloads before it; `describe` words a refusal (the CLI adds file lines). */
  reload(input: ProxyOptions, describe?: (err: unknown) => string): Promise<ReloadResult>
  /** Reloads from `reloadSource`. */
  reloadFromSource(): Promise<ReloadResult>
}

export function createReloader(deps: ReloaderDeps): Reloader {
  const { live, acmeNames, retiring, app, resolver, acme, metrics, log, loadCertificates, buildNext, syncUpgrade } =
    deps
  const applyReload = async (input: ProxyOptions): Promise<ReloadResult> => {
    const next = resolveProxyOptions(input)
    const ignored = restartOnlyChanges(live.active, next)
    const merged = reloadable(live.active, next)
    const filesChanged =
      JSON.stringify([merged.certificates, merged.defaultCertificate]) !==
      JSON.stringify([live.active.certificates, live.active.defaultCertificate])
    // New certificate files are validated on a scratch resolver before anything served changes.
    let coverage: { hosts(): string[] } = live.certificates ?? { hosts: () => [] }
    if (filesChanged) {
      const scratch = await loadCertificates(merged, new CertResolver())
      coverage = scratch ?? { hosts: () => [] }
      await scratch?.close()
    }
    const nextPlan = planCertificates({ ...merged, acme: live.active.acme }, coverage)
    const added = nextPlan.acmeNames.filter((n) => !acmeNames.has(n))
    const dropped = live.plan.acmeNames.filter((n) => !nextPlan.acmeNames.includes(n))
    if (added.length > 0 && acme === undefined) {
      // The plugin was not registered at start (no ACME name then): a running proxy cannot add it.
      const index = merged.routes.findIndex((r) => r.host === added[0])
      throw atOption(
        new Error(
          `${added.join(', ')} would need a new ACME certificate, which a running proxy cannot order yet: restart to add it, or serve it from a certificate file`,
        ),
        ['routes', Math.max(0, index), 'host'],
      )
    }
    // New names are ordered now (their routes answer once the certificate is served); stored ones serve at once.
    if (added.length > 0) await acme?.add(added)
    const gen = await buildNext(merged)
    if (filesChanged) {
      let loaded: ManualCertificates | undefined
      try {
        loaded = await loadCertificates(merged, resolver)
      } catch (err) {
        await gen.close()
        throw err
      }
      const keep = new Set(loaded?.hosts() ?? [])
      for (const host of live.certificates?.hosts() ?? [])
        if (!keep.has(host) && !acmeNames.has(host)) resolver.delete(host)
      if (!merged.defaultCertificate) resolver.setFallback(undefined)
      await live.certificates?.close()
      live.certificates = loaded
      if (app.server.listening) live.certificates?.start()
    }
    const before = new Set(live.active.routes.map((r) => r.label))
    const after = new Set(merged.routes.map((r) => r.label))
    const old = live.current!
    live.current = gen
    live.active = merged
    // Names no route uses any more are no longer renewed nor served (their files are kept).
    if (dropped.length > 0) await acme?.remove(dropped)
    for (const name of added) acmeNames.add(name)
    for (const name of dropped) acmeNames.delete(name)
    live.plan = { acmeNames: nextPlan.acmeNames, manualHosts: nextPlan.manualHosts }
    syncUpgrade()
    retiring.set(
      old,
      new Promise<void>((resolve) => {
        setTimeout(() => {
          void old
            .close()
            .catch((err) => log.warn({ err, generation: old.id }, 'closing a replaced generation failed'))
            .finally(() => {
              retiring.delete(old)
              log.debug({ generation: old.id }, 'replaced generation closed')
              resolve()
            })
        }, RETIRE_AFTER_MS).unref()
      }),
    )
    const result: ReloadResult = {
      applied: true,
      generation: gen.id,
      errors: [],
      ignored,
      routesAdded: [...after].filter((l) => !before.has(l)),
      routesRemoved: [...before].filter((l) => !after.has(l)),
    }
    log.info({ ...result }, 'configuration reloaded')
    metrics?.reloaded(true)
    return result
  }
  let queue: Promise<unknown> = Promise.resolve()
  const reload = (input: ProxyOptions, describe?: (err: unknown) => string): Promise<ReloadResult> => {
    const run = queue.then(async () => {
      if (deps.draining()) return refused(['the proxy is shutting down'])
      try {
        return await applyReload(input)
      } catch (err) {
        const message = describe ? describe(err) : (err as Error).message
        log.error({ err }, 'reload refused, the running configuration is kept')
        return refused([message])
      }
    })
    queue = run
    return run
  }
  const refused = (errors: string[]): ReloadResult => {
    metrics?.reloaded(false)
    return { applied: false, generation: live.current!.id, errors, ignored: [], routesAdded: [], routesRemoved: [] }
  }
  const reloadFromSource = async (): Promise<ReloadResult> => {
    if (!deps.reloadSource) return refused(['this proxy has no configuration source to reload from'])
    let source: Awaited<ReturnType<NonNullable<ReloaderDeps['reloadSource']>>>
    try {
      source = await deps.reloadSource()
    } catch (err) {
      const message = (err as { located?: string }).located ?? (err as Error).message
      log.error({ err }, 'reload refused, the running configuration is kept')
      return refused([message])
    }
    return reload(source.options, source.describeError)
  }
  return { reload, reloadFromSource }
}
