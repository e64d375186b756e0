// The instance holding a name's order lock is SIGKILLed mid-order (after 'order-started', before its certificate):
// its lease runs out (lockTtlMs 5 s), the other instance takes the lock, resumes or replaces the order, and the name
// is served within lease + 10 s of the kill. A replacement instance started afterwards loads the same certificate
// from Redis and orders nothing: one certificate per name in use, everywhere.
//
// Three instances behind the balancer: after the kill, validations of the survivor's order land on either live
// instance (shared challenges), and the balancer skips the dead one.
import assert from 'node:assert/strict'
import { test } from 'node:test'
import { countOrders } from '@autotls/pebble-harness'
import { servedSerial } from './fixtures/cluster.js'
import { startRig } from './fixtures/rig.js'
import { ServedSerials } from './fixtures/serials.js'

const NAMES = ['a.kill.cluster.test', 'b.kill.cluster.test', 'c.kill.cluster.test']
const LOCK_TTL_MS = 5_000
const DEADLINE_MS = LOCK_TTL_MS + 10_000
const INSTANCES = 3

// Killed right after taking the lock (nothing at the CA yet), and after presenting its challenge (an order at the CA,
// journaled in Redis, possibly being validated).
for (const killOn of ['order-started', 'challenge-presented'] as const)
  test(`SIGKILL of the lock holder on its '${killOn}': the other instance finishes within lease + 10 s, one certificate in use`, async (t) => {
    const rig = await startRig({})
    t.after(() => rig.stop())
    const { cluster, pebble, root } = rig
    const options = {
      names: NAMES,
      storage: { lockTtlMs: LOCK_TTL_MS },
      acme: { retryMinMs: 500, retryMaxMs: 2_000 },
    }
    const ordersBefore = countOrders(pebble)
    // The first instance to reach `killOn` holds that name's lock; the kill follows the event with no delay of ours
    // (the other instances may still be starting).
    let ordersAtKill = 0
    let killedAt = 0
    const first = cluster
      .next((e) => e.event === killOn, 60_000, `a first ${killOn}`)
      .then(async (e) => {
        await cluster.waitFor((l) => l.id === e.id && l.event === 'listening', 10_000, `${e.id} listening`)
        await cluster.instances.find((i) => i.id === e.id)!.kill()
        killedAt = Date.now()
        ordersAtKill = countOrders(pebble) - ordersBefore
        return e
      })
    const instances = await rig.startInstances(INSTANCES, options)
    const started = await first
    const victim = instances.find((i) => i.id === started.id)!
    const survivors = instances.filter((i) => i !== victim)
    const survivorIds = survivors.map((i) => i.id)
    const served = new ServedSerials(cluster)
    // Names the victim was ordering when it died: an order-started of its own and no certificate of its own.
    const interrupted = NAMES.filter((name) => {
      const own = cluster.events.filter((e) => e.id === victim.id && e.name === name)
      return own.some((e) => e.event === 'order-started') && !own.some((e) => e.event === 'certificate-issued')
    })
    assert.ok(interrupted.includes(started.name!), `the victim died with its order in flight\n${cluster.describe()}`)

    await cluster.until(
      () => NAMES.every((name) => survivorIds.every((id) => served.serves(id, name) !== undefined)),
      DEADLINE_MS + 20_000,
      `${survivorIds.join(', ')} serve every name`,
      // A failed attempt on the way is allowed: the deadline is what counts.
      () => false,
    )
    const finishedMs = Math.max(
      ...interrupted.map((name) => (served.of(name).at(-1)?.at ?? Number.POSITIVE_INFINITY) - killedAt),
    )
    const finishers = interrupted.map((name) => served.of(name).at(-1)?.id)

    // A new instance in place of the dead one: it finds every certificate in Redis.
    const ordersBeforeReplacement = countOrders(pebble)
    const [replacement] = await rig.startInstances(1, options)
    await cluster.until(
      () => NAMES.every((name) => served.serves(replacement!.id, name) !== undefined),
      30_000,
      `${replacement!.id} serves every name`,
    )
    const inUse = new Map<string, Set<string>>()
    for (const name of NAMES) {
      const serials = new Set<string>()
      for (const instance of [...survivors, replacement!])
        serials.add(await servedSerial(instance.httpsPort, name, root))
      inUse.set(name, serials)
    }
    const duplicates = [...inUse.values()].filter((s) => s.size > 1).length
    const issuedTwice = NAMES.filter((name) => served.of(name).length > 1)
    const ordersAtPebble = countOrders(pebble) - ordersBefore
    const replacementEvents = cluster.events.filter((e) => e.id === replacement!.id).map((e) => e.event)

    t.diagnostic(
      `${victim.id} SIGKILLed on its '${killOn}' for ${started.name} (lockTtlMs ${LOCK_TTL_MS}); ${interrupted.length} name(s) in flight there, ` +
        `finished by ${[...new Set(finishers)].join(', ')} ${finishedMs} ms after the kill (deadline ${DEADLINE_MS} ms)`,
    )
    t.diagnostic(
      `orders at Pebble ${ordersAtPebble} for ${NAMES.length} names (${ordersAtKill} when the kill came), order-failed ${cluster.events.filter((e) => e.event === 'order-failed').length}; ` +
        `replacement instance: ${countOrders(pebble) - ordersBeforeReplacement} orders, events ${replacementEvents.filter((e) => e !== 'listening').join(', ')}; ` +
        `certificates in use per name ${[...inUse.values()].map((s) => s.size).join(', ')} (duplicates ${duplicates}), names issued twice ${issuedTwice.length}`,
    )

    assert.ok(finishedMs <= DEADLINE_MS, `finished ${finishedMs} ms after the kill, more than lease + 10 s`)
    assert.ok(
      finishers.every((id) => id !== undefined && survivorIds.includes(id)),
      `a survivor ordered what the victim left (${finishers.join(', ')})`,
    )
    assert.equal(countOrders(pebble) - ordersBeforeReplacement, 0, 'the replacement ordered nothing')
    assert.equal(duplicates, 0, 'all instances serve one certificate per name')
    assert.deepEqual(issuedTwice, [], 'one certificate issued per name')
    for (const name of NAMES)
      assert.equal([...inUse.get(name)!][0], served.of(name).at(-1)!.serial, `${name}: the last certificate issued`)
  })
