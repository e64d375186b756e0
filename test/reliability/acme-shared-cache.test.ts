// Check 3: two processes share one cache folder and manage the same names, with 20-second certificates so that
// they renew during the test. Pebble validates TLS-ALPN-01 on one port, so a relay there sends each validation to
// the process that presented the challenge (by SNI) and everything else to either. Counted per name and round (a
// round = one new certificate): orders sent by both processes together. Expected: exactly one.
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { connect as netConnect, createServer as netCreateServer, type Server } from 'node:net'
import { join } from 'node:path'
import { after, test } from 'node:test'
import { parseClientHello } from '@autotls/fastify-acme/internal'
import { countOrders, type Pebble, startPebble } from '@autotls/pebble-harness'
import { figure, httpsGet, killChild, message, spawnTs, tempDir } from './helpers.js'

const NAMES = ['a.shared.reliability.test', 'b.shared.reliability.test']
const ROUNDS = 3

interface Event {
  event: string
  payload: { name: string; serial?: string; renewal?: boolean; error?: string }
  at: number
}

let pebble: Pebble | undefined
let relay: Server | undefined
const children: ChildProcess[] = []
after(async () => {
  for (const child of children) await killChild(child)
  relay?.close()
  await pebble?.stop()
})

test('check 3: two processes on one cache folder renewing the same names: one order per name per round', async () => {
  pebble = await startPebble({ certificateValidityPeriod: 20 })
  const cache = await tempDir('shared')
  const folder = join(cache.path, 'cache')
  const ports: number[] = []
  /** Which process presented the latest challenge for a name: validations for it go there. */
  const owner = new Map<string, number>()
  const events: Array<Event & { process: number }> = []

  relay = netCreateServer((client) => {
    let buffered = Buffer.alloc(0)
    let routed = false
    client.on('error', () => {})
    client.on('data', (chunk: Buffer) => {
      if (routed) return
      buffered = Buffer.concat([buffered, chunk])
      const hello = parseClientHello(buffered)
      if (hello.kind === 'need-more') return
      routed = true
      client.pause()
      const name = hello.kind === 'hello' ? hello.info.serverName?.toLowerCase() : undefined
      const target = ports[(name !== undefined ? owner.get(name) : undefined) ?? 0]
      if (target === undefined) {
        client.destroy()
        return
      }
      const upstream = netConnect(target, '127.0.0.1', () => {
        upstream.write(buffered)
        client.removeAllListeners('data')
        client.pipe(upstream)
        upstream.pipe(client)
        client.resume()
      })
      upstream.on('error', () => client.destroy())
      client.on('close', () => upstream.destroy())
    })
  })
  await new Promise<void>((resolve) => relay!.listen(pebble!.tlsPort, '127.0.0.1', resolve))

  for (let i = 0; i < 2; i++) {
    const child = spawnTs('test/reliability/fixtures/acme-app.ts')
    children.push(child)
    child.on('message', (m: Event) => {
      if (!m.event) return
      events.push({ ...m, process: i })
      if (m.event === 'challenge-presented') owner.set(m.payload.name, i)
    })
  }
  // Both start together on the empty folder: the first round is the initial issuance.
  const listening = children.map((child) => message<{ listening: number }>(child, (m) => m.listening !== undefined))
  for (const child of children) {
    child.send({
      port: 0,
      folder,
      names: NAMES,
      directory: pebble.directoryUrl,
      caRoots: pebble.caBundle,
      renewBeforeRatio: 0.5,
      retryMinMs: 500,
      retryMaxMs: 2000,
    })
  }
  // Each port is known as soon as its process says so: a validation for a name that process presented may come
  // before the other process listens.
  await Promise.all(listening.map((l, i) => l.then((m) => (ports[i] = m.listening))))

  const serials = (name: string) =>
    new Set(
      events.filter((e) => e.event === 'certificate-issued' && e.payload.name === name).map((e) => e.payload.serial),
    )
  const deadline = Date.now() + 90_000
  while (!NAMES.every((n) => serials(n).size >= ROUNDS)) {
    assert.ok(
      Date.now() < deadline,
      `rounds not reached: ${JSON.stringify(events.map((e) => [e.process, e.event, e.payload.name]))}`,
    )
    await new Promise((r) => setTimeout(r, 200))
  }
  // A late duplicate would come from the process that did not issue a name's newest certificate: it orders when its
  // own renewal comes due unless it finds the newer certificate in the shared folder first, and only then does it
  // serve that certificate. So wait until both processes serve the same certificate for every name with no order in
  // flight: each has then passed its decision for the current round, and the events are counted at that point.
  const root = await pebble.issuingRoot()
  const inFlight = (seen: typeof events) =>
    seen.filter((e) => e.event === 'order-started').length -
    seen.filter((e) => e.event === 'certificate-issued' || e.event === 'order-failed').length
  const settleBy = Date.now() + 60_000
  let counted: typeof events
  for (;;) {
    const served = await Promise.all(
      NAMES.map(async (n) => {
        const replies = await Promise.all(ports.map((p) => httpsGet(p, n, root)))
        for (const r of replies) assert.equal(r.status, 200)
        return new Set(replies.map((r) => r.cert.serialNumber)).size === 1
      }),
    )
    const snapshot = events.slice()
    if (served.every(Boolean) && inFlight(snapshot) === 0) {
      counted = snapshot
      break
    }
    assert.ok(Date.now() < settleBy, `the processes never agreed on every name's certificate: ${served.join(',')}`)
    await new Promise((r) => setTimeout(r, 200))
  }
  for (const child of children) child.kill('SIGKILL')
  events.splice(0, events.length, ...counted)

  const perName = NAMES.map((name) => {
    const orders = events.filter((e) => e.event === 'order-started' && e.payload.name === name)
    const failed = events.filter((e) => e.event === 'order-failed' && e.payload.name === name)
    return {
      name,
      orders: orders.length,
      rounds: serials(name).size,
      failed: failed.length,
      by: orders.map((o) => o.process),
    }
  })
  const totalRounds = perName.reduce((a, r) => a + r.rounds, 0)
  const totalOrders = countOrders(pebble)
  figure(
    `check 3: 2 processes, 1 cache folder, ${NAMES.length} names, 20 s certificates: ` +
      perName
        .map((r) => `${r.name.split('.')[0]}: ${r.orders} orders for ${r.rounds} rounds (by process ${r.by.join(',')})`)
        .join('; ') +
      `; Pebble received ${totalOrders} orders for ${totalRounds} certificates = ${(totalOrders / totalRounds).toFixed(2)} per name per round; ` +
      `${perName.reduce((a, r) => a + r.failed, 0)} failed attempts`,
  )
  for (const r of perName) assert.equal(r.orders, r.rounds, `${r.name}: ${r.orders} orders for ${r.rounds} rounds`)
  assert.equal(totalOrders, totalRounds)
  await cache.remove()
})
