// RedisStorage against the shared Storage contract (@autotls/fastify-acme/testing), then what is Redis's own: a lease
// that stops being extended is lost, an outage rejects with FACME_STORAGE within a bound and the store recovers
// after a restart, keys stay under the prefix.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import { storageContract } from '@autotls/fastify-acme/testing'
import { type RedisServer, startRedis } from '@autotls/pebble-harness'
import { createClient } from '@redis/client'
import { RedisStorage } from '../src/index.js'

let redis: RedisServer
before(async () => {
  redis = await startRedis()
})
after(() => redis?.stop())

storageContract('RedisStorage', () => {
  // A fresh prefix per case: an empty store on the shared server. Two stores (two clients) stand for two processes.
  const prefix = `t${randomBytes(4).toString('hex')}:`
  const storage = new RedisStorage({ url: redis.url, prefix })
  const peer = new RedisStorage({ url: redis.url, prefix })
  return { storage, peer, close: async () => void (await Promise.all([storage.close(), peer.close()])) }
})
