// What a failure learned from the CA, carried as properties of our coded errors (see errors.ts), so callers and
// the retry policy read facts instead of parsing messages.

/** Absent facts are undefined. */
export interface CaFacts {
  /** The ACME problem type, e.g. `urn:ietf:params:acme:error:rateLimited`. */
  problemType?: string | undefined
  /** The HTTP status of the CA's answer. */
  status?: number | undefined
  /** The CA's Retry-After, in ms from the failure. */
  retryAfterMs?: number | undefined
  /** A network or TLS error code (ECONNREFUSED, ETIMEDOUT, UNABLE_TO_VERIFY_LEAF_SIGNATURE, ...). */
  networkCode?: string | undefined
  /** True when the CA judged a challenge invalid (counts against the CA's failed-validation limit). */
  validation?: boolean | undefined
  /** The challenge type whose validation failed. */
  challengeType?: string | undefined
}

/** A coded error of this package with the CA's facts attached. */
export type AcmeFailure = Error & CaFacts & { code: string }

/** Attaches `facts` to a coded error (own enumerable properties, so they show in logs and JSON). */
export function withFacts<E extends Error>(err: E, facts: CaFacts): E & CaFacts {
  for (const [key, value] of Object.entries(facts)) {
    if (value !== undefined) (err as unknown as Record<string, unknown>)[key] = value
  }
  return err as E & CaFacts
}

/** The facts of any error (undefined fields when it has none). */
export function factsOf(err: unknown): CaFacts {
  const e = (err ?? {}) as CaFacts
  return {
    problemType: e.problemType,
    status: e.status,
    retryAfterMs: e.retryAfterMs,
    networkCode: e.networkCode,
    validation: e.validation,
    challengeType: e.challengeType,
  }
}
