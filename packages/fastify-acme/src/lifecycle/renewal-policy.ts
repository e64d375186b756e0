// When a certificate should be renewed. The policy is a seam: today the ratio rule (renew when a fraction of the
// lifetime remains, with jitter so names issued together do not renew together); ACME Renewal Information (RFC 9773)
// plugs in as another policy that may answer from the CA's suggested window.

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

/** The facts of a served certificate that a policy decides from. */
export interface CertificateDates {
  name: string
  notBefore: number
  notAfter: number
}

/** A renewal decision: when, and why (shown in status()). */
export interface RenewalDecision {
  at: number
  source: 'ratio'
}

export interface RenewalPolicy {
  /**
   * When to renew `cert`. `random` picks inside the window (pass `() => 0` for the latest time, e.g. to tell
   * whether a certificate found in storage is already due).
   */
  renewAt(cert: CertificateDates, random: () => number): RenewalDecision
}

/** The ratio rule: renew when `ratio` of the lifetime remains, spread over 5% of the lifetime before that. */
export function ratioPolicy(ratio: number): RenewalPolicy {
  return {
    renewAt: (cert, random) => ({ at: renewalTime(cert.notBefore, cert.notAfter, ratio, random), source: 'ratio' }),
  }
}
