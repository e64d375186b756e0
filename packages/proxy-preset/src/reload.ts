// What a reload may change while the proxy runs, and what needs a restart. Routes, upstreams, certificate files,
// trusted proxies, the path rule, the access log and the body limit are per generation (generation.ts) and change
// live. Listeners (addresses, ports, HTTP/2), connection limits and timeouts, ACME account settings, health, admin
// and shutdown belong to the listeners and are kept: a reload lists them in `ignored`.
import type { ResolvedProxyOptions } from './options.js'

export interface ReloadResult {
  /** True when the new configuration serves requests now. */
  applied: boolean
  /** The generation serving requests after this reload (unchanged when refused). */
  generation: number
  /** Why the configuration was refused, each naming the option (and, from a file, its line). */
  errors: string[]
  /** Options that changed but need a restart; their running values are kept. */
  ignored: string[]
  routesAdded: string[]
  routesRemoved: string[]
}

const RESTART_ONLY = ['https', 'http', 'health', 'admin', 'shutdown', 'reload', 'workers'] as const

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

/** Changed options that a reload cannot apply (dotted names). */
export function restartOnlyChanges(running: ResolvedProxyOptions, next: ResolvedProxyOptions): string[] {
  const ignored: string[] = RESTART_ONLY.filter((key) => !same(running[key], next[key]))
  const { bodyBytes: _a, ...limits } = running.limits
  const { bodyBytes: _b, ...nextLimits } = next.limits
  for (const key of Object.keys(limits) as Array<keyof typeof limits>) {
    if (limits[key] !== nextLimits[key]) ignored.push(`limits.${key}`)
  }
  const { names: _n, storage: _s, ...acme } = running.acme ?? {}
  const { names: _m, storage: _t, ...nextAcme } = next.acme ?? {}
  if ((running.acme === undefined) !== (next.acme === undefined) || !same(acme, nextAcme)) ignored.push('acme')
  return ignored
}

/** The running configuration with everything a reload may change taken from `next`. */
export function reloadable(running: ResolvedProxyOptions, next: ResolvedProxyOptions): ResolvedProxyOptions {
  return {
    ...running,
    routes: next.routes,
    certificates: next.certificates,
    defaultCertificate: next.defaultCertificate,
    trustedProxies: next.trustedProxies,
    allowSemicolonInPath: next.allowSemicolonInPath,
    accessLog: next.accessLog,
    limits: { ...running.limits, bodyBytes: next.limits.bodyBytes },
    acme: running.acme === undefined ? undefined : { ...running.acme, names: next.acme?.names },
  }
}
