// Three instances of an app on one Redis behind a round-robin balancer, Pebble validating through that balancer
// (so a validation lands on any instance), 10 names, 20 s certificates: the initial issuance and 3 renewal rounds.
// Exactly one order per name per round, every instance serves every new certificate within 1 s of its issuance
// (event times, each checked by a handshake on the instance's own port), and no client request through the
// balancer fails during the whole run.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { countOrders } from '@autotls/pebble-harness'
import { type ClientLoadResult, startClientLoad } from './fixtures/client-load.js'
import { servedSerial } from './fixtures/cluster.js'
import { startRig } from './fixtures/rig.js'
import { ServedSerials } from './fixtures/serials.js'

const INSTANCES = 3
const NAMES = Array.from({ length: 10 }, (_, i) => `n${i}.rounds.cluster.test`)
const VALIDITY_S = 20
const RENEWAL_ROUNDS = 3
const PROPAGATION_MS = 1_000
/** A second serial of a name sooner than this after the previous one is a second order in the same round. */
const SAME_ROUND_MS = (VALIDITY_S * 1000) / 4

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN

test(`${INSTANCES} instances, ${NAMES.length} names, ${VALIDITY_S} s certificates, issuance + ${RENEWAL_ROUNDS} renewal rounds`, async (t) => {
  const rig = await startRig({ certificateValidityPeriod: VALIDITY_S })
  t.after(() => rig.stop())
  const { cluster, pebble, root } = rig
  const ordersBefore = countOrders(pebble)
  const started = Date.now()
  const instances = await rig.startInstances(INSTANCES, {
    names: NAMES,
    storage: { lockTtlMs: 5_000 },
    acme: { retryMinMs: 500, retryMaxMs: 2_000 },
  })
  const ids = instances.map((i) => i.id)
  const served = new ServedSerials(cluster, { instances: () => instances, root })

  // Initial issuance: every instance serves every name (by its events, then by a handshake on its own port).
  await cluster.until(
    () => NAMES.every((name) => ids.every((id) => served.serves(id, name) !== undefined)),
    90_000,
    'every instance serves every name',
  )
  for (const instance of instances)
    for (const name of NAMES) {
      assert.equal(await servedSerial(instance.httpsPort, name, root), served.serves(instance.id, name))
    }
  const initialMs = Date.now() - started

  // From here on, clients go through the balancer without pause until the last round is served everywhere.
  const load = startClientLoad({ port: rig.tls.port, names: NAMES, ca: root })
  const rounds = 1 + RENEWAL_ROUNDS
  let client: ClientLoadResult
  try {
    await cluster.until(
      () =>
        NAMES.every((name) => {
          const issued = served.of(name)
          const last = issued[rounds - 1]
          return last !== undefined && ids.every((id) => served.servingSince(id, last.serial) !== undefined)
        }),
      (RENEWAL_ROUNDS + 2) * VALIDITY_S * 1000,
      `${rounds} certificates per name, each served by every instance`,
    )
  } finally {
    client = await load.stop()
  }
  // Counted between orders: every order started so far has its certificate (or its failure).
  const settled = (e: { event: string }) => e.event === 'certificate-issued' || e.event === 'order-failed'
  await cluster.until(
    () => cluster.events.filter((e) => e.event === 'order-started').length === cluster.events.filter(settled).length,
    VALIDITY_S * 1000,
    'no order in flight',
  )
  await served.settled()
  const ordersAtPebble = countOrders(pebble) - ordersBefore

  // Only the first `rounds` issuances of each name are judged; a name issued early may already be one round ahead.
  const judged = NAMES.flatMap((name) => served.of(name).slice(0, rounds))
  const sameRound = NAMES.flatMap((name) =>
    served
      .of(name)
      .slice(1)
      .map((issuance, i) => ({ issuance, gap: issuance.at - served.of(name)[i]!.at }))
      .filter(({ gap }) => gap < SAME_ROUND_MS)
      .map(({ issuance, gap }) => `${name} ${issuance.serial} ${gap} ms after the previous one`),
  )
  const orderStarts = cluster.events.filter((e) => e.event === 'order-started')
  const failedOrders = cluster.events.filter((e) => e.event === 'order-failed')
  const issuedTotal = served.issuances.length
  const lags = served.lags(ids, judged)
  const missing = lags.filter((l) => l === undefined).length
  const known = lags.filter((l): l is number => l !== undefined)
  const late = known.filter((l) => l > PROPAGATION_MS)
  const perInstance = ids.map(
    (id) => `${id} ${rig.tls.connections.get(instances.find((i) => i.id === id)!.httpsPort) ?? 0}`,
  )

  t.diagnostic(`initial issuance of ${NAMES.length} names served by all ${INSTANCES} instances after ${initialMs} ms`)
  t.diagnostic(
    `orders at Pebble ${ordersAtPebble} for ${issuedTotal} certificates issued (${NAMES.length} names, >= ${rounds} rounds each): ` +
      `orders per name per round ${(ordersAtPebble / issuedTotal).toFixed(2)}; order-started events ${orderStarts.length}, order-failed ${failedOrders.length}, second orders within a round ${sameRound.length}`,
  )
  t.diagnostic(
    `propagation of ${judged.length} certificates to the ${INSTANCES - 1} other instances: median ${median(known)} ms, max ${Math.max(...known)} ms, over ${PROPAGATION_MS} ms ${late.length}, never ${missing}; ` +
      `handshakes matching the event ${served.handshakesMatching}, mismatching ${served.handshakeMismatches.length}`,
  )
  t.diagnostic(
    `clients through the balancer: ${client.ok} ok, ${client.failed} failed in ${(client.durationMs / 1000).toFixed(1)} s (per instance ${JSON.stringify(client.byInstance)}); ` +
      `balancer connections per instance (validations + clients) ${perInstance.join(', ')}`,
  )

  assert.deepEqual(client.failures, [], 'no client request through the balancer fails')
  assert.deepEqual(sameRound, [], 'one order per name per round')
  assert.equal(ordersAtPebble, issuedTotal, 'every order at the CA gave one certificate: none failed or repeated')
  for (const name of NAMES) {
    const issued = served.of(name)
    assert.equal(new Set(issued.map((i) => i.serial)).size, issued.length, `${name}: each serial issued once`)
    assert.equal(
      orderStarts.filter((e) => e.name === name).length,
      issued.length,
      `${name}: one order started per certificate issued`,
    )
  }
  assert.equal(failedOrders.length, 0, 'no order failed')
  assert.equal(missing, 0, 'every instance served every certificate')
  assert.deepEqual(late, [], `every instance served every certificate within ${PROPAGATION_MS} ms of its issuance`)
  assert.deepEqual(served.handshakeMismatches, [], 'each serving event is what a handshake on that instance shows')
})
