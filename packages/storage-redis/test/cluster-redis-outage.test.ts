// Redis dies (SIGKILL) as a renewal round starts and stays down for 30 s, then comes back EMPTY (no persistence):
// three instances behind the balancer keep serving every name (0 failed client requests), count no failure while
// orders pause, and after Redis is back (re-seeded from what the instances hold) every name is renewed once and
// served by every instance. HTTP-01 here (the balancer on pebble.httpPort), TLS-ALPN-01 in cluster-rounds.test.ts.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { countOrders } from '@autotls/pebble-harness'
import { type ClientLoadResult, startClientLoad } from './fixtures/client-load.js'
import { servedSerial } from './fixtures/cluster.js'
import { startRig } from './fixtures/rig.js'
import { ServedSerials } from './fixtures/serials.js'

const INSTANCES = 3
const NAMES = Array.from({ length: 10 }, (_, i) => `n${i}.outage.cluster.test`)
// Renewal when 70% of 75 s remains (22.5 s after issuance, spread over the 3.75 s before): the round starts about
// 20 s in, Redis is back about 30 s later, and the certificates still have some 25 s to live.
const VALIDITY_S = 75
const RENEW_BEFORE_RATIO = 0.7
const OUTAGE_MS = 30_000

test(`Redis killed for ${OUTAGE_MS / 1000} s during a renewal round, back empty: 0 failed requests, every name renewed`, async (t) => {
  const rig = await startRig({ certificateValidityPeriod: VALIDITY_S })
  t.after(() => rig.stop())
  const { cluster, pebble, redis, root } = rig
  const instances = await rig.startInstances(INSTANCES, {
    names: NAMES,
    storage: { lockTtlMs: 5_000 },
    acme: { challenges: ['http-01'], renewBeforeRatio: RENEW_BEFORE_RATIO, retryMinMs: 500, retryMaxMs: 2_000 },
  })
  const ids = instances.map((i) => i.id)
  const served = new ServedSerials(cluster, { instances: () => instances, root })
  await cluster.until(
    () => NAMES.every((name) => ids.every((id) => served.serves(id, name) !== undefined)),
    60_000,
    'every instance serves every name',
  )
  const load = startClientLoad({ port: rig.tls.port, names: NAMES, ca: root })
  let client: ClientLoadResult
  let killedAt = 0
  let backAt = 0
  try {
    // The renewal round begins: Redis goes away under the first renewal order.
    const renewal = await cluster.next(
      (e) => e.event === 'order-started' && e.reason === 'renewal',
      VALIDITY_S * 1000,
      'a renewal order',
    )
    await redis.kill()
    killedAt = Date.now()
    // A deliberate outage length, not a wait for something to happen.
    await sleep(OUTAGE_MS)
    await redis.restart()
    backAt = Date.now()
    t.diagnostic(`Redis SIGKILLed ${killedAt - renewal.at} ms after ${renewal.id}'s renewal order for ${renewal.name}`)
    // Every name: its renewed certificate served by every instance. (An order already at the CA when Redis died
    // may end during the outage; its instance serves it and the others get it once Redis is back.)
    await cluster.until(
      () =>
        NAMES.every((name) => {
          const renewed = served.of(name)[1]
          return renewed !== undefined && ids.every((id) => served.servingSince(id, renewed.serial) !== undefined)
        }),
      VALIDITY_S * 1000 - (Date.now() - killedAt),
      'every name renewed after Redis came back, served by every instance',
    )
  } finally {
    client = await load.stop()
  }
  await served.settled()
  // When the last instance started serving the last renewed name, counted from Redis's return.
  const renewedMs = Math.max(
    ...NAMES.flatMap((name) => ids.map((id) => served.servingSince(id, served.of(name)[1]!.serial)! - backAt)),
  )
  const renewedDuringOutage = NAMES.filter((name) => served.of(name)[1]!.at < backAt).length
  const during = cluster.events.filter((e) => e.at >= killedAt && e.at < backAt)
  const failed = cluster.events.filter((e) => e.event === 'order-failed')
  // Renewals of the round: orders started once the round began, per name.
  const roundStarts = cluster.events.filter((e) => e.event === 'order-started' && e.reason !== 'missing')
  const restarted = NAMES.filter((name) => roundStarts.filter((e) => e.name === name).length > 1).map(
    (name) =>
      `${name}: ${roundStarts
        .filter((e) => e.name === name)
        .map((e) => `${e.id} ${e.reason} ${e.at < killedAt ? 'before' : e.at < backAt ? 'during' : 'after'}`)
        .join(', ')}`,
  )
  for (const instance of instances)
    for (const name of NAMES)
      assert.equal(
        await servedSerial(instance.httpsPort, name, root),
        served.of(name).at(-1)!.serial,
        `${instance.id} serves the renewed ${name}`,
      )

  t.diagnostic(
    `outage ${backAt - killedAt} ms; during it: ${during.filter((e) => e.event === 'order-started').length} orders started, ` +
      `${during.filter((e) => e.event === 'order-failed').length} failed, ${renewedDuringOutage} certificates issued (served by their instance)`,
  )
  t.diagnostic(
    `every name renewed and served by all ${INSTANCES} instances ${renewedMs} ms after Redis came back (empty); ` +
      `orders at Pebble ${countOrders(pebble)} for ${served.issuances.length} certificates (an order abandoned when Redis died counts here), renewal orders started ${roundStarts.length} for ${NAMES.length} names (started again: ${restarted.join('; ') || 'none'}), order-failed ${failed.length}`,
  )
  t.diagnostic(
    `clients through the balancer: ${client.ok} ok, ${client.failed} failed in ${(client.durationMs / 1000).toFixed(1)} s (per instance ${JSON.stringify(client.byInstance)}); ` +
      `handshakes matching the serving event ${served.handshakesMatching}, mismatching ${served.handshakeMismatches.length}`,
  )

  assert.deepEqual(client.failures, [], 'no client request through the balancer fails')
  assert.deepEqual(
    failed.map((e) => `${e.id} ${e.name} ${e.code}`),
    [],
    'orders pause while Redis is away: no failure counted',
  )
  for (const name of NAMES)
    assert.equal(served.of(name).length, 2, `${name}: issued, then renewed once (not again after Redis came back)`)
  assert.deepEqual(served.handshakeMismatches, [], 'each serving event is what a handshake on that instance shows')
})
