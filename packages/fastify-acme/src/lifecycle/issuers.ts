// The CAs certificates are ordered from, in order (the `directory` option, or the `issuers` list), and which one an
// attempt uses: the first, until `issuerAttempts` attempts with one failed (or at once after a refusal that cannot
// clear soon), then the next. Each issuer keeps its account, certificates and renewal information under its own
// storage folder, keyed by directory URL, so two CAs never mix.
import type { ResolvedOptions } from '../options.js'
import { directoryKey } from '../storage/index.js'

export interface Issuer {
  directoryUrl: string
  /** The storage folder of this issuer (directoryKey(directoryUrl)). */
  dir: string
  contact: string[]
  eab: { kid: string; hmacKey: string } | undefined
}

export function issuersFrom(options: ResolvedOptions): Issuer[] {
  return options.issuers.map((i) => ({
    directoryUrl: i.directoryUrl,
    dir: directoryKey(i.directoryUrl),
    contact: i.contact,
    eab: i.eab,
  }))
}

/** A Retry-After longer than this is a refusal that cannot clear soon: the next issuer is tried at once. */
export const LONG_RETRY_AFTER_MS = 3600_000

/** CA verdicts that another attempt at the same CA will not change soon. */
const LASTING_PROBLEMS = new Set([
  'urn:ietf:params:acme:error:rejectedIdentifier',
  'urn:ietf:params:acme:error:caa',
  'urn:ietf:params:acme:error:unauthorized',
  'urn:ietf:params:acme:error:externalAccountRequired',
  'urn:ietf:params:acme:error:unsupportedIdentifier',
])
const LASTING_CODES = new Set([
  'FACME_CA_UNTRUSTED',
  'FACME_NOT_A_DIRECTORY',
  'FACME_UNKNOWN_PROFILE',
  'FACME_INVALID_PROFILE',
])

/** True when a failure at one CA will not clear soon (a policy refusal, a long rate limit, a misconfiguration). */
export function lastingRefusal(err: { code?: string; problemType?: string; retryAfterMs?: number }): boolean {
  if (err.code !== undefined && LASTING_CODES.has(err.code)) return true
  if (err.problemType !== undefined && LASTING_PROBLEMS.has(err.problemType)) return true
  return err.retryAfterMs !== undefined && err.retryAfterMs > LONG_RETRY_AFTER_MS
}

/**
 * The issuer of the next attempt after a failure at issuer `current`, which has now failed `failuresHere` times in a
 * row: the same while attempts remain, else the next in the list (back to the first after the last).
 */
export function nextIssuer(
  count: number,
  current: number,
  failuresHere: number,
  attempts: number,
  lasting: boolean,
): { issuer: number; failuresHere: number } {
  if (count > 1 && (lasting || failuresHere >= attempts)) return { issuer: (current + 1) % count, failuresHere: 0 }
  return { issuer: current, failuresHere }
}
