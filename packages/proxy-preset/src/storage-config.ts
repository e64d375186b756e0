// `acme.storage` as a configuration file can write it: `{ redis: { url, prefix?, lockTtlMs?, commandTimeoutMs?,
// localCopy? } }` becomes a RedisStorage (@autotls/storage-redis), made once per process and kept across reloads
// (changing the storage needs a restart, as with code). In code, `acme.storage` is a Storage object and is left as is.
import type { Storage } from '@autotls/fastify-acme'
import { ERR_INVALID_OPTIONS } from './errors.js'
import type { ProxyOptions } from './options.js'

const REDIS_FIELDS = new Set(['url', 'prefix', 'lockTtlMs', 'commandTimeoutMs', 'localCopy'])

function isStorageObject(value: unknown): value is Storage {
  return typeof (value as { get?: unknown })?.get === 'function'
}

export interface ConfiguredStorage {
  /** The options with `acme.storage` replaced by the store it describes. */
  apply(options: ProxyOptions): ProxyOptions
  /** Closes the store made here (after the proxy closed). */
  close(): Promise<void>
}

/**
 * Reads `acme.storage` of options from a file. Throws FPROXY_INVALID_OPTIONS naming `acme.storage` for anything but
 * `{ redis: {...} }` with known fields; the Redis options themselves are checked by RedisStorage.
 */
export async function configuredStorage(options: ProxyOptions): Promise<ConfiguredStorage | undefined> {
  const described = (options.acme as { storage?: unknown } | undefined)?.storage
  if (described === undefined || isStorageObject(described)) return undefined
  const redis = (described as { redis?: unknown } | null)?.redis
  const keys = described !== null && typeof described === 'object' ? Object.keys(described) : []
  if (keys.length !== 1 || keys[0] !== 'redis' || redis === null || typeof redis !== 'object') {
    throw new ERR_INVALID_OPTIONS(
      'acme.storage: a configuration file can only describe a Redis storage: storage: { redis: { url: redis://... } }',
    )
  }
  const unknown = Object.keys(redis).filter((k) => !REDIS_FIELDS.has(k))
  if (unknown.length > 0)
    throw new ERR_INVALID_OPTIONS(
      `acme.storage.redis: unknown option ${unknown.join(', ')} (known: ${[...REDIS_FIELDS].join(', ')})`,
    )
  const { RedisStorage } = await import('@autotls/storage-redis')
  const storage = new RedisStorage(redis as ConstructorParameters<typeof RedisStorage>[0])
  return {
    apply: (next) => (next.acme ? { ...next, acme: { ...next.acme, storage } } : next),
    close: () => storage.close(),
  }
}
