// ACME Renewal Information (RFC 9773) for the certificates we serve: what the CA suggested, the time we picked in
// its window, and when to ask again. The picked time is stored, so every instance sharing the storage renews at the
// same time and a restart does not pick again; it is kept while the CA's window stays the same.
import type { RenewalInfo } from '../acme.js'
import { keys, type Storage } from '../storage/index.js'
import { retryDelay } from './backoff.js'

/** Retry-After is honoured within these bounds. */
export const ARI_POLL_MIN_MS = 60_000
export const ARI_POLL_MAX_MS = 24 * 3600_000
/** Without a Retry-After, or after a long-term error (an unusable answer), ask again after about this long. */
export const ARI_POLL_DEFAULT_MS = 6 * 3600_000

export interface AriState {
  /** The certificate the window is for. */
  certId: string
  /** The CA's suggested window (ms since the epoch). */
  start: number
  end: number
  explanationURL?: string | undefined
  /** The renewal time picked uniformly in the window. */
  selectedAt: number
  /** When to ask the CA again. */
  nextPollAt: number
  /** Consecutive failed polls (temporary errors back off on it). */
  failures: number
}

/** The state after the CA answered `info` for `certId` at `now`. */
export function afterAnswer(
  previous: AriState | undefined,
  certId: string,
  info: RenewalInfo,
  now: number,
  random: () => number,
): AriState {
  const same = previous?.certId === certId && previous.start === info.start && previous.end === info.end
  const selectedAt = same ? previous.selectedAt : Math.round(info.start + random() * (info.end - info.start))
  const wait =
    info.retryAfterMs === undefined
      ? ARI_POLL_DEFAULT_MS
      : Math.min(ARI_POLL_MAX_MS, Math.max(ARI_POLL_MIN_MS, info.retryAfterMs))
  return {
    certId,
    start: info.start,
    end: info.end,
    explanationURL: info.explanationURL,
    selectedAt,
    nextPollAt: now + wait,
    failures: 0,
  }
}

/**
 * When to ask again after a failed poll: a temporary error (5xx, network) backs off from a minute, doubling, up to
 * the default interval; a long-term one (an unusable answer) waits the default interval, or the CA's Retry-After.
 */
export function afterFailure(
  failures: number,
  longTerm: boolean,
  retryAfterMs: number | undefined,
  now: number,
  random: () => number,
): number {
  if (retryAfterMs !== undefined) return now + Math.min(ARI_POLL_MAX_MS, Math.max(ARI_POLL_MIN_MS, retryAfterMs))
  if (longTerm) return now + ARI_POLL_DEFAULT_MS
  return now + retryDelay(failures, ARI_POLL_MIN_MS, ARI_POLL_DEFAULT_MS, random)
}

/** Reads and writes the ARI state of one issuer's names. */
export class AriStates {
  readonly #storage: Storage
  readonly #dir: string

  constructor(storage: Storage, dir: string) {
    this.#storage = storage
    this.#dir = dir
  }

  async read(name: string): Promise<AriState | undefined> {
    const raw = await this.#storage.get(keys.renewalInfo(this.#dir, name)).catch(() => undefined)
    if (!raw) return undefined
    try {
      const value = JSON.parse(raw.toString('utf8')) as Partial<AriState>
      const numbers = [value.start, value.end, value.selectedAt, value.nextPollAt, value.failures]
      if (typeof value.certId !== 'string' || numbers.some((n) => typeof n !== 'number')) return undefined
      return value as AriState
    } catch {
      return undefined
    }
  }

  write(name: string, state: AriState): Promise<void> {
    return this.#storage.put(keys.renewalInfo(this.#dir, name), JSON.stringify(state))
  }
}
