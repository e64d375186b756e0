// Public entry of @autotls/storage-redis: the Redis storage for @autotls/fastify-acme and its options.
export { EXTEND_SCRIPT, RELEASE_SCRIPT } from './lock.js'
export {
  type AnyRedisClient,
  DEFAULT_COMMAND_TIMEOUT_MS,
  DEFAULT_LOCK_TTL_MS,
  DEFAULT_PREFIX,
  type RedisStorageOptions,
} from './options.js'
export { RedisStorage } from './storage.js'
