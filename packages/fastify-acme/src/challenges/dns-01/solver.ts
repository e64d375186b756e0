// One DNS-01 challenge from start to end, the order the certificate manager needs: find where the record goes
// (CNAME delegation), present it, wait until every authoritative server has it, let the CA validate, and clean up
// whatever happened.

import {
  type PropagationOptions,
  type PropagationResult,
  resolveChallengeName,
  waitForPropagation,
} from './propagation.js'
import type { DnsProvider } from './provider.js'
import { challengeRecordName } from './provider.js'

export interface Dns01Options extends PropagationOptions {
  /** Skip the CNAME lookup on `_acme-challenge.<name>` (the record is written there even if it is a CNAME). */
  followCname?: boolean
  /** Told about a cleanup that failed; it never hides the validation's own outcome. Default: ignored. */
  onCleanupError?: (error: unknown, fqdn: string) => void
}

export interface Dns01Step {
  /** `_acme-challenge.<name>.` */
  recordName: string
  /** Where the record was written: `recordName` or the end of its CNAME chain. */
  fqdn: string
  cnames: string[]
  /** The built-in propagation check's result; undefined when the provider's own `waitForPropagation` ran. */
  propagation: PropagationResult | undefined
}

/**
 * Finds where the TXT `value` for identifier `name` goes (following a CNAME on `_acme-challenge.<name>` unless
 * `followCname` is false), writes it with `provider` and waits for propagation (the provider's own
 * `waitForPropagation` if it has one, else every authoritative server asked directly, for
 * `provider.propagationTimeoutMs ?? options.timeoutMs`). `written` is told where the record goes before it is
 * written, so that a failure after that can still be cleaned up.
 */
export async function presentDns01(
  provider: DnsProvider,
  name: string,
  value: string,
  options: Dns01Options & { signal: AbortSignal },
  written?: (fqdn: string) => void,
): Promise<Dns01Step> {
  const recordName = challengeRecordName(name)
  const target =
    options.followCname === false ? { fqdn: recordName, cnames: [] } : await resolveChallengeName(recordName, options)
  written?.(target.fqdn)
  const { signal } = options
  await provider.present(target.fqdn, value, signal)
  let propagation: PropagationResult | undefined
  if (provider.waitForPropagation) await provider.waitForPropagation(target.fqdn, value, signal)
  else
    propagation = await waitForPropagation(target.fqdn, value, {
      ...options,
      timeoutMs: provider.propagationTimeoutMs ?? options.timeoutMs,
    })
  return { recordName, fqdn: target.fqdn, cnames: target.cnames, propagation }
}

/** Removes the TXT `value` at `fqdn`, with a deadline of its own (it also runs after the order was cut short). */
export function cleanupDns01(provider: DnsProvider, fqdn: string, value: string): Promise<void> {
  return provider.cleanup(fqdn, value, AbortSignal.timeout(30_000))
}

/**
 * presentDns01(), then `validate` (tell the CA and wait for its verdict), and the record always removed afterwards,
 * whether `validate` or the propagation check failed.
 */
export async function solveDns01<T>(
  provider: DnsProvider,
  name: string,
  value: string,
  options: Dns01Options & { signal: AbortSignal },
  validate: (step: Dns01Step) => Promise<T>,
): Promise<T> {
  let fqdn: string | undefined
  try {
    const step = await presentDns01(provider, name, value, options, (where) => {
      fqdn = where
    })
    return await validate(step)
  } finally {
    // Also after a failed present(): it may have written the record before failing (e.g. a lost response).
    if (fqdn !== undefined) {
      try {
        await cleanupDns01(provider, fqdn, value)
      } catch (error) {
        options.onCleanupError?.(error, fqdn)
      }
    }
  }
}
