// Host names: the one place that decides what a configured host looks like (exact or `*.example.com`), how a
// request's Host / :authority is normalised, and how a host finds its entry. Lookups are one or two Map reads,
// whatever the number of hosts: exact first, then the wildcard one label up (TLS wildcard semantics).
import { isIP } from 'node:net'
import { domainToASCII } from 'node:url'
import { ERR_INVALID_HOST } from './errors.js'

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/

export interface ParsedHost {
  /** Canonical form: lower case, punycode, no trailing dot; `*.example.com` for wildcards. */
  host: string
  wildcard: boolean
}

/**
 * Validates a host given in the options. Exact names (`app.example.com`, `localhost`, IPv4 literals) and one
 * wildcard form, `*.example.com`, which matches exactly one more label (`a.example.com`, not `example.com` nor
 * `a.b.example.com`), like a wildcard certificate does.
 */
export function parseRouteHost(input: string): ParsedHost {
  const trimmed = input.trim().toLowerCase()
  const withoutDot = trimmed.endsWith('.') ? trimmed.slice(0, -1) : trimmed
  if (withoutDot === '') throw new ERR_INVALID_HOST(JSON.stringify(input), 'empty')
  // The usual mistakes (a URL, a host with a port or a path), with what to write instead.
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//.exec(withoutDot)
  if (scheme) {
    const bare = withoutDot.slice(scheme[0].length).split(/[/:?#]/, 1)[0] ?? ''
    throw new ERR_INVALID_HOST(input, `a host has no scheme; write "${bare}" (routes are served over HTTPS)`)
  }
  const port = /^([^:/]+):(\d*)$/.exec(withoutDot)
  if (port) {
    throw new ERR_INVALID_HOST(
      input,
      `a host has no port; write "${port[1]}" (the listening port is https.port${port[2] ? `, e.g. https: { port: ${port[2]} }` : ''})`,
    )
  }
  if (withoutDot.includes('/')) {
    const [bare, ...rest] = withoutDot.split('/')
    throw new ERR_INVALID_HOST(
      input,
      `a host has no path; write host: "${bare}" and path: "/${rest.join('/').replace(/\/$/, '')}"`,
    )
  }
  // Any host that gets a certificate on demand (customer domains): the route for names no other route has.
  if (withoutDot === '*') return { host: '*', wildcard: false }
  if (isIP(withoutDot) === 4) return { host: withoutDot, wildcard: false }
  if (isIP(withoutDot.replace(/^\[|\]$/g, '')) === 6) {
    throw new ERR_INVALID_HOST(input, 'IPv6 literals are not supported as route hosts; use a DNS name')
  }
  const wildcard = withoutDot.startsWith('*.')
  const base = wildcard ? withoutDot.slice(2) : withoutDot
  if (base.includes('*')) {
    throw new ERR_INVALID_HOST(input, "the only wildcard form is a leading '*.' label, e.g. *.example.com")
  }
  const ascii = domainToASCII(base)
  if (ascii === '') throw new ERR_INVALID_HOST(input, 'not a valid domain name (IDNA conversion failed)')
  if (ascii.length > 253) throw new ERR_INVALID_HOST(input, 'longer than 253 characters')
  const labels = ascii.split('.')
  for (const label of labels) {
    if (!LABEL.test(label)) throw new ERR_INVALID_HOST(input, `label ${JSON.stringify(label)} is not a valid label`)
  }
  if (wildcard && labels.length < 2) {
    throw new ERR_INVALID_HOST(input, 'a wildcard needs at least two labels after it (*.example.com, not *.com)')
  }
  return { host: wildcard ? `*.${ascii}` : ascii, wildcard }
}

/** The wildcard entry that would cover `host` (`a.example.com` -> `*.example.com`), or undefined. */
export function wildcardOf(host: string): string | undefined {
  const dot = host.indexOf('.')
  if (dot <= 0 || dot === host.length - 1) return undefined
  return `*${host.slice(dot)}`
}

/**
 * The host a request is for, normalised (lower case, no port, no trailing dot), or undefined when absent or
 * malformed. HTTP/2 carries it in `:authority`, HTTP/1.1 in `Host`.
 */
export function requestHost(headers: Record<string, string | string[] | undefined>): string | undefined {
  const raw = headers[':authority'] ?? headers['host']
  if (typeof raw !== 'string' || raw === '' || raw.length > 300) return undefined
  let host: string
  if (raw.startsWith('[')) {
    const end = raw.indexOf(']')
    if (end < 0) return undefined
    host = raw.slice(0, end + 1)
    const rest = raw.slice(end + 1)
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return undefined
  } else {
    const colon = raw.indexOf(':')
    host = colon < 0 ? raw : raw.slice(0, colon)
    if (colon >= 0 && !/^\d{1,5}$/.test(raw.slice(colon + 1))) return undefined
  }
  host = host.toLowerCase()
  if (host.endsWith('.')) host = host.slice(0, -1)
  // Anything else (userinfo, paths, spaces, '*') is not a host we could have configured.
  if (!/^(?:[a-z0-9_.-]+|\[[0-9a-f:.]+\])$/.test(host)) return undefined
  return host
}

/** Host -> value with exact and `*.suffix` entries; get() is at most two Map lookups. */
export class HostTable<T> {
  readonly #entries = new Map<string, T>()

  set(host: string, value: T): void {
    this.#entries.set(host, value)
  }

  has(host: string): boolean {
    return this.#entries.has(host)
  }

  /** Exact match first, then the wildcard one label up, then the `*` entry (on-demand hosts), if any. */
  get(host: string): T | undefined {
    const exact = this.#entries.get(host)
    if (exact !== undefined) return exact
    const wildcard = wildcardOf(host)
    const covered = wildcard === undefined ? undefined : this.#entries.get(wildcard)
    return covered ?? this.#entries.get('*')
  }

  keys(): IterableIterator<string> {
    return this.#entries.keys()
  }

  values(): IterableIterator<T> {
    return this.#entries.values()
  }

  get size(): number {
    return this.#entries.size
  }
}
