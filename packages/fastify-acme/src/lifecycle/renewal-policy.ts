// When a certificate should be renewed: at the time picked in the CA's suggested window (ACME Renewal Information,
// RFC 9773) when there is one, else by the ratio rule (renew when a fraction of the lifetime remains, with jitter so
// names issued together do not renew together; half the lifetime for certificates of 10 days or less), and in any
// case when no more than 1/50 of the lifetime is left.

/** Fraction of the lifetime over which renewals of certificates issued together are spread. */
export const JITTER_FRACTION = 0.05

export interface RenewalWindow {
  /** Earliest time a renewal may be scheduled (start of the jitter span). */
  earliest: number
  /** The nominal renewal time: when `ratio` of the lifetime remains. */
  latest: number
}

export function renewalWindow(notBefore: number, notAfter: number, ratio: number): RenewalWindow {
  const lifetime = Math.max(0, notAfter - notBefore)
  const latest = notAfter - ratio * lifetime
  return { earliest: latest - JITTER_FRACTION * lifetime, latest }
}

/** When to renew: a random point of the window. May be in the past (expired or overdue): act now. */
export function renewalTime(
  notBefore: number,
  notAfter: number,
  ratio: number,
  random: () => number = Math.random,
): number {
  const { earliest, latest } = renewalWindow(notBefore, notAfter, ratio)
  return Math.round(latest - random() * (latest - earliest))
}

/** Certificates of this lifetime or less renew at half of it when the CA gives no window. */
export const SHORT_LIFETIME_MS = 10 * 24 * 3600_000
export const SHORT_LIFETIME_RATIO = 1 / 2
/** Whatever the CA says, renew when no more than this fraction of the lifetime is left. */
export const EMERGENCY_FRACTION = 1 / 50

/** The facts of a served certificate that a policy decides from. */
export interface CertificateDates {
  name: string
  notBefore: number
  notAfter: number
  /** The CA's window for this certificate and the time picked in it, when the CA gave one. */
  ari?: { start: number; end: number; selectedAt: number } | undefined
}

/** A renewal decision: when, and why (shown in status()). */
export interface RenewalDecision {
  at: number
  source: 'ari' | 'ratio' | 'emergency'
}

export interface RenewalPolicy {
  /**
   * When to renew `cert`. `random` picks inside the window (pass `() => 0` for the latest time, e.g. to tell
   * whether a certificate found in storage is already due).
   */
  renewAt(cert: CertificateDates, random: () => number): RenewalDecision
}

/**
 * The CA's window when it gave one (the picked time; in the past means now), else the ratio rule: `ratio` of the
 * lifetime remaining (1/2 for certificates of 10 days or less), spread over 5% of the lifetime before that. Never
 * later than when 1/50 of the lifetime is left.
 */
export function renewalPolicy(ratio: number): RenewalPolicy {
  return {
    renewAt: (cert, random) => {
      const lifetime = Math.max(0, cert.notAfter - cert.notBefore)
      const emergency = cert.notAfter - lifetime * EMERGENCY_FRACTION
      let decision: RenewalDecision
      if (cert.ari) {
        decision = { at: cert.ari.selectedAt, source: 'ari' }
      } else {
        const r = lifetime <= SHORT_LIFETIME_MS ? Math.max(ratio, SHORT_LIFETIME_RATIO) : ratio
        decision = { at: renewalTime(cert.notBefore, cert.notAfter, r, random), source: 'ratio' }
      }
      return decision.at > emergency ? { at: Math.round(emergency), source: 'emergency' } : decision
    },
  }
}
