// The storage contract: a tiny key/value interface plus a lock, so the plugin can keep its account, certificates
// and retry state anywhere (files by default, memory in tests, a shared store later). Keys are '/'-separated paths
// of safe segments; every put() must be atomic (a reader sees the old value or the new one, never a mix).
import { createHash } from 'node:crypto'
import { ERR_STORAGE_KEY } from '../errors.js'

/**
 * A held lock. `lost` aborts when the storage can no longer promise the lock is still ours (a lease it could not
 * extend, a lock file taken over): whoever holds it must stop the work it guards. The work is then decided again
 * from what storage holds, never guessed.
 */
export interface Lease {
  readonly lost: AbortSignal
  /** Releases the lock if it is still ours; releasing twice is harmless. */
  release(): Promise<void>
}

export interface LockOptions {
  /** Give up (FACME_LOCK_TIMEOUT) after this long; default 30 s. */
  timeoutMs?: number
  signal?: AbortSignal
}

/** What Storage.watch() tells its listener. */
export type StorageChange =
  /** `key` was written or deleted, by this process or another one sharing the storage. */
  | { readonly type: 'changed'; readonly key: string }
  /**
   * Notifications may have been missed (the storage was unreachable and is back, or the channel was re-made): read
   * again whatever matters. Also the moment to put back what a storage restarted empty has lost.
   */
  | { readonly type: 'resync' }
  /** The storage cannot be reached; operations fail until a 'resync'. */
  | { readonly type: 'unreachable'; readonly error: Error }

/** A subscription made by Storage.watch(). */
export interface StorageWatch {
  close(): void | Promise<void>
}

/** True for an error marked `unreachable` (see Storage below), directly or as the cause of a wrapping error. */
export function isUnreachable(err: unknown): boolean {
  for (let e = err as { unreachable?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; depth++) {
    if (e.unreachable === true) return true
    e = e.cause as typeof e
  }
  return false
}

/**
 * A storage failure, thrown as ERR_STORAGE (FACME_STORAGE). A network store sets `unreachable: true` on it when the
 * store cannot be reached right now (not connected, no answer in time): orders then pause until it answers, without
 * counting a failure. Any other failure (a full or read-only disk) counts, with its backoff, and shows in status().
 */
export interface Storage {
  /** The stored bytes, or undefined when the key does not exist. */
  get(key: string): Promise<Buffer | undefined>
  /** Stores atomically, replacing any previous value. */
  put(key: string, value: string | Uint8Array): Promise<void>
  /** Removes the key; removing a missing key is not an error. */
  delete(key: string): Promise<void>
  /** Every key that starts with `prefix` (a folder-like prefix ending in '/' or ''). */
  list(prefix: string): Promise<string[]>
  /**
   * Optional: reads several keys at once; per key the bytes, undefined when it does not exist, or the Error that
   * reading it raised. Used at start to read the cached certificates of many names (see FileStorage.getMany).
   */
  getMany?(keys: readonly string[]): Promise<Array<Buffer | undefined | Error>>
  /**
   * Exclusive lock on `key` across everyone sharing this storage (a lease the storage keeps extending while it is
   * held). Rejects with FACME_LOCK_TIMEOUT when it cannot be had within `timeoutMs`.
   */
  lock(key: string, options?: LockOptions): Promise<Lease>
  /**
   * Optional: true when list() is known to return every key under a prefix, in one call. load() then finds the few
   * names with a retry state or an order in flight by listing, instead of one read per name. Leave it out when
   * list() pages or may miss keys.
   */
  readonly listIsComplete?: boolean
  /**
   * Optional: tells `listener` about changes to keys under `prefix` made by anyone sharing this storage, soon after
   * they happen (best effort: a lost message is caught up by a 'resync' or by the plugin's periodic reconciliation).
   * Several processes sharing one store use it to serve a certificate another one obtained within a second, and to
   * answer a challenge another one presented.
   */
  watch?(prefix: string, listener: (change: StorageChange) => void): StorageWatch
}

const SEGMENT = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/

/** Throws FACME_STORAGE_KEY for keys that could escape the store (absolute, '..', odd bytes). */
export function assertKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0 || key.length > 512) throw new ERR_STORAGE_KEY(JSON.stringify(key))
  for (const segment of key.split('/')) {
    if (!SEGMENT.test(segment) || segment === '..' || segment === '.') throw new ERR_STORAGE_KEY(JSON.stringify(key))
  }
}

/** One folder per ACME directory, so staging and production (or two CAs) never mix. */
export function directoryKey(directoryUrl: string): string {
  const url = new URL(directoryUrl)
  const readable = `${url.host}${url.pathname}`.replace(/[^A-Za-z0-9.-]+/g, '_').replace(/^[_.]+|[_.]+$/g, '')
  const digest = createHash('sha256').update(directoryUrl).digest('hex').slice(0, 8)
  return `${readable.slice(0, 80)}-${digest}`
}

/** A managed name as a storage key segment: `*.example.com` (no `*` in keys) is kept as `_wildcard_.example.com`. */
export function nameSegment(name: string): string {
  return name.startsWith('*.') ? `_wildcard_${name.slice(1)}` : name
}

/** The name a key segment stands for (see nameSegment). */
export function segmentName(segment: string): string {
  return segment.startsWith('_wildcard_.') ? `*${segment.slice('_wildcard_'.length)}` : segment
}

export const keys = {
  account: (dir: string) => `${dir}/account.json`,
  certificate: (dir: string, name: string) => `${dir}/certificates/${nameSegment(name)}.json`,
  certificates: (dir: string) => `${dir}/certificates/`,
  state: (dir: string, name: string) => `${dir}/state/${nameSegment(name)}.json`,
  states: (dir: string) => `${dir}/state/`,
  /** An order in flight: its URL (and, once made, the certificate key), so a restart resumes it. */
  order: (dir: string, name: string) => `${dir}/orders/${nameSegment(name)}.json`,
  orders: (dir: string) => `${dir}/orders/`,
  /** The CA's renewal information (ARI) for a name's certificate, and the renewal time picked in its window. */
  renewalInfo: (dir: string, name: string) => `${dir}/renewal-info/${nameSegment(name)}.json`,
  renewalInfos: (dir: string) => `${dir}/renewal-info/`,
  /** The account's order budget: the times of its recent new orders. */
  orderBudget: (dir: string) => `${dir}/order-budget.json`,
  orderBudgetLock: (dir: string) => `${dir}/locks/order-budget`,
  orderLock: (dir: string, name: string) => `${dir}/locks/${nameSegment(name)}`,
  accountLock: (dir: string) => `${dir}/locks/account`,
  challengeKey: (dir: string) => `${dir}/challenge-key.pem`,
  /** A pending TLS-ALPN-01 challenge of this name (any instance sharing the storage answers it). */
  tlsAlpnChallenge: (dir: string, name: string) => `${dir}/challenges/tls-alpn-01/${nameSegment(name)}.json`,
  /** A pending HTTP-01 token (base64url, so it may start with '-': the 't' keeps the segment a valid key). */
  http01Challenge: (dir: string, token: string) => `${dir}/challenges/http-01/t${token}.json`,
  challenges: (dir: string) => `${dir}/challenges/`,
  /** The TLS session-ticket key every process sharing the storage uses (sessionTickets.shared), and its lock. */
  sessionTicketKey: (dir: string) => `${dir}/session-tickets/current.json`,
  sessionTickets: (dir: string) => `${dir}/session-tickets/`,
  sessionTicketLock: (dir: string) => `${dir}/locks/session-tickets`,
  /** Space held while an order or an account registration runs, so its result is sure to fit. */
  reservation: (dir: string, what: string) => `${dir}/reserved/${nameSegment(what)}`,
}
