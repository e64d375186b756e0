// SNI -> certificate, in memory. This is the hot path of every handshake: one normalisation and one or two Map lookups,
// no I/O, no awaits. Secure contexts are built lazily on the first handshake for a name (and rebuilt only when the
// certificate changes), so a store of many names costs little memory until they are used. Challenge certificates
// live in a separate map that only the TLS-ALPN-01 responder reads, so a normal client can never get one.
import { createSecureContext, type SecureContext } from 'node:tls'
import { normalizeServerName } from './names.js'

export interface KeyCertPair {
  key: string
  cert: string
}

interface Entry {
  pair: KeyCertPair
  context: SecureContext | undefined
  /** Told when the lazy context cannot be built (the entry is gone by then). */
  onInvalid?: ((err: Error) => void) | undefined
}

export type SniCallback = (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void

/** What the SNI callback's `this` is: the server-side TLS socket, over its TCP socket (`_parent`). */
interface SniSocket {
  remoteAddress?: string
  _parent?: { write(data: Uint8Array): boolean; end(): void; writable?: boolean }
}

/**
 * A fatal `unrecognized_name` alert (RFC 6066), as a plaintext TLS record: nothing of the handshake has been sent yet
 * when the server name is looked at, so the client gets a clear verdict instead of a bare end of connection.
 */
const UNRECOGNIZED_NAME_ALERT = Buffer.from([0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x70])

/** Ends a handshake for a name we have no certificate for: the alert on the TCP socket, else Node's own failure. */
function refuse(socket: SniSocket | undefined, cb: (err: Error | null) => void, err: Error): void {
  const tcp = socket?._parent
  if (tcp && typeof tcp.write === 'function' && tcp.writable !== false) {
    tcp.write(UNRECOGNIZED_NAME_ALERT)
    tcp.end()
    return
  }
  cb(err)
}

/**
 * Asked for a name the resolver has no certificate for (on-demand TLS): resolves with the certificate to serve, or
 * rejects to fail the handshake. Returns undefined to decline at once (the fallback, or a failed handshake, follows).
 */
export type UnknownNameHandler = (
  servername: string,
  remoteAddress: string | undefined,
) => Promise<KeyCertPair> | undefined

export class CertResolver {
  readonly #certs = new Map<string, Entry>()
  readonly #challenges = new Map<string, SecureContext>()
  #fallback: Entry | undefined
  #unknown: UnknownNameHandler | undefined
  /** Counts handshakes answered per outcome; cheap integers, read by the status decorator and benchmarks. */
  readonly stats = { hits: 0, misses: 0, contextsBuilt: 0, contextsFailed: 0 }

  /** Installs (or atomically replaces) the certificate served for `name`; handshakes already running keep theirs. */
  set(name: string, pair: KeyCertPair): void {
    // Build the context now: a bad pair fails here, in the caller, rather than in a client's handshake.
    const context = createSecureContext({ key: pair.key, cert: pair.cert })
    this.stats.contextsBuilt++
    this.#certs.set(normalizeServerName(name), { pair, context })
  }

  /**
   * Installs one pair for several names (a certificate with many SANs) with one secure context, and only after
   * it was built: a bad pair changes nothing served.
   */
  setMany(names: readonly string[], pair: KeyCertPair): void {
    const context = createSecureContext({ key: pair.key, cert: pair.cert })
    this.stats.contextsBuilt++
    const entry = { pair, context }
    for (const name of names) this.#certs.set(normalizeServerName(name), entry)
  }

  /**
   * Like set(), but defers building the context to the first handshake (for loading many cached names). If it
   * cannot be built then (a key that does not match its certificate), the entry is removed, that handshake is
   * answered as for an unknown name, and `onInvalid` is told (asynchronously, outside the handshake).
   */
  setLazy(name: string, pair: KeyCertPair, onInvalid?: (err: Error) => void): void {
    this.#certs.set(normalizeServerName(name), { pair, context: undefined, onInvalid })
  }

  delete(name: string): void {
    this.#certs.delete(normalizeServerName(name))
  }

  has(name: string): boolean {
    return this.#certs.has(normalizeServerName(name))
  }

  get(name: string): KeyCertPair | undefined {
    return this.#certs.get(normalizeServerName(name))?.pair
  }

  names(): string[] {
    return [...this.#certs.keys()]
  }

  get size(): number {
    return this.#certs.size
  }

  /** The certificate for names we do not manage (and, via the server's own options, for clients without SNI). */
  setFallback(pair: KeyCertPair | undefined): void {
    this.#fallback = pair ? { pair, context: createSecureContext({ key: pair.key, cert: pair.cert }) } : undefined
  }

  /**
   * Synchronous lookup used by SNICallback: the name's own entry, else a `*.parent` entry (one label, as certificate
   * wildcards match), else the fallback; undefined means "no certificate for this name".
   */
  lookup(servername: string, withFallback = true): SecureContext | undefined {
    const name = normalizeServerName(servername)
    let key = name
    let entry = this.#certs.get(name)
    if (entry === undefined) {
      const dot = name.indexOf('.')
      if (dot > 0) {
        key = `*${name.slice(dot)}`
        entry = this.#certs.get(key)
      }
    }
    if (entry !== undefined && entry.context === undefined && !this.#build(key, entry))
      return this.lookup(servername, withFallback)
    if (withFallback) entry ??= this.#fallback
    if (entry === undefined) {
      this.stats.misses++
      return undefined
    }
    this.stats.hits++
    return entry.context
  }

  /** Builds a lazy entry's context; on failure removes the entry (so the caller looks up again) and says so. */
  #build(key: string, entry: Entry): boolean {
    try {
      entry.context = createSecureContext({ key: entry.pair.key, cert: entry.pair.cert })
      this.stats.contextsBuilt++
      return true
    } catch (err) {
      this.stats.contextsFailed++
      if (this.#certs.get(key) === entry) this.#certs.delete(key)
      const notify = entry.onInvalid
      if (notify) queueMicrotask(() => notify(err as Error))
      return false
    }
  }

  /** Sets (or clears) who is asked about names without a certificate (on-demand TLS). */
  setUnknownNameHandler(handler: UnknownNameHandler | undefined): void {
    this.#unknown = handler
  }

  /**
   * SNICallback for the public TLS server (Node calls it with the TLS socket as `this`). A known name is answered
   * at once; only a name without a certificate, with an unknown-name handler set, waits for the handler.
   */
  readonly sni: SniCallback = (() => {
    const resolver = this
    return function sni(this: SniSocket | undefined, servername, cb) {
      const ctx = resolver.lookup(servername, resolver.#unknown === undefined)
      if (ctx !== undefined) {
        cb(null, ctx)
        return
      }
      const pending = resolver.#unknown?.(servername, this?.remoteAddress)
      if (pending === undefined) {
        const fallback = resolver.#unknown === undefined ? undefined : resolver.#fallback?.context
        if (fallback) cb(null, fallback)
        else refuse(this, cb, new Error(`no certificate for server name ${JSON.stringify(servername).slice(0, 300)}`))
        return
      }
      pending.then(
        (pair) => {
          const built = resolver.lookup(servername, false)
          cb(null, built ?? createSecureContext({ key: pair.key, cert: pair.cert }))
        },
        (err: Error) => refuse(this, cb, err),
      )
    } as SniCallback
  })()

  // --- TLS-ALPN-01 challenge certificates -------------------------------------------------------------------

  #challengeLookup: ((name: string) => Promise<boolean>) | undefined

  /**
   * Where to look for a challenge this process does not hold when a validator asks for one (another instance's
   * pending order, through shared storage): resolves true once it is installed here with setChallenge().
   */
  setChallengeLookup(lookup: ((name: string) => Promise<boolean>) | undefined): void {
    this.#challengeLookup = lookup
  }

  /** Looks for another instance's challenge for `name` (false without a lookup, or when there is none). */
  async lookupChallenge(name: string): Promise<boolean> {
    if (!this.#challengeLookup) return false
    return this.#challengeLookup(normalizeServerName(name)).catch(() => false)
  }

  setChallenge(name: string, pair: KeyCertPair): void {
    this.#challenges.set(normalizeServerName(name), createSecureContext({ key: pair.key, cert: pair.cert }))
  }

  deleteChallenge(name: string): void {
    this.#challenges.delete(normalizeServerName(name))
  }

  hasChallenge(name: string): boolean {
    return this.#challenges.has(normalizeServerName(name))
  }

  /** Names whose challenge another instance announced and that are being read from storage. */
  readonly #expected = new Set<string>()

  /** Another instance announced a challenge for `name`: peek from now on, until it is installed or found gone. */
  expectChallenge(name: string, expected: boolean): void {
    if (expected) this.#expected.add(normalizeServerName(name))
    else this.#expected.delete(normalizeServerName(name))
  }

  /** True while any TLS-ALPN-01 challenge is pending: only then do connections need the ClientHello peek. */
  get challengesPending(): boolean {
    return this.#challenges.size > 0 || this.#expected.size > 0
  }

  /** SNICallback for the challenge-only TLS server: challenge certificates and nothing else. */
  readonly challengeSni: SniCallback = (servername, cb) => {
    const ctx = this.#challenges.get(normalizeServerName(servername))
    if (ctx === undefined) cb(new Error('no pending TLS-ALPN-01 challenge for this name'))
    else cb(null, ctx)
  }
}
