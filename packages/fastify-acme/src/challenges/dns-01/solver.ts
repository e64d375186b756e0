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
 * Presents the TXT `value` for identifier `name` (`example.com` or `*.example.com`) with `provider`, waits for
 * propagation (the provider's own `waitForPropagation` if it has one, else every authoritative server asked
 * directly, for `provider.propagationTimeoutMs ?? options.timeoutMs`), then runs `validate` (tell the CA and wait
 * for its verdict) and always removes the record afterwards, whether `validate` or the propagation check failed.
 */
export async function solveDns01<T>(
  provider: DnsProvider,
  name: string,
  value: string,
  options: Dns01Options & { signal: AbortSignal },
  validate: (step: Dns01Step) => Promise<T>,
): Promise<T> {
  const recordName = challengeRecordName(name)
  const target =
    options.followCname === false ? { fqdn: recordName, cnames: [] } : await resolveChallengeName(recordName, options)
  const { signal } = options
  try {
    await provider.present(target.fqdn, value, signal)
    let propagation: PropagationResult | undefined
    if (provider.waitForPropagation) await provider.waitForPropagation(target.fqdn, value, signal)
    else
      propagation = await waitForPropagation(target.fqdn, value, {
        ...options,
        timeoutMs: provider.propagationTimeoutMs ?? options.timeoutMs,
      })
    return await validate({ recordName, fqdn: target.fqdn, cnames: target.cnames, propagation })
  } finally {
    // Also after a failed present(): it may have written the record before failing (e.g. a lost response).
    try {
      // Its own deadline: cleanup also runs when `signal` aborted the rest.
      await provider.cleanup(target.fqdn, value, AbortSignal.timeout(30_000))
    } catch (error) {
      options.onCleanupError?.(error, target.fqdn)
    }
  }
}
