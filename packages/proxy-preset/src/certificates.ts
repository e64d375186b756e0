// Which certificate serves each host: ACME (fastify-acme), a manual pair, or the default. planCertificates() decides
// it once at start and refuses configurations that would leave a routed host without a certificate. Serving them is
// fastify-acme's CertResolver, shared by both sources (exact name, then the one-label `*.parent` entry, then the
// default certificate).
import { isIP } from 'node:net'
import { canonicalName } from '@autotls/fastify-acme/internal'
import {
  atOption,
  ERR_CERTIFICATE_CONFLICT,
  ERR_NO_CERTIFICATE,
  ERR_ON_DEMAND_ROUTE,
  ERR_WILDCARD_NEEDS_CERTIFICATE,
} from './errors.js'
import { wildcardOf } from './hosts.js'
import type { ResolvedProxyOptions } from './options.js'

/** What the manual certificates cover, as planCertificates() needs it. */
export interface ManualCoverage {
  /** Hosts with their own manual pair (exact names and `*.example.com` entries). */
  hosts(): string[]
}

export interface CertificatePlan {
  /** Names fastify-acme manages (empty: the plugin is not registered). */
  acmeNames: string[]
  /** Hosts served from manual files. */
  manualHosts: string[]
}

/** A name a CA can validate: a DNS name with at least two labels; a wildcard only over DNS-01. */
function acmeEligible(host: string, dns01: boolean): boolean {
  return isIP(host) === 0 && host.includes('.') && (dns01 || !host.startsWith('*.'))
}

export function planCertificates(
  opts: Pick<ResolvedProxyOptions, 'routes' | 'acme' | 'defaultCertificate'>,
  manual: ManualCoverage,
): CertificatePlan {
  const manualHosts = manual.hosts()
  const manualSet = new Set(manualHosts)
  const manualCovers = (host: string): boolean => {
    if (manualSet.has(host)) return true
    const wildcard = wildcardOf(host)
    return wildcard !== undefined && manualSet.has(wildcard)
  }
  const hasDefault = opts.defaultCertificate !== undefined
  const dns01 = opts.acme?.dns01 !== undefined
  const onDemand = opts.acme?.onDemand !== undefined

  let acmeNames: string[] = []
  if (opts.acme) {
    if (opts.acme.names !== undefined) {
      acmeNames = [...new Set(opts.acme.names.map((n) => canonicalName(n, { wildcard: dns01 })))]
      for (const [i, name] of acmeNames.entries()) {
        if (manualCovers(name)) throw atOption(new ERR_CERTIFICATE_CONFLICT(name), ['acme', 'names', i])
      }
    } else {
      const hosts = opts.routes.filter((r) => acmeEligible(r.host, dns01) && !manualCovers(r.host))
      acmeNames = [...new Set(hosts.map((r) => r.host))]
    }
  }
  const acmeSet = new Set(acmeNames)
  for (const [i, route] of opts.routes.entries()) {
    if (route.host === '*') {
      // Its hosts get their certificates on demand.
      if (!onDemand) throw atOption(new ERR_ON_DEMAND_ROUTE(), ['routes', i, 'host'])
    } else if (route.wildcard) {
      if (!manualSet.has(route.host) && !hasDefault && !acmeSet.has(route.host)) {
        throw atOption(new ERR_WILDCARD_NEEDS_CERTIFICATE(route.host), ['routes', i, 'host'])
      }
    } else if (!acmeSet.has(route.host) && !manualCovers(route.host) && !hasDefault) {
      throw atOption(new ERR_NO_CERTIFICATE(route.host), ['routes', i, 'host'])
    }
  }
  return { acmeNames, manualHosts }
}
