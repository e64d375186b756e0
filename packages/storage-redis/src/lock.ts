// The lock with a lease on Redis: `SET key token NX PX ttl` to take it, a token-checked Lua script to extend it
// (every ttl/3 while held) and another to release it. No fencing token: the plugin reads storage again after
// taking the lock, and stops its work when `lost` aborts, which is what keeps it safe. Any failed or refused
// extension counts as a lost lock: a refresh loop that dies quietly on a transient error (as once in
// caddy-storage-redis) would let the lock lapse while the work goes on.
import { randomBytes } from 'node:crypto'
import { ERR_LOCK_TIMEOUT, ERR_STORAGE, type Lease, type LockOptions } from '@autotls/fastify-acme'

/** PEXPIRE only if the lock still holds our token. 1 when extended, 0 when it is gone or someone else's. */
export const EXTEND_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`
/** DEL only if the lock still holds our token, so an old lease never releases the next holder's lock. */
export const RELEASE_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`

/** The commands the lock needs, each already bounded in time and mapped to FACME_STORAGE by the store. */
export interface LockCommands {
  /** SET NX PX: true when taken. */
  tryTake(redisKey: string, token: string, ttlMs: number): Promise<boolean>
  /** EVAL of a script with one key and its arguments; the integer it returns. */
  evalScript(script: string, redisKey: string, args: string[]): Promise<number>
}

/** First wait between two attempts at a held lock; doubled up to POLL_MAX_MS, each with jitter. */
const POLL_MIN_MS = 10
const POLL_MAX_MS = 250

/** Waits `ms`, or rejects with the signal's reason as soon as it aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason)
    const done = () => {
      signal?.removeEventListener('abort', aborted)
      resolve()
    }
    const timer = setTimeout(done, ms)
    const aborted = () => {
      clearTimeout(timer)
      reject(signal?.reason)
    }
    signal?.addEventListener('abort', aborted, { once: true })
  })
}

export interface TakeLock {
  key: string
  redisKey: string
  ttlMs: number
  options: LockOptions
  commands: LockCommands
  /** Called once when the lease ends (released or lost), so the store can forget it. */
  onEnd(lease: RedisLease): void
}

export interface RedisLease extends Lease {
  /** Stops extending and aborts `lost` (the store is closing). */
  abandon(reason: Error): void
}

/** Takes the lock, polling with a growing, jittered pause until `timeoutMs`; rejects at once when `signal` aborts. */
export async function takeLock(plan: TakeLock): Promise<RedisLease> {
  const { key, redisKey, ttlMs, commands, options } = plan
  const deadline = Date.now() + (options.timeoutMs ?? 30_000)
  const token = randomBytes(16).toString('hex')
  let pollMs = POLL_MIN_MS
  let sentAt: number
  for (;;) {
    if (options.signal?.aborted) throw options.signal.reason
    sentAt = Date.now()
    if (await commands.tryTake(redisKey, token, ttlMs)) break
    const remaining = deadline - Date.now()
    if (remaining <= 0) throw new ERR_LOCK_TIMEOUT(key)
    await pause(Math.min(remaining, pollMs * (0.5 + Math.random())), options.signal)
    pollMs = Math.min(POLL_MAX_MS, pollMs * 2)
  }
  // A wait that was aborted just as the lock was taken: give it back rather than hand out a lock nobody wants.
  if (options.signal?.aborted) {
    await commands.evalScript(RELEASE_SCRIPT, redisKey, [token]).catch(() => {})
    throw options.signal.reason
  }
  return leaseOf(plan, token, sentAt)
}

function leaseOf(plan: TakeLock, token: string, takenAt: number): RedisLease {
  const { key, redisKey, ttlMs, commands } = plan
  const lost = new AbortController()
  // When the last extension (or the SET) that succeeded was *sent*: the lease surely runs until this + ttl.
  let confirmedAt = takenAt
  let extending = false
  let ended = false
  let released = false

  const end = (): void => {
    if (ended) return
    ended = true
    clearInterval(timer)
    plan.onEnd(lease)
  }
  const lose = (why: string, cause?: unknown): void => {
    if (lost.signal.aborted) return
    end()
    lost.abort(new ERR_STORAGE(`lock of ${key}`, `lost: ${why}`, cause === undefined ? undefined : { cause }))
  }

  const timer = setInterval(
    () => {
      // Checked even while an extension is pending: past this point Redis may already have let the lock go.
      if (Date.now() - confirmedAt >= ttlMs) return lose(`not extended within its ${ttlMs} ms lease`)
      if (extending) return
      extending = true
      const sentAt = Date.now()
      commands
        .evalScript(EXTEND_SCRIPT, redisKey, [token, String(ttlMs)])
        .then((extended) => {
          if (ended) return
          if (extended === 1) confirmedAt = sentAt
          else lose('the lock expired or was taken by another holder')
        })
        .catch((err: Error) => {
          if (!ended) lose(`its extension failed (${err.message})`, err)
        })
        .finally(() => {
          extending = false
        })
    },
    Math.max(1, Math.floor(ttlMs / 3)),
  )
  timer.unref()

  const lease: RedisLease = {
    lost: lost.signal,
    release: async () => {
      if (released) return
      released = true
      end()
      // Best effort: a lock we cannot delete (Redis unreachable) expires by itself within its TTL, and release()
      // runs in `finally` blocks where an error would hide the outcome that matters.
      await commands.evalScript(RELEASE_SCRIPT, redisKey, [token]).catch(() => {})
    },
    abandon: (reason: Error) => {
      if (lost.signal.aborted) return end()
      end()
      lost.abort(reason)
    },
  }
  return lease
}
