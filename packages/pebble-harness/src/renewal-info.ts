// ARI (RFC 9773) answers of the ACME front: the certificates it has seen issued, a default suggested window for each,
// and per-certificate scripts (fixed, past or invalid window, 5xx, Retry-After, explanationURL). No HTTP here: the
// front turns an `AriAnswer` into a response.
import { X509Certificate } from 'node:crypto'
import { ariCertId, normalizeSerial } from './cert-id.js'

export interface IssuedCertificate {
  certId: string
  /** Lower-case hex, no leading zeros. */
  serial: string
  notBefore: Date
  notAfter: Date
  /** The leaf, PEM. */
  pem: string
}

export interface AriWindow {
  start: Date
  end: Date
}

/** What the front answers for one certificate instead of its default window. */
export interface AriScript {
  /**
   * The suggested window: given dates, `'past'` (an hour ago to a minute ago when scripted: the CA's "renew now",
   * e.g. before a revocation), or `'invalid'` (end before start, which a client must treat as unusable).
   * Omitted: the default window.
   */
  window?: { start: Date | string; end: Date | string } | 'past' | 'invalid'
  /** Answer this HTTP status (e.g. 500, 503) with a `serverInternal` problem instead of a window. */
  status?: number
  /** `Retry-After`: seconds, or a Date sent as an HTTP date. Default: the front's `ariRetryAfterSeconds`. */
  retryAfter?: number | Date
  explanationURL?: string
  /** How many answers the script gives before it retires (then the default applies again); default unlimited. */
  times?: number
}

export interface AriAnswer {
  status: number
  headers: Record<string, string>
  body: unknown
}

interface StoredScript {
  window?: AriWindow
  status?: number
  retryAfter?: number | Date
  explanationURL?: string
  left: number
}

const HOUR = 3_600_000

/** RFC 3339 at second precision, as Let's Encrypt sends it. */
const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z')

/**
 * Default window, like Let's Encrypt's in spirit (renew at about two thirds of the lifetime): from notBefore + 2/3
 * of the lifetime to notBefore + 3/4 of it, where lifetime = notAfter - notBefore.
 */
export function defaultAriWindow(cert: Pick<IssuedCertificate, 'notBefore' | 'notAfter'>): AriWindow {
  const from = cert.notBefore.getTime()
  const lifetime = cert.notAfter.getTime() - from
  return {
    start: new Date(from + Math.round((lifetime * 2) / 3)),
    end: new Date(from + Math.round((lifetime * 3) / 4)),
  }
}

function serialOfCertId(certId: string): string | undefined {
  const [keyId, serial, ...rest] = certId.split('.')
  const b64u = /^[A-Za-z0-9_-]{2,}$/
  if (!keyId || !serial || rest.length > 0 || !b64u.test(keyId) || !b64u.test(serial)) return undefined
  return normalizeSerial(Buffer.from(serial, 'base64url'))
}

export class RenewalInfo {
  readonly certificates: IssuedCertificate[] = []
  /** Every ARI GET answered, in order. */
  readonly polls: Array<{ certId: string; at: Date; status: number }> = []
  private readonly byCertId = new Map<string, IssuedCertificate>()
  // Keyed by CertID, or by 'serial:<hex>' for scripts given a serial (they then apply before the cert is seen).
  private readonly scripts = new Map<string, StoredScript>()

  constructor(private readonly retryAfterSeconds: number) {}

  /** Registers a certificate (PEM; the first one is the leaf); idempotent. */
  add(pem: string): IssuedCertificate {
    const leaf = new X509Certificate(pem)
    const certId = ariCertId(leaf)
    const known = this.byCertId.get(certId)
    if (known) return known
    const cert: IssuedCertificate = {
      certId,
      serial: normalizeSerial(leaf.serialNumber),
      notBefore: new Date(leaf.validFrom),
      notAfter: new Date(leaf.validTo),
      pem: leaf.toString(),
    }
    this.byCertId.set(certId, cert)
    this.certificates.push(cert)
    return cert
  }

  find(certIdOrSerial: string): IssuedCertificate | undefined {
    if (certIdOrSerial.includes('.')) return this.byCertId.get(certIdOrSerial)
    const serial = normalizeSerial(certIdOrSerial)
    return this.certificates.find((c) => c.serial === serial)
  }

  /** Scripts the answers for a certificate, by CertID or serial (hex); replaces an earlier script for it. */
  script(certIdOrSerial: string, script: AriScript): void {
    const known = this.find(certIdOrSerial)
    let window: AriWindow | undefined
    if (script.window === 'past') {
      const now = Date.now()
      window = { start: new Date(now - HOUR), end: new Date(now - 60_000) }
    } else if (script.window === 'invalid') {
      const start = known ? defaultAriWindow(known).start : new Date()
      window = { start, end: new Date(start.getTime() - HOUR) }
    } else if (script.window) {
      window = { start: new Date(script.window.start), end: new Date(script.window.end) }
    }
    this.scripts.set(this.key(certIdOrSerial, known), {
      window,
      status: script.status,
      retryAfter: script.retryAfter,
      explanationURL: script.explanationURL,
      left: script.times ?? Number.POSITIVE_INFINITY,
    })
  }

  clear(certIdOrSerial?: string): void {
    if (certIdOrSerial === undefined) this.scripts.clear()
    else this.scripts.delete(this.key(certIdOrSerial, this.find(certIdOrSerial)))
  }

  /** The answer to GET <renewalInfo>/<certId>, recorded in `polls`. */
  answer(certId: string): AriAnswer {
    const answer = this.compute(certId)
    this.polls.push({ certId, at: new Date(), status: answer.status })
    return answer
  }

  private key(certIdOrSerial: string, known: IssuedCertificate | undefined): string {
    if (known) return known.certId
    return certIdOrSerial.includes('.') ? certIdOrSerial : `serial:${normalizeSerial(certIdOrSerial)}`
  }

  private compute(certId: string): AriAnswer {
    const serial = serialOfCertId(certId)
    if (!serial) {
      return problem(400, 'malformed', `not an ARI CertID: ${certId}`)
    }
    const cert = this.byCertId.get(certId)
    const scriptKey = this.scripts.has(certId) ? certId : `serial:${serial}`
    const script = this.scripts.get(scriptKey)
    if (script) {
      script.left--
      if (script.left <= 0) this.scripts.delete(scriptKey)
    }
    const retryAfter = script?.retryAfter ?? this.retryAfterSeconds
    const headers = { 'retry-after': typeof retryAfter === 'number' ? String(retryAfter) : retryAfter.toUTCString() }
    if (script?.status !== undefined) {
      const answer = problem(script.status, 'serverInternal', 'scripted ARI failure')
      return { ...answer, headers: { ...answer.headers, ...headers } }
    }
    const window = script?.window ?? (cert ? defaultAriWindow(cert) : undefined)
    if (!window) return problem(404, 'malformed', `no certificate with CertID ${certId} was issued through this front`)
    const body: Record<string, unknown> = {
      suggestedWindow: { start: rfc3339(window.start), end: rfc3339(window.end) },
    }
    if (script?.explanationURL) body['explanationURL'] = script.explanationURL
    return { status: 200, headers: { 'content-type': 'application/json', ...headers }, body }
  }
}

function problem(status: number, type: string, detail: string): AriAnswer {
  return {
    status,
    headers: { 'content-type': 'application/problem+json' },
    body: { type: `urn:ietf:params:acme:error:${type}`, detail, status },
  }
}
