// Challenges shared by every instance on one storage. Behind a load balancer the CA's validator may reach any
// instance, not the one whose order is pending: the presenting instance stores the challenge (the key authorization,
// and for TLS-ALPN-01 the challenge certificate) before the CA is asked to validate, the others hear of it through
// storage.watch() and install it locally; HTTP-01 tokens are also read through from storage on a miss. Only storages
// with watch() share: on one with no peers to tell, the challenge stays in memory as before.
import type { FastifyBaseLogger } from 'fastify'
import type { ChallengeToPresent } from '../acme.js'
import type { CertResolver } from '../resolver.js'
import {
  isUnreachable,
  keys,
  type Storage,
  type StorageChange,
  type StorageWatch,
  segmentName,
} from '../storage/index.js'
import type { ChallengeResponder } from './challenges.js'

/** How long a presenting instance waits for its own notification to come back through the storage. */
const ECHO_TIMEOUT_MS = 2_000
/**
 * After its own notification came back, the time given to the others to read and install the challenge before the
 * CA is told to validate (one storage read on their side).
 */
const PEER_SETTLE_MS = 100
const PEER_SETTLE_MAX_MS = 1_000
/**
 * Another instance's challenge is taken down after this long even if its removal was never heard (that instance
 * was killed mid-order): no order waits longer for its validation.
 */
const REMOTE_TTL_MS = 10 * 60_000

interface StoredChallenge {
  name: string
  type: 'tls-alpn-01' | 'http-01'
  token: string
  keyAuthorization: string
  tlsAlpn?: { key: string; cert: string }
  /** The instance that presented it (pid@host), for the logs of the others. */
  by: string
}

function parse(raw: Buffer | undefined): StoredChallenge | undefined {
  if (!raw) return undefined
  try {
    const value = JSON.parse(raw.toString('utf8')) as StoredChallenge
    return typeof value?.name === 'string' && typeof value.keyAuthorization === 'string' ? value : undefined
  } catch {
    return undefined
  }
}

export interface SharedChallengesDeps {
  storage: Storage & { watch: NonNullable<Storage['watch']> }
  /** The storage folder of the first issuer: challenges of every issuer's orders are kept there. */
  dir: string
  resolver: CertResolver
  log: FastifyBaseLogger
  /** pid@host of this instance. */
  self: string
}

export class SharedChallenges {
  readonly #d: SharedChallengesDeps
  readonly #watch: StorageWatch
  /** TLS-ALPN-01 names installed in the resolver from another instance's record (never our own). */
  readonly #remoteNames = new Set<string>()
  /** HTTP-01 tokens of other instances: token -> key authorization. */
  readonly #remoteTokens = new Map<string, string>()
  /** Keys this instance wrote and waits to hear back. */
  readonly #echoes = new Map<string, () => void>()
  /** Keys of this instance's own pending challenges (their notifications install nothing here). */
  readonly #own = new Set<string>()

  constructor(deps: SharedChallengesDeps) {
    this.#d = deps
    this.#watch = deps.storage.watch(keys.challenges(deps.dir), (change) => this.#changed(change))
  }

  #closed = false

  close(): void {
    this.#closed = true
    void this.#watch.close()
    for (const timer of this.#expiry.values()) clearTimeout(timer)
    this.#expiry.clear()
    for (const name of this.#remoteNames) this.#d.resolver.deleteChallenge(name)
    this.#remoteNames.clear()
    this.#remoteTokens.clear()
  }

  /** The key authorization of a pending HTTP-01 token of another instance (from memory, else from storage). */
  async http01Answer(token: string): Promise<string | undefined> {
    const known = this.#remoteTokens.get(token)
    if (known !== undefined) return known
    const record = parse(await this.#d.storage.get(keys.http01Challenge(this.#d.dir, token)).catch(() => undefined))
    return record?.type === 'http-01' && record.token === token ? record.keyAuthorization : undefined
  }

  /**
   * A validator reached this instance for `name` before the notification of another instance's challenge did:
   * read it from storage and install it. True when it is installed.
   */
  async tlsAlpnLookup(name: string): Promise<boolean> {
    await this.#read(keys.tlsAlpnChallenge(this.#d.dir, name))
    return this.#remoteNames.has(name)
  }

  /** Wraps a responder so that what it presents is also stored for the other instances. */
  share(inner: ChallengeResponder): ChallengeResponder {
    return {
      type: inner.type,
      available: () => inner.available(),
      present: async (c, signal) => {
        await inner.present(c, signal)
        await this.#publish(c)
      },
      remove: async (c) => {
        await inner.remove(c)
        await this.#withdraw(c)
      },
    }
  }

  #key(c: { type: string; name: string; token: string }): string | undefined {
    if (c.type === 'tls-alpn-01') return keys.tlsAlpnChallenge(this.#d.dir, c.name)
    if (c.type === 'http-01') return keys.http01Challenge(this.#d.dir, c.token)
    return undefined
  }

  async #publish(c: ChallengeToPresent): Promise<void> {
    const key = this.#key(c)
    if (key === undefined) return
    const record: StoredChallenge = {
      name: c.name,
      type: c.type as StoredChallenge['type'],
      token: c.token,
      keyAuthorization: c.keyAuthorization,
      ...(c.tlsAlpn ? { tlsAlpn: c.tlsAlpn } : {}),
      by: this.#d.self,
    }
    this.#own.add(key)
    const echoed = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), ECHO_TIMEOUT_MS)
      this.#echoes.set(key, () => {
        clearTimeout(timer)
        resolve(true)
      })
    })
    const sent = performance.now()
    try {
      await this.#d.storage.put(key, JSON.stringify(record))
    } catch (err) {
      this.#echoes.delete(key)
      // A storage that cannot be reached (a shared store's outage): the order stops and pauses, rather than have a
      // validation reaching another instance fail at the CA.
      if (isUnreachable(err)) {
        this.#own.delete(key)
        throw err
      }
      // Any other failure (a full disk): this instance still answers; only validations reaching another one fail.
      this.#d.log.warn(
        { name: c.name, type: c.type, err },
        'fastify-acme: could not share a challenge with the other instances; answering it here only',
      )
      return
    }
    // Our own notification coming back means the others have been told too; give them a moment to read it: as
    // long as the round trip took us, several times over on a busy machine, within bounds.
    if (await echoed) {
      const settle = Math.min(PEER_SETTLE_MAX_MS, Math.max(PEER_SETTLE_MS, 4 * (performance.now() - sent)))
      await new Promise((resolve) => setTimeout(resolve, settle))
    } else this.#d.log.warn({ name: c.name, type: c.type }, 'fastify-acme: no notification of a shared challenge')
    this.#echoes.delete(key)
  }

  async #withdraw(c: ChallengeToPresent): Promise<void> {
    const key = this.#key(c)
    if (key === undefined) return
    this.#own.delete(key)
    await this.#d.storage.delete(key).catch((err: Error) => {
      this.#d.log.warn({ name: c.name, type: c.type, err }, 'fastify-acme: could not delete a shared challenge')
    })
  }

  #changed(change: StorageChange): void {
    if (change.type !== 'changed') return
    const echo = this.#echoes.get(change.key)
    if (echo) echo()
    if (this.#own.has(change.key)) return
    void this.#read(change.key)
  }

  /** The name a TLS-ALPN-01 challenge key stands for, or undefined for other keys. */
  #tlsAlpnName(key: string): string | undefined {
    const folder = `${keys.challenges(this.#d.dir)}tls-alpn-01/`
    if (!key.startsWith(folder) || !key.endsWith('.json')) return undefined
    return segmentName(key.slice(folder.length, -'.json'.length))
  }

  /** Expiry of each installed remote challenge, per storage key: replaced with it, cleared when it goes. */
  readonly #expiry = new Map<string, NodeJS.Timeout>()

  #expireLater(key: string, expire: () => void): void {
    clearTimeout(this.#expiry.get(key))
    const timer = setTimeout(() => {
      this.#expiry.delete(key)
      expire()
    }, REMOTE_TTL_MS)
    timer.unref()
    this.#expiry.set(key, timer)
  }

  #cancelExpiry(key: string): void {
    clearTimeout(this.#expiry.get(key))
    this.#expiry.delete(key)
  }

  /** A remote TLS-ALPN-01 challenge whose removal was not heard: gone unless storage still holds it. */
  async #expire(key: string, token: string): Promise<void> {
    const still = parse(await this.#d.storage.get(key).catch(() => undefined))
    if (still?.token === token) {
      // Still stored (its instance died mid-order): delete it, which tells everyone to take it down. A newer
      // challenge for the same name (another attempt) has another token and stays.
      await this.#d.storage.delete(key).catch(() => {})
    }
    await this.#read(key)
  }

  /** Reads in flight, per key: a validator's hello waits for the read its notification started. */
  readonly #reading = new Map<string, Promise<void>>()
  /** Keys notified again while their read ran: read once more after it (the change may have come too late for it). */
  readonly #readAgain = new Set<string>()

  /** Installs (or removes) another instance's challenge as storage now holds it. */
  #read(key: string): Promise<void> {
    if (this.#closed) return Promise.resolve()
    const running = this.#reading.get(key)
    if (running) {
      this.#readAgain.add(key)
      return running
    }
    const name = this.#tlsAlpnName(key)
    // From the notification on, connections are peeked: a validator's hello for `name` waits for this read.
    if (name !== undefined) this.#d.resolver.expectChallenge(name, true)
    const read = this.#install(key, name).finally(() => {
      this.#reading.delete(key)
      if (name !== undefined) this.#d.resolver.expectChallenge(name, false)
      if (this.#readAgain.delete(key)) void this.#read(key)
    })
    this.#reading.set(key, read)
    return read
  }

  /** `name`: the name of a TLS-ALPN-01 challenge key (#tlsAlpnName), undefined for an HTTP-01 one. */
  async #install(key: string, name: string | undefined): Promise<void> {
    const { storage, resolver, log } = this.#d
    const record = parse(await storage.get(key).catch(() => undefined))
    if (this.#own.has(key)) return
    if (name !== undefined) {
      if (record?.type === 'tls-alpn-01' && record.tlsAlpn) {
        try {
          resolver.setChallenge(record.name, record.tlsAlpn)
        } catch (err) {
          log.warn({ name: record.name, err }, 'fastify-acme: a shared TLS-ALPN-01 challenge could not be installed')
          return
        }
        this.#remoteNames.add(record.name)
        this.#expireLater(key, () => void this.#expire(key, record.token))
        log.info(
          { name: record.name, by: record.by },
          "fastify-acme: answering another instance's TLS-ALPN-01 challenge",
        )
      } else if (!record && this.#remoteNames.delete(name)) {
        // Removed by the instance that presented it: take ours down (never a challenge this instance presents).
        this.#cancelExpiry(key)
        resolver.deleteChallenge(name)
      }
      return
    }
    if (record?.type === 'http-01') {
      this.#remoteTokens.set(record.token, record.keyAuthorization)
      this.#expireLater(key, () => this.#remoteTokens.delete(record.token))
    } else if (!record) {
      this.#cancelExpiry(key)
      // `<dir>/challenges/http-01/t<token>.json` (keys.http01Challenge)
      const file = key.slice(key.lastIndexOf('/') + 1)
      this.#remoteTokens.delete(file.slice(1, -'.json'.length))
    }
  }
}
