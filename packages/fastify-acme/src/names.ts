// Domain names: the one place that decides what a managed name looks like (lower case, punycode, no trailing
// dot) and which names may never be ordered. The TLS path uses normalizeServerName() on every lookup.
import { isIP } from 'node:net'
import { domainToASCII } from 'node:url'
import { ERR_INVALID_NAME } from './errors.js'

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

/** True if `s` holds an ASCII character other than letters, digits, '.' and '-' (non-ASCII is left to IDNA). */
function hasForbiddenAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c >= 128) continue
    const ok = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 45 || c === 46
    if (!ok) return true
  }
  return false
}

/** Lower-cases and drops one trailing dot; cheap enough for every handshake. */
export function normalizeServerName(name: string): string {
  const lower = name.toLowerCase()
  return lower.endsWith('.') ? lower.slice(0, -1) : lower
}

/**
 * Validates a name given in the options and returns its canonical form (IDN converted to punycode).
 * Throws FACME_INVALID_NAME with the reason; TLS-ALPN-01 and HTTP-01 cannot validate IP addresses nor wildcards.
 */
export function canonicalName(input: string, options: { wildcard?: boolean } = {}): string {
  if (typeof input !== 'string' || input.length === 0) throw new ERR_INVALID_NAME(JSON.stringify(input), 'empty')
  // `*.example.com`: one wildcard label, first, only with DNS-01 (the only challenge a CA accepts for it).
  if (options.wildcard && input.trim().startsWith('*.')) return `*.${canonicalName(input.trim().slice(2))}`
  const trimmed = input.trim()
  const bare = trimmed.startsWith('[') && trimmed.endsWith(']') ? trimmed.slice(1, -1) : trimmed
  if (isIP(bare) !== 0) {
    throw new ERR_INVALID_NAME(input, 'IP addresses cannot be validated with TLS-ALPN-01 or HTTP-01; use a DNS name')
  }
  if (trimmed.includes('*')) {
    throw new ERR_INVALID_NAME(
      input,
      'a wildcard name needs the DNS-01 challenge: configure `dns01` (a DNS provider); only `*.` as the first label is allowed',
    )
  }
  // domainToASCII parses a URL host: it would silently drop '/path', ':port' or '%' escapes. Refuse any ASCII
  // byte that cannot be in a DNS name before it gets the chance.
  if (hasForbiddenAscii(trimmed)) {
    throw new ERR_INVALID_NAME(input, 'only letters, digits, dots and hyphens may appear in a DNS name')
  }
  const withoutDot = trimmed.endsWith('.') ? trimmed.slice(0, -1) : trimmed
  const ascii = domainToASCII(withoutDot)
  if (ascii === '') throw new ERR_INVALID_NAME(input, 'not a valid domain name (IDNA conversion failed)')
  if (ascii.length > 253) throw new ERR_INVALID_NAME(input, 'longer than 253 characters')
  const labels = ascii.split('.')
  if (labels.length < 2) throw new ERR_INVALID_NAME(input, 'a single-label name cannot get a certificate from a CA')
  for (const label of labels) {
    if (!LABEL.test(label)) {
      throw new ERR_INVALID_NAME(
        input,
        `label ${JSON.stringify(label)} must be 1-63 of a-z, 0-9, '-' (not at the ends)`,
      )
    }
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1] ?? '')) {
    throw new ERR_INVALID_NAME(input, 'the top-level label is numeric')
  }
  return ascii
}
