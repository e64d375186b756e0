// How long to wait after a failed attempt: capped exponential backoff with jitter (the shape Let's Encrypt's
// integration guide asks for), a CA's Retry-After (clamped), and a floor after a failed validation. Pure functions of
// their inputs; `random` is injectable so tests can pin it.

/** We never wait less than this after a Retry-After, nor longer than RETRY_AFTER_MAX_MS. */
export const RETRY_AFTER_MIN_MS = 1_000
export const RETRY_AFTER_MAX_MS = 24 * 3600_000
/** A failed validation counts against the CA's limit of 5 failed validations per name per hour: wait 15 min. */
export const FAILED_VALIDATION_DELAY_MS = 15 * 60_000

/** Delay before retry number `attempt` (1 = first retry): min * 2^(attempt-1), +0-25% jitter, capped at max. */
export function retryDelay(attempt: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(attempt, 1) - 1, 40)
  const base = Math.min(maxMs, minMs * 2 ** exponent)
  return Math.round(Math.min(maxMs, base * (1 + 0.25 * random())))
}

export function clampRetryAfter(ms: number): number {
  return Math.min(RETRY_AFTER_MAX_MS, Math.max(RETRY_AFTER_MIN_MS, ms))
}

export interface FailureFacts {
  retryAfterMs?: number | undefined
  validation?: boolean | undefined
}

/** The delay after the `attempt`-th consecutive failure: the largest of backoff, Retry-After and validation floor. */
export function nextAttemptDelay(
  attempt: number,
  facts: FailureFacts,
  policy: { retryMinMs: number; retryMaxMs: number; failedValidationDelayMs?: number },
  random: () => number = Math.random,
): number {
  let delay = retryDelay(attempt, policy.retryMinMs, policy.retryMaxMs, random)
  if (facts.retryAfterMs !== undefined) delay = Math.max(delay, clampRetryAfter(facts.retryAfterMs))
  if (facts.validation) delay = Math.max(delay, policy.failedValidationDelayMs ?? FAILED_VALIDATION_DELAY_MS)
  return delay
}
