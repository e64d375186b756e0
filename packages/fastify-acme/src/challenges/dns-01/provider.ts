// The DNS-01 contract: what a DNS provider implements (create and remove one TXT record), where the record goes
// (`_acme-challenge.<name>`, the wildcard label dropped) and what it holds (base64url(SHA-256(key authorization))).
import { createHash } from 'node:crypto'

/**
 * Creates and removes the TXT record of a DNS-01 challenge at a DNS host. Implement it for your host's API, or use
 * {@link Rfc2136Provider} (BIND, Knot, PowerDNS, Windows DNS) or {@link ExecProvider} (any command).
 *
 * Both calls get the fully qualified record name with a final dot (`_acme-challenge.example.com.`, or the target of
 * a CNAME on it: see `resolveChallengeName`) and the TXT value. Several values can be live at one name at once (a
 * wildcard and its apex share `_acme-challenge.example.com.`): `present` adds one value without removing others,
 * `cleanup` removes exactly that value. Both must be idempotent (a retry may repeat a call) and should honour
 * `signal` (aborted when the order is abandoned or the server closes).
 */
export interface DnsProvider {
  /** Add the TXT record `fqdn` = `value`. Resolve once the DNS host accepted it (not necessarily propagated). */
  present(fqdn: string, value: string, signal: AbortSignal): Promise<void>
  /** Remove the TXT record `fqdn` = `value`, leaving other values at `fqdn` alone. Called on success and on failure. */
  cleanup(fqdn: string, value: string, signal: AbortSignal): Promise<void>
  /**
   * How long the propagation check may wait for this host (some APIs take minutes to publish). Default: the
   * propagation check's own (`DEFAULT_PROPAGATION_TIMEOUT_MS`).
   */
  readonly propagationTimeoutMs?: number
  /**
   * Replace the built-in propagation check (every authoritative server queried directly) with the host's own, e.g. an
   * API that reports "published". Resolve when the CA may validate; reject to give up.
   */
  waitForPropagation?(fqdn: string, value: string, signal: AbortSignal): Promise<void>
}

/**
 * The TXT record name for `name`: `_acme-challenge.<name>.`, fully qualified, lower case. A wildcard shares its
 * base name's record: `*.example.com` -> `_acme-challenge.example.com.` (RFC 8555 section 8.4).
 */
export function challengeRecordName(name: string): string {
  let base = name.trim().toLowerCase()
  if (base.endsWith('.')) base = base.slice(0, -1)
  if (base.startsWith('*.')) base = base.slice(2)
  if (base.length === 0 || base.includes('*') || base.includes('..') || /\s/.test(base))
    throw new TypeError(`not a DNS name for a DNS-01 challenge: ${JSON.stringify(name)}`)
  return `_acme-challenge.${base}.`
}

/**
 * The TXT value from a key authorization (`<token>.<account key thumbprint>`): base64url(SHA-256(keyAuthorization)),
 * no padding (RFC 8555 section 8.4).
 *
 * Note: acme-client's `getChallengeKeyAuthorization(challenge)` already returns this digest when `challenge.type` is
 * `dns-01` (and the plain key authorization for http-01 and tls-alpn-01). Its result for a dns-01 challenge is the
 * TXT value as is: hashing it again would publish a value the CA never matches.
 */
export function txtValue(keyAuthorization: string): string {
  return createHash('sha256').update(keyAuthorization).digest('base64url')
}
