// The ACME account of one issuer, and the key of TLS-ALPN-01 challenge certificates: loaded from storage or made
// once, under the storage's account lock, and stored before first use (an account registered but not stored would be
// orphaned at the CA and registered again at every attempt).
import { createPrivateKey } from 'node:crypto'
import type { FastifyBaseLogger } from 'fastify'
import { type AccountRecord, createAccount, type DirectoryInfo, fetchDirectory, generateChallengeKey } from '../acme.js'
import { keys, type Storage } from '../storage/index.js'
import type { Issuer } from './issuers.js'

/** Space set aside before an order or a registration (a certificate record is 3-8 KB). */
export const RESERVATION_BYTES = 16 * 1024

export interface AccountDeps {
  storage: Storage
  issuer: Issuer
  log: FastifyBaseLogger
  lockTimeoutMs: number
}

export class AccountKeeper {
  readonly #d: AccountDeps
  #account: Promise<AccountRecord> | undefined
  #directory: Promise<DirectoryInfo> | undefined
  #challengeKey: Promise<string> | undefined

  constructor(deps: AccountDeps) {
    this.#d = deps
  }

  /** The directory, read and checked once per process (a failure is not kept: the next call asks again). */
  directory(signal: AbortSignal): Promise<DirectoryInfo> {
    this.#directory ??= fetchDirectory(this.#d.issuer.directoryUrl, signal)
    const current = this.#directory
    current.catch(() => {
      if (this.#directory === current) this.#directory = undefined
    })
    return current
  }

  /** The account to order with: stored, or registered now. */
  ensure(signal: AbortSignal): Promise<AccountRecord> {
    this.#account ??= this.#loadOrCreate(signal)
    const current = this.#account
    current.catch(() => {
      if (this.#account === current) this.#account = undefined
    })
    return current
  }

  /** The CA no longer knows `stale` (a CA that lost its state, like a restarted test CA): register its key again. */
  reRegister(stale: AccountRecord, signal: AbortSignal): Promise<AccountRecord> {
    const { issuer, storage, log } = this.#d
    log.warn({ accountUrl: stale.url }, 'fastify-acme: the CA does not know our account; registering it again')
    const fresh = createAccount(
      { directoryUrl: issuer.directoryUrl, contact: issuer.contact, eab: issuer.eab, signal },
      stale.keyPem,
    ).then(async (renewed) => {
      await storage.put(keys.account(issuer.dir), JSON.stringify(renewed))
      return renewed
    })
    this.#account = fresh
    fresh.catch(() => {
      if (this.#account === fresh) this.#account = undefined
    })
    return fresh
  }

  /**
   * The RSA key of TLS-ALPN-01 challenge certificates. Kept in storage: it only signs throw-away challenge
   * certificates, and generating it takes a few hundred ms, which would otherwise delay the first order of each start.
   */
  challengeKey(): Promise<string> {
    this.#challengeKey ??= (async () => {
      const { storage, issuer } = this.#d
      const key = keys.challengeKey(issuer.dir)
      const stored = (await storage.get(key).catch(() => undefined))?.toString('utf8')
      if (stored?.includes('PRIVATE KEY')) return stored
      const fresh = await generateChallengeKey()
      await storage.put(key, fresh).catch(() => {})
      return fresh
    })()
    const current = this.#challengeKey
    current.catch(() => {
      if (this.#challengeKey === current) this.#challengeKey = undefined
    })
    return current
  }

  /**
   * Keeps the stored account in memory without contacting the CA (at start), so that it can be put back should a
   * shared storage lose it. A missing or unusable one is left to ensure().
   */
  async remember(): Promise<void> {
    if (this.#account) return
    const raw = await this.#d.storage.get(keys.account(this.#d.issuer.dir)).catch(() => undefined)
    if (!raw || this.#account) return
    const account = parseAccount(raw)
    if (account) this.#account = Promise.resolve(account)
  }

  /**
   * Puts back the account and the challenge key this process holds when the storage no longer has them (a shared
   * store restarted empty), so the other instances do not register a new account. Under the account lock; returns
   * what was put back.
   */
  async reseed(): Promise<string[]> {
    const { storage, issuer, lockTimeoutMs } = this.#d
    const account = await this.#account?.catch(() => undefined)
    const challengeKey = await this.#challengeKey?.catch(() => undefined)
    if (!account && !challengeKey) return []
    const restored: string[] = []
    const lease = await storage.lock(keys.accountLock(issuer.dir), { timeoutMs: lockTimeoutMs })
    try {
      if (account && !(await storage.get(keys.account(issuer.dir)))) {
        await storage.put(keys.account(issuer.dir), JSON.stringify(account))
        restored.push('account')
      }
      if (challengeKey && !(await storage.get(keys.challengeKey(issuer.dir)))) {
        await storage.put(keys.challengeKey(issuer.dir), challengeKey)
        restored.push('challenge key')
      }
    } finally {
      await lease.release()
    }
    return restored
  }

  async #loadOrCreate(signal: AbortSignal): Promise<AccountRecord> {
    const { storage, issuer, log, lockTimeoutMs } = this.#d
    const key = keys.account(issuer.dir)
    const reservation = keys.reservation(issuer.dir, 'account')
    const lease = await storage.lock(keys.accountLock(issuer.dir), { timeoutMs: lockTimeoutMs, signal })
    try {
      const raw = await storage.get(key)
      if (raw) {
        const account = parseAccount(raw)
        if (account) return account
        log.error('fastify-acme: the stored ACME account is unreadable; registering a new account')
      }
      // A URL that is not an ACME directory fails here, with its own code, before anything is registered.
      await this.directory(signal)
      await storage.put(reservation, Buffer.alloc(RESERVATION_BYTES / 4))
      const account = await createAccount({
        directoryUrl: issuer.directoryUrl,
        contact: issuer.contact,
        eab: issuer.eab,
        signal: AbortSignal.any([signal, lease.lost]),
      })
      await storage.delete(reservation)
      await storage.put(key, JSON.stringify(account))
      log.info({ accountUrl: account.url }, 'fastify-acme: ACME account registered')
      return account
    } finally {
      await storage.delete(reservation).catch(() => {})
      await lease.release()
    }
  }
}

/** The stored account, or undefined when it is unreadable or unusable (as good as missing). */
function parseAccount(raw: Buffer): AccountRecord | undefined {
  try {
    const account = JSON.parse(raw.toString('utf8')) as unknown
    return usableAccount(account) ? account : undefined
  } catch {
    return undefined
  }
}

/** A stored account is usable when its key parses and its URL is a URL; a damaged one is as good as missing. */
function usableAccount(value: unknown): value is AccountRecord {
  const account = value as Partial<AccountRecord> | null
  if (typeof account?.keyPem !== 'string' || typeof account.url !== 'string' || !URL.canParse(account.url)) return false
  try {
    createPrivateKey(account.keyPem)
    return true
  } catch {
    return false
  }
}
