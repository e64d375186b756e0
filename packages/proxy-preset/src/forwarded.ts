// X-Forwarded-* and the trusted-proxies decision. The proxy sets X-Forwarded-For / -Proto / -Host and X-Real-IP
// from the connection it actually accepted; what a client sent in those headers (and in `Forwarded`) is dropped,
// unless the connection comes from an address listed in `trustedProxies`, in which case the client's
// X-Forwarded-For chain is kept and the peer address appended (and its -Proto / -Host kept when present).
import { BlockList, isIP } from 'node:net'
import { ERR_INVALID_OPTIONS } from './errors.js'
import { endToEndCopy } from './headers.js'

/** Request headers a client could use to lie about where it is; rewritten on every proxied request. */
export const FORWARDING_HEADERS = [
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-real-ip',
] as const

const NAMED_RANGES: Record<string, Array<[string, number, 'ipv4' | 'ipv6']>> = {
  loopback: [
    ['127.0.0.0', 8, 'ipv4'],
    ['::1', 128, 'ipv6'],
  ],
  private: [
    ['10.0.0.0', 8, 'ipv4'],
    ['172.16.0.0', 12, 'ipv4'],
    ['192.168.0.0', 16, 'ipv4'],
    ['fc00::', 7, 'ipv6'],
  ],
  linklocal: [
    ['169.254.0.0', 16, 'ipv4'],
    ['fe80::', 10, 'ipv6'],
  ],
}

const FORWARDING_SET = new Set<string>(FORWARDING_HEADERS)

export type TrustFunction = (address: string | undefined) => boolean

/** Strips the IPv4-mapped prefix so `::ffff:10.0.0.1` is checked as the IPv4 address it is. */
export function plainAddress(address: string | undefined): string | undefined {
  if (address === undefined) return undefined
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address
}

/**
 * Compiles `trustedProxies` (IP addresses, CIDR ranges, or the names `loopback`, `private`, `linklocal`) into a
 * predicate over a peer address. An empty list trusts nobody. Throws FPROXY_INVALID_OPTIONS for a bad entry.
 */
export function compileTrust(entries: readonly string[]): TrustFunction {
  if (entries.length === 0) return () => false
  const list = new BlockList()
  for (const entry of entries) {
    const named = NAMED_RANGES[entry]
    if (named) {
      for (const [net, prefix, type] of named) list.addSubnet(net, prefix, type)
      continue
    }
    const [address = '', prefixText] = entry.split('/')
    const family = isIP(address)
    if (family === 0) {
      throw new ERR_INVALID_OPTIONS(
        `trustedProxies: ${JSON.stringify(entry)} is not an IP address, a CIDR range, nor one of loopback, private, linklocal`,
      )
    }
    const type = family === 4 ? 'ipv4' : 'ipv6'
    if (prefixText === undefined) {
      list.addAddress(address, type)
      continue
    }
    const prefix = Number(prefixText)
    if (!/^\d{1,3}$/.test(prefixText) || prefix > (family === 4 ? 32 : 128)) {
      throw new ERR_INVALID_OPTIONS(`trustedProxies: ${JSON.stringify(entry)} has an invalid prefix length`)
    }
    list.addSubnet(address, prefix, type)
  }
  return (address) => {
    const plain = plainAddress(address)
    if (plain === undefined) return false
    const family = isIP(plain)
    if (family === 0) return false
    return list.check(plain, family === 4 ? 'ipv4' : 'ipv6')
  }
}

export interface ForwardingContext {
  /** Address of the TCP peer that sent this request. */
  peer: string | undefined
  /** Whether the request arrived over TLS. */
  secure: boolean
  /** Host the client asked for (Host or :authority, as sent, port included). */
  host: string | undefined
  trusted: TrustFunction
}

function headerValue(value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (Array.isArray(value)) return value.join(', ')
  return undefined
}

/** A forwarding header, also in the underscore spelling CGI-style upstreams read as the same variable. */
function isForwardingHeader(name: string): boolean {
  if (FORWARDING_SET.has(name)) return true
  // CGI-style upstreams (PHP-FPM, WSGI, Rack) read `X_Forwarded_For` and `X-Forwarded-For` as the same variable, so
  // an underscore spelling would carry a client's lie past the rewrite (nginx drops such headers too).
  return name.includes('_') && FORWARDING_SET.has(name.toLowerCase().replace(/_/g, '-'))
}

/** The forwarding headers to set, from the connection (and, from a trusted peer, the chain it sent). */
function forwardingValues(headers: Record<string, unknown>, ctx: ForwardingContext): Array<[string, string]> {
  const peer = plainAddress(ctx.peer)
  const trusted = ctx.trusted(peer)
  const previousFor = trusted ? headerValue(headers['x-forwarded-for']) : undefined
  const previousProto = trusted ? headerValue(headers['x-forwarded-proto']) : undefined
  const previousHost = trusted ? headerValue(headers['x-forwarded-host']) : undefined
  const previousRealIp = trusted ? headerValue(headers['x-real-ip']) : undefined
  const previousForwarded = trusted ? headerValue(headers['forwarded']) : undefined
  const out: Array<[string, string]> = []
  if (peer !== undefined) {
    out.push(['x-forwarded-for', previousFor ? `${previousFor}, ${peer}` : peer])
    const firstHop = previousFor?.split(',')[0]?.trim()
    out.push(['x-real-ip', previousRealIp ?? (firstHop || peer)])
  }
  out.push(['x-forwarded-proto', previousProto ?? (ctx.secure ? 'https' : 'http')])
  const host = previousHost ?? ctx.host
  if (host !== undefined) out.push(['x-forwarded-host', host])
  if (previousForwarded !== undefined) out.push(['forwarded', previousForwarded])
  return out
}

/**
 * The request headers for the upstream, as a new object made in one pass: the client's end-to-end headers without
 * hop-by-hop and forwarding headers (underscore spellings included), then the forwarding headers set from the
 * connection; from a trusted peer, the chain it sent is kept and extended.
 */
export function upstreamRequestHeaders(
  headers: Record<string, unknown>,
  ctx: ForwardingContext,
): Record<string, unknown> {
  // A trusted peer's chain counts only if its Connection header did not mark it hop-by-hop (rare: reply-from has
  // already removed Connection and what it lists).
  const source = headers['connection'] === undefined ? headers : endToEndCopy(headers)
  const out = endToEndCopy(headers, isForwardingHeader)
  for (const [name, value] of forwardingValues(source, ctx)) out[name] = value
  return out
}
