// Before the CA is told to validate: where the TXT record really goes (a CNAME on `_acme-challenge.<name>` delegates
// it to another zone), which servers are authoritative for that zone (SOA and NS through recursive resolvers), and
// waiting until every one of them, asked directly without recursion, answers the value.
import { getServers } from 'node:dns'
import { Resolver } from 'node:dns/promises'
import { isIP } from 'node:net'
import { ERR_DNS_PROPAGATION_TIMEOUT, ERR_DNS_ZONE } from './errors.js'
import { type DnsServer, exchange, formatServer, parseServer } from './transport.js'
import { absolute, decode, encodeQuery, rcodeName, txtString } from './wire.js'

export const DEFAULT_PROPAGATION_TIMEOUT_MS = 120_000
export const DEFAULT_PROPAGATION_INTERVAL_MS = 2_000
const DEFAULT_QUERY_TIMEOUT_MS = 2_000
const MAX_CNAMES = 8

export interface LookupOptions {
  /**
   * Recursive resolvers for the CNAME, SOA, NS and address lookups: `host`, `host:port` or `[v6]:port`. Default the
   * system's (`dns.getServers()`, i.e. /etc/resolv.conf).
   */
  resolvers?: string[]
  /** Per DNS query. Default 2 s. */
  queryTimeoutMs?: number
  /** Stops waiting (between rounds and during direct queries). */
  signal?: AbortSignal
}

export interface PropagationOptions extends LookupOptions {
  /** How long to wait for every authoritative server. Default 120 s. */
  timeoutMs?: number
  /** Between rounds of queries to the servers that did not answer the value yet. Default 2 s. */
  intervalMs?: number
  /** Port the authoritative servers are asked on. Default 53. */
  nameserverPort?: number
  /**
   * Addresses (`host`, `host:port`) of an NS name. Default: its A and AAAA records through `resolvers`, on
   * `nameserverPort`. For split-horizon set-ups, or servers on other ports (tests).
   */
  resolveNameserver?: (nameserver: string) => Promise<string[]>
}

export interface ChallengeTarget {
  /** Where the TXT record must be written: `_acme-challenge.<name>.`, or the end of its CNAME chain. */
  fqdn: string
  /** The CNAME chain followed from `_acme-challenge.<name>.`, empty without delegation. */
  cnames: string[]
}

export interface AuthoritativeServer {
  /** The NS name, e.g. `ns1.example.com.`. */
  nameserver: string
  address: DnsServer
}

export interface PropagationResult {
  fqdn: string
  zone: string
  servers: AuthoritativeServer[]
  elapsedMs: number
  /** Rounds of queries until every server answered the value. */
  rounds: number
}

function resolverFor(options: LookupOptions): Resolver {
  const timeout = options.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS
  const resolver = new Resolver({ timeout, tries: 2 })
  const servers = options.resolvers ?? getServers()
  resolver.setServers(servers.map((s) => formatServer(parseServer(s))))
  // Not tied to options.signal: each lookup is bounded by its timeout, and a listener per lookup on a long-lived
  // signal would pile up.
  return resolver
}

function noData(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code
  return code === 'ENODATA' || code === 'ENOTFOUND'
}

/**
 * Follows CNAMEs from `recordName` (`_acme-challenge.<name>.`, see `challengeRecordName`) through the recursive
 * resolvers: the TXT record goes where the chain ends (a delegated validation zone), and that is the name to give
 * the provider and the propagation check.
 */
export async function resolveChallengeName(recordName: string, options: LookupOptions = {}): Promise<ChallengeTarget> {
  const resolver = resolverFor(options)
  const cnames: string[] = []
  let current = absolute(recordName)
  for (;;) {
    let target: string | undefined
    try {
      target = (await resolver.resolveCname(current))[0]
    } catch (error) {
      if (!noData(error))
        throw new ERR_DNS_ZONE(current, `CNAME lookup failed: ${(error as Error).message}`, { cause: error })
    }
    if (target === undefined) return { fqdn: current, cnames }
    const next = absolute(target)
    if (cnames.includes(next) || next === absolute(recordName) || cnames.length >= MAX_CNAMES)
      throw new ERR_DNS_ZONE(
        absolute(recordName),
        `CNAME loop or chain longer than ${MAX_CNAMES}: ${[...cnames, next].join(' -> ')}`,
      )
    cnames.push(next)
    current = next
  }
}

/** The zone of `fqdn`: the closest enclosing name with an SOA record, asked through the recursive resolvers. */
export async function findZone(fqdn: string, options: LookupOptions = {}): Promise<string> {
  const resolver = resolverFor(options)
  const labels = absolute(fqdn).slice(0, -1).split('.')
  for (let i = 0; i < labels.length; i++) {
    const candidate = `${labels.slice(i).join('.')}.`
    try {
      await resolver.resolveSoa(candidate)
      return candidate
    } catch (error) {
      if (!noData(error))
        throw new ERR_DNS_ZONE(fqdn, `SOA lookup of ${candidate} failed: ${(error as Error).message}`, { cause: error })
    }
  }
  throw new ERR_DNS_ZONE(fqdn, 'no SOA record at any of its parent names')
}

/** Every address of every NS of `zone`. */
export async function authoritativeServers(
  zone: string,
  options: PropagationOptions = {},
): Promise<AuthoritativeServer[]> {
  const resolver = resolverFor(options)
  const port = options.nameserverPort ?? 53
  let names: string[]
  try {
    names = (await resolver.resolveNs(absolute(zone))).map(absolute)
  } catch (error) {
    throw new ERR_DNS_ZONE(zone, `NS lookup failed: ${(error as Error).message}`, { cause: error })
  }
  const servers: AuthoritativeServer[] = []
  for (const nameserver of names.sort()) {
    let addresses: string[]
    if (options.resolveNameserver) addresses = await options.resolveNameserver(nameserver)
    else if (isIP(nameserver.slice(0, -1))) addresses = [nameserver.slice(0, -1)]
    else {
      const [v4, v6] = await Promise.all([
        resolver.resolve4(nameserver).catch(() => [] as string[]),
        resolver.resolve6(nameserver).catch(() => [] as string[]),
      ])
      addresses = [...v4, ...v6]
    }
    if (addresses.length === 0) throw new ERR_DNS_ZONE(zone, `its nameserver ${nameserver} has no address`)
    for (const address of addresses) servers.push({ nameserver, address: parseServer(address, port) })
  }
  if (servers.length === 0) throw new ERR_DNS_ZONE(zone, 'it has no NS records')
  return servers
}

/** One direct, non-recursive TXT query: whether `server` answers `value` at `fqdn`, else what it said. */
async function probe(
  server: DnsServer,
  fqdn: string,
  value: string,
  options: PropagationOptions,
): Promise<string | true> {
  const query = encodeQuery(fqdn, 'TXT', false)
  let bytes: Buffer
  try {
    bytes = await exchange(server, query.bytes, {
      timeoutMs: options.queryTimeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS,
      signal: options.signal,
    })
  } catch (error) {
    if (options.signal?.aborted) throw error
    return `no answer (${(error as Error).message})`
  }
  const response = decode(bytes)
  if (response.rcode !== 0) return `answered ${rcodeName(response.rcode)}`
  if (!response.authoritative) return 'answered without authority (not a server of this zone?)'
  const values = response.answers.filter((r) => r.type === 'TXT' && r.name === fqdn).map((r) => txtString(r.data))
  if (values.includes(value)) return true
  return values.length === 0 ? 'answered no TXT record' : `answered ${values.length} other TXT value(s)`
}

/**
 * Waits until every authoritative server of the zone of `fqdn` answers the TXT `value` at `fqdn`, asked directly
 * (recursion off, so no cache in between). Servers that answered the value are not asked again. Rejects with
 * FACME_DNS_PROPAGATION_TIMEOUT naming each server still missing it and what it last answered.
 */
export async function waitForPropagation(
  fqdn: string,
  value: string,
  options: PropagationOptions = {},
): Promise<PropagationResult> {
  const started = Date.now()
  const timeoutMs = options.timeoutMs ?? DEFAULT_PROPAGATION_TIMEOUT_MS
  const intervalMs = options.intervalMs ?? DEFAULT_PROPAGATION_INTERVAL_MS
  const name = absolute(fqdn)
  const zone = await findZone(name, options)
  const servers = await authoritativeServers(zone, options)
  const pending = new Map(servers.map((s) => [s, 'not asked yet']))
  let rounds = 0
  for (;;) {
    rounds++
    await Promise.all(
      [...pending.keys()].map(async (server) => {
        const verdict = await probe(server.address, name, value, options)
        if (verdict === true) pending.delete(server)
        else pending.set(server, verdict)
      }),
    )
    if (pending.size === 0) return { fqdn: name, zone, servers, elapsedMs: Date.now() - started, rounds }
    const left = started + timeoutMs - Date.now()
    if (left <= 0) {
      const missing = [...pending].map(([s, why]) => `${s.nameserver} (${formatServer(s.address)}) ${why}`).join('; ')
      throw new ERR_DNS_PROPAGATION_TIMEOUT(name, timeoutMs, missing)
    }
    await sleep(Math.min(intervalMs, left), options.signal)
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal!.reason)
    }
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
