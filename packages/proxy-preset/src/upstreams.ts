// The upstreams of one route when it has several or a health check: which one a request goes to (round robin over
// those up), passive ejection on connection errors, active health checks, and one retry on another upstream when a
// connection fails before the upstream could have seen the request. A route with one upstream and no health check
// never gets here: it dispatches straight to a shared Agent, with no work per request beyond undici's own.
//
// It is an undici Dispatcher, given to reply-from as its `undici` instance: reply-from calls request(), which calls
// dispatch() here with undici's (legacy-style) request handler; a small wrapper around that handler watches for the
// failure and dispatches again to another upstream's Pool.
import type { Stream } from 'node:stream'
import { Dispatcher, Pool } from 'undici'
import type { ResolvedHealthCheck, ResolvedRoute } from './route-options.js'

/** Errors raised while connecting: the request never left the proxy, whatever its method. */
const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EHOSTDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
])
/** Errors on an established connection before any response byte: the upstream may have seen the request. */
const RESET_CODES = new Set(['ECONNRESET', 'UND_ERR_SOCKET', 'EPIPE', 'UND_ERR_CLOSED'])
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

export interface UpstreamHealth {
  healthy: boolean
  checked: boolean
  lastError?: string
}

function errorCode(error: unknown): string | undefined {
  let current: unknown = error
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === 'string' && (CONNECT_CODES.has(code) || RESET_CODES.has(code))) return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

/** A body that can be sent again: none, a buffer or string, or a stream nothing has read yet. */
function replayable(body: unknown): boolean {
  if (body === undefined || body === null || typeof body === 'string' || Buffer.isBuffer(body)) return true
  const stream = body as Stream & { readableDidRead?: boolean; destroyed?: boolean }
  return typeof stream.pipe === 'function' && stream.readableDidRead === false && stream.destroyed !== true
}

class Upstream {
  /** The active checks' verdict (true until they say otherwise). */
  up = true
  checked = false
  successes = 0
  failures = 0
  /** Passive ejection: out of rotation until then (Date.now() ms), or until the active checks see it up. */
  ejectedUntil = 0
  lastError: string | undefined
  checking = false
  constructor(
    readonly origin: string,
    readonly pool: Pool,
  ) {}
  healthy(now: number): boolean {
    return this.up && now >= this.ejectedUntil
  }
}

type LegacyHandler = Dispatcher.DispatchHandler & {
  onConnect?: (abort: (err?: Error) => void, context?: unknown) => void
  onError?: (err: Error) => void
  onHeaders?: (...args: unknown[]) => boolean
  onUpgrade?: (...args: unknown[]) => void
}

export class UpstreamSet extends Dispatcher {
  readonly #upstreams: Upstream[]
  readonly #ejectMs: number
  readonly #passive: boolean
  readonly #check: ResolvedHealthCheck | undefined
  #timer: NodeJS.Timeout | undefined
  #next = 0
  #closed = false

  constructor(route: ResolvedRoute) {
    super()
    const settings = {
      connect: { timeout: route.connectMs },
      headersTimeout: route.responseMs,
      bodyTimeout: route.idleMs,
    }
    this.#upstreams = route.upstreams.map((origin) => new Upstream(origin, new Pool(origin, settings)))
    this.#ejectMs = route.ejectMs
    this.#passive = this.#upstreams.length > 1
    this.#check = route.healthCheck
    if (this.#check !== undefined) {
      this.#timer = setInterval(() => this.#checkAll(), this.#check.intervalMs)
      this.#timer.unref()
      this.#checkAll()
    }
  }

  /** Health of one upstream (by origin), for /metrics and /status. */
  health(origin: string): UpstreamHealth {
    const u = this.#upstreams.find((x) => x.origin === origin)
    if (u === undefined) return { healthy: true, checked: false }
    const out: UpstreamHealth = { healthy: u.healthy(Date.now()), checked: u.checked }
    if (u.lastError !== undefined) out.lastError = u.lastError
    return out
  }

  /** Takes over the state of the same upstreams in a previous generation's set (a reload keeps what it knew). */
  inherit(previous: UpstreamSet): void {
    for (const u of this.#upstreams) {
      const old = previous.#upstreams.find((x) => x.origin === u.origin)
      if (old === undefined) continue
      u.up = old.up
      u.checked = old.checked
      u.successes = old.successes
      u.failures = old.failures
      u.ejectedUntil = old.ejectedUntil
      u.lastError = old.lastError
    }
  }

  /** The next upstream in rotation among those up; all of them when none is (a request still gets its chance). */
  pick(exclude?: Upstream): Upstream | undefined {
    const list = this.#upstreams
    const n = list.length
    if (n === 1) return exclude === list[0] ? undefined : list[0]
    const now = Date.now()
    const start = this.#next++ % n
    if (this.#next > 1e9) this.#next = 0
    for (let i = 0; i < n; i++) {
      const u = list[(start + i) % n]!
      if (u !== exclude && u.healthy(now)) return u
    }
    if (exclude !== undefined) {
      // A retry goes to another upstream even if it is marked down; a first try to any.
      for (let i = 0; i < n; i++) {
        const u = list[(start + i) % n]!
        if (u !== exclude) return u
      }
      return undefined
    }
    return list[start]
  }

  /** The origin a websocket upgrade should connect to, and how to report the result. */
  pickOrigin(exclude?: string): { origin: string; failed: (error: unknown) => void } | undefined {
    const u = this.pick(this.#upstreams.find((x) => x.origin === exclude))
    if (u === undefined) return undefined
    return { origin: u.origin, failed: (error) => this.#failed(u, error) }
  }

  #failed(u: Upstream, error: unknown): void {
    const code = errorCode(error)
    if (code === undefined) return
    u.lastError = code
    if (!this.#passive) return
    u.ejectedUntil = Date.now() + this.#ejectMs
    u.successes = 0
  }

  override dispatch(opts: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    const first = this.pick()!
    return this.#send(first, opts, handler as LegacyHandler, false)
  }

  #send(u: Upstream, opts: Dispatcher.DispatchOptions, handler: LegacyHandler, retried: boolean): boolean {
    let started = false
    const wrapper = {
      onConnect: (abort: (err?: Error) => void, context?: unknown) => handler.onConnect?.(abort, context),
      onHeaders: (...args: unknown[]) => {
        started = true
        return handler.onHeaders!(...args)
      },
      onUpgrade: (...args: unknown[]) => {
        started = true
        handler.onUpgrade?.(...args)
      },
      onData: (chunk: Buffer) => (handler as { onData: (c: Buffer) => boolean }).onData(chunk),
      onComplete: (trailers: unknown) => (handler as { onComplete: (t: unknown) => void }).onComplete(trailers),
      onBodySent: (chunk: unknown) => (handler as { onBodySent?: (c: unknown) => void }).onBodySent?.(chunk),
      onRequestSent: () => (handler as { onRequestSent?: () => void }).onRequestSent?.(),
      onResponseStarted: () => (handler as { onResponseStarted?: () => void }).onResponseStarted?.(),
      onError: (err: Error) => {
        const code = errorCode(err)
        if (code !== undefined) this.#failed(u, err)
        if (!started && !retried && code !== undefined && !this.#closed) {
          const safe = CONNECT_CODES.has(code) || IDEMPOTENT.has(opts.method)
          if (safe && replayable(opts.body)) {
            const other = this.pick(u)
            if (other !== undefined) {
              this.#send(other, opts, handler, true)
              return
            }
          }
        }
        handler.onError!(err)
      },
    } as unknown as LegacyHandler
    return u.pool.dispatch({ ...opts, origin: u.origin }, wrapper)
  }

  #checkAll(): void {
    const check = this.#check!
    for (const u of this.#upstreams) {
      if (u.checking || this.#closed) continue
      u.checking = true
      u.pool
        .request({ path: check.path, method: 'GET', signal: AbortSignal.timeout(check.timeoutMs) })
        .then(
          async (res) => {
            await res.body.dump().catch(() => {})
            return res.statusCode >= 200 && res.statusCode < 400 ? undefined : `status ${res.statusCode}`
          },
          (err: unknown) => errorCode(err) ?? ((err as Error).name === 'TimeoutError' ? 'timeout' : 'check failed'),
        )
        .then((problem) => {
          u.checking = false
          u.checked = true
          if (problem === undefined) {
            u.failures = 0
            if (++u.successes >= check.healthyThreshold) {
              u.up = true
              u.ejectedUntil = 0
            }
          } else {
            u.lastError = problem
            u.successes = 0
            if (++u.failures >= check.unhealthyThreshold) u.up = false
          }
        })
    }
  }

  override close(): Promise<void>
  override close(callback: () => void): void
  override close(callback?: () => void): Promise<void> | void {
    this.#stop()
    const done = Promise.all(this.#upstreams.map((u) => u.pool.close())).then(() => {})
    if (callback === undefined) return done
    void done.then(callback, callback)
  }

  override destroy(): Promise<void>
  override destroy(err: Error | null): Promise<void>
  override destroy(callback: () => void): void
  override destroy(err: Error | null, callback: () => void): void
  override destroy(a?: unknown, b?: unknown): Promise<void> | void {
    this.#stop()
    const err = a instanceof Error ? a : null
    const callback = (typeof a === 'function' ? a : b) as (() => void) | undefined
    const done = Promise.all(this.#upstreams.map((u) => u.pool.destroy(err))).then(() => {})
    if (callback === undefined) return done
    void done.then(callback, callback)
  }

  #stop(): void {
    this.#closed = true
    if (this.#timer !== undefined) clearInterval(this.#timer)
    this.#timer = undefined
  }
}
