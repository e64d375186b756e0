// The ACME front: the CA proxy (ca-proxy.ts, fault injection included) plus what Pebble 2.4 lacks. It adds
// `renewalInfo` and `meta.profiles` to the directory, answers ARI GETs (renewal-info.ts) for every certificate
// downloaded through it, reads each newOrder's JWS payload to record `replaces` and `profile` and to refuse some
// orders with a problem (order-book.ts). Problems carry a fresh nonce fetched from Pebble, so clients keep working.
// Host is forwarded unchanged: Pebble checks each JWS `url` against the Host it sees.
import {
  type CaProxy,
  type CaProxyOptions,
  type ProxyAnswer,
  type ProxyExchange,
  startCaProxyWith,
  type Upstream,
} from './ca-proxy.js'
import { type FrontOrder, type NewOrderPayload, OrderBook, type ReplacesProblem } from './order-book.js'
import { type AriScript, type IssuedCertificate, RenewalInfo } from './renewal-info.js'

// Pebble 2.4's fixed paths.
const DIRECTORY = '/dir'
const NEW_NONCE = '/nonce-plz'
const NEW_ORDER = '/order-plz'
const ORDER_OBJECTS = /^\/(my-order|finalize-order)\//
const CERTIFICATE = /^\/certZ\//
/** Where the front serves ARI (not a Pebble path). */
export const RENEWAL_INFO_PATH = '/renewal-info'

export const DEFAULT_PROFILES: Readonly<Record<string, string>> = {
  classic: 'The default profile (on Pebble 2.4 every profile gets the same lifetime)',
  shortlived: 'Short-lived certificates (on Pebble 2.4 every profile gets the same lifetime)',
}
export const DEFAULT_ARI_RETRY_AFTER_SECONDS = 21_600

export interface AcmeFrontOptions extends CaProxyOptions {
  /**
   * `meta.profiles` of the directory (name -> description). Default `DEFAULT_PROFILES` (classic, shortlived). An
   * order naming a profile not listed gets `invalidProfile`; `{}` advertises none and lets any `profile` through.
   * A profile does not change the lifetime: Pebble 2.4 has one (`certificateValidityPeriod`).
   */
  profiles?: Record<string, string>
  /** Advertise and serve ARI; default true. false plays a CA without ARI. */
  renewalInfo?: boolean
  /** `Retry-After` of ARI answers unless scripted, in seconds; default 21600 (6 hours). */
  ariRetryAfterSeconds?: number
}

export interface AcmeFront extends CaProxy {
  /** ARI base URL as announced to a client that uses `directoryUrl`. */
  renewalInfoUrl: string
  /** Every newOrder that reached the front (rules aside), in order, with `replaces`, `profile` and what it got. */
  orders: FrontOrder[]
  /** Every certificate downloaded through the front, with its CertID. */
  certificates: IssuedCertificate[]
  /** Every ARI GET answered: CertID, time, status. */
  ariRequests: Array<{ certId: string; at: Date; status: number }>
  /** CertIDs replaced by a valid order (order URL as value); a newOrder replacing one again gets 409 alreadyReplaced. */
  replaced: ReadonlyMap<string, string>
  /** Scripts the ARI answers for a certificate, by CertID or serial (hex); replaces any earlier script for it. */
  setAri(certIdOrSerial: string, script: AriScript): void
  /** Moves the certificate's window into the past (how a CA says "renew now"); other script fields may be added. */
  renewNow(certIdOrSerial: string, extra?: Omit<AriScript, 'window'>): void
  /** Back to the default window for one certificate, or for all. */
  clearAri(certIdOrSerial?: string): void
  /** The next `times` (default 1) newOrders carrying `replaces` get this problem instead of reaching Pebble. */
  rejectReplaces(rule: { type: ReplacesProblem; times?: number; detail?: string }): void
}

function json(status: number, headers: Record<string, string>, body: unknown): ProxyAnswer {
  return { status, headers, body: Buffer.from(JSON.stringify(body)) }
}

/** The JSON payload of a flattened JWS, or undefined when it is not one (Pebble then answers malformed itself). */
function jwsPayload(body: Buffer): NewOrderPayload | undefined {
  try {
    const jws = JSON.parse(body.toString('utf8')) as { payload?: unknown }
    if (typeof jws.payload !== 'string') return undefined
    const payload = JSON.parse(Buffer.from(jws.payload, 'base64url').toString('utf8')) as unknown
    return typeof payload === 'object' && payload !== null ? (payload as NewOrderPayload) : undefined
  } catch {
    return undefined
  }
}

function parseJson(answer: ProxyAnswer): unknown {
  try {
    return JSON.parse(answer.body.toString('utf8'))
  } catch {
    return undefined
  }
}

/** A problem document with a fresh Pebble nonce, as a CA sends it: the client's next request must still work. */
async function problem(
  upstream: Upstream,
  exchange: ProxyExchange,
  p: { status: number; type: string; detail: string },
): Promise<ProxyAnswer> {
  const host = exchange.headers.host ?? '127.0.0.1'
  const nonce = await upstream({ method: 'HEAD', path: NEW_NONCE, headers: { host }, body: Buffer.alloc(0) })
  const replayNonce = nonce.headers['replay-nonce']
  if (typeof replayNonce !== 'string') throw new Error(`Pebble gave no nonce (HTTP ${nonce.status})`)
  return json(
    p.status,
    {
      'content-type': 'application/problem+json',
      'replay-nonce': replayNonce,
      link: `<https://${host}${DIRECTORY}>;rel="index"`,
      'cache-control': 'no-store',
    },
    { type: p.type, detail: p.detail, status: p.status },
  )
}

export async function startAcmeFront(options: AcmeFrontOptions): Promise<AcmeFront> {
  const profiles = options.profiles ?? DEFAULT_PROFILES
  const ari = options.renewalInfo !== false
  const book = new OrderBook(profiles)
  const renewal = new RenewalInfo(options.ariRetryAfterSeconds ?? DEFAULT_ARI_RETRY_AFTER_SECONDS)

  const proxy = await startCaProxyWith(options, {
    async intercept(exchange, upstream) {
      const { method, path } = exchange
      if (ari && (path === RENEWAL_INFO_PATH || path.startsWith(`${RENEWAL_INFO_PATH}/`))) {
        if (method !== 'GET') {
          const type = 'urn:ietf:params:acme:error:malformed'
          return json(405, { allow: 'GET', 'content-type': 'application/problem+json' }, { type, status: 405 })
        }
        const a = renewal.answer(path.slice(RENEWAL_INFO_PATH.length + 1))
        return json(a.status, a.headers, a.body)
      }
      if (method === 'POST' && path === NEW_ORDER) {
        const payload = jwsPayload(exchange.body)
        const refused = payload && book.decide(payload)
        if (payload && refused) {
          book.record(payload, refused.status, { problem: refused.type })
          return problem(upstream, exchange, refused)
        }
      }
      return undefined
    },
    async transform(exchange, answer) {
      const { method, path } = exchange
      if (method === 'GET' && path === DIRECTORY && answer.status === 200) {
        const dir = parseJson(answer) as { meta?: Record<string, unknown> } | undefined
        if (!dir) return answer
        const host = exchange.headers.host ?? '127.0.0.1'
        const extra: Record<string, unknown> = ari ? { renewalInfo: `https://${host}${RENEWAL_INFO_PATH}` } : {}
        const meta = Object.keys(profiles).length > 0 ? { ...dir.meta, profiles } : dir.meta
        return json(200, answer.headers as Record<string, string>, { ...dir, ...extra, meta })
      }
      if (method === 'POST' && path === NEW_ORDER) {
        const payload = jwsPayload(exchange.body)
        if (payload) {
          const location = answer.headers.location
          const order = answer.status === 201 ? parseJson(answer) : undefined
          const problemType =
            answer.status >= 400 ? (parseJson(answer) as { type?: string } | undefined)?.type : undefined
          book.record(payload, answer.status, {
            url: typeof location === 'string' ? location : undefined,
            order,
            problem: problemType,
          })
        }
        return answer
      }
      if (method === 'POST' && ORDER_OBJECTS.test(path) && answer.status < 300) book.observe(parseJson(answer))
      if (method === 'POST' && CERTIFICATE.test(path) && answer.status === 200) {
        const pem = answer.body.toString('utf8')
        if (pem.includes('-----BEGIN CERTIFICATE-----')) {
          const cert = renewal.add(pem)
          book.certificateSeen(path, cert.certId)
        }
      }
      return answer
    },
  })

  return Object.assign(proxy, {
    renewalInfoUrl: `https://127.0.0.1:${proxy.port}${RENEWAL_INFO_PATH}`,
    orders: book.orders,
    certificates: renewal.certificates,
    ariRequests: renewal.polls,
    replaced: book.replaced,
    setAri: (key: string, script: AriScript) => renewal.script(key, script),
    renewNow: (key: string, extra: Omit<AriScript, 'window'> = {}) => renewal.script(key, { ...extra, window: 'past' }),
    clearAri: (key?: string) => renewal.clear(key),
    rejectReplaces: (rule: { type: ReplacesProblem; times?: number; detail?: string }) => book.rejectReplaces(rule),
  })
}
