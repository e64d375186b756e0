// Redis down at start: an instance restarted while Redis is dead serves the certificates it had from its local
// read-through copy (RedisStorage `localCopy`), orders nothing, and once Redis is back, empty, what the instance
// holds is written back (re-seeded): a new instance without a copy then loads the same certificates from Redis.
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { countOrders } from '@autotls/pebble-harness'
import { RedisStorage } from '../src/index.js'
import { servedSerial } from './fixtures/cluster.js'
import { startRig } from './fixtures/rig.js'
import { ServedSerials } from './fixtures/serials.js'

const NAMES = ['a.copy.cluster.test', 'b.copy.cluster.test', 'c.copy.cluster.test']

test('Redis down at start: served from the local copy, no order; Redis back empty: re-seeded', async (t) => {
  const rig = await startRig({})
  const copy = await mkdtemp(join(tmpdir(), 'autotls-local-copy-'))
  t.after(async () => {
    await rig.stop()
    await rm(copy, { recursive: true, force: true })
  })
  const { cluster, pebble, redis, root } = rig
  const served = new ServedSerials(cluster)
  const options = { names: NAMES, storage: { lockTtlMs: 5_000, localCopy: copy } }

  const [first] = await rig.startInstances(1, options)
  await cluster.until(() => NAMES.every((n) => served.serves(first!.id, n) !== undefined), 60_000, 'issued')
  const serials = NAMES.map((n) => served.serves(first!.id, n)!)
  await first!.stop()
  await redis.kill()

  // The same machine's instance comes back while Redis is still dead.
  const ordersBefore = countOrders(pebble)
  const startedAt = Date.now()
  const [restarted] = await rig.startInstances(1, options)
  const listeningMs = Date.now() - startedAt
  for (const [i, name] of NAMES.entries())
    assert.equal(await servedSerial(restarted!.httpsPort, name, root), serials[i], `${name} served from the copy`)
  const whileDown = cluster.events.filter((e) => e.id === restarted!.id && e.event !== 'listening')

  t.diagnostic(
    `restart with Redis down: listening after ${listeningMs} ms, ${NAMES.length} names served from the local copy, events ${whileDown.map((e) => e.event).join(', ')}`,
  )
  assert.equal(
    whileDown.some((e) => e.event === 'order-started' || e.event === 'order-failed'),
    false,
    'nothing ordered while Redis is down',
  )

  // Redis returns with nothing in it; the running instance puts back what it holds. Read from Redis itself until
  // every certificate is there again.
  await redis.restart()
  const backAt = Date.now()
  const reader = new RedisStorage({ url: redis.url, prefix: rig.prefix })
  t.after(() => reader.close())
  const reseeded = async () => {
    const stored = await reader.list('')
    return NAMES.every((n) => stored.some((key) => key.endsWith(`/certificates/${n}.json`)))
  }
  const deadline = backAt + 15_000
  while (!(await reseeded())) {
    if (Date.now() > deadline) assert.fail(`Redis not re-seeded with the certificates 15 s after it came back`)
    await sleep(100)
  }
  const reseededMs = Date.now() - backAt
  const [fresh] = await rig.startInstances(1, { ...options, storage: { lockTtlMs: 5_000 } })
  await cluster.until(
    () => NAMES.every((n) => served.serves(fresh!.id, n) !== undefined),
    30_000,
    `${fresh!.id} (no copy) serves every name`,
    (e) => e.id === fresh!.id && (e.event === 'order-started' || e.event === 'order-failed'),
  )
  const freshServes = NAMES.map((n) => served.serves(fresh!.id, n))
  const orders = countOrders(pebble) - ordersBefore

  t.diagnostic(
    `Redis back empty: certificates in Redis again after ${reseededMs} ms; a new instance without a copy served all ${NAMES.length} names ${Date.now() - backAt} ms later, ` +
      `by ${[...new Set(cluster.events.filter((e) => e.id === fresh!.id && e.name).map((e) => e.event))].join(', ')}; orders at Pebble since the kill ${orders}`,
  )
  assert.deepEqual(freshServes, serials, 'the new instance got the same certificates: Redis was re-seeded')
  assert.equal(orders, 0, 'no order at the CA after the first issuance')
})
