// Short-lived certificates with ACME Renewal Information and profiles, against Pebble behind the harness's ACME
// front (Pebble 2.4 has neither): renewals start inside the window the CA served and name the certificate they
// replace; the picked time survives a restart; a window moved into the past renews at the next poll; a refused
// `replaces` is retried once without it; unknown and refused profiles fail with their codes.
import assert from 'node:assert/strict'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import {
  type AcmeFront,
  ariCertId,
  defaultAriWindow,
  type Pebble,
  startAcmeFront,
  startPebble,
} from '@autotls/pebble-harness'
import type { FastifyInstance } from 'fastify'
import type { FastifyAcmeOptions } from '../src/index.js'
import { startApp } from './helpers.js'

async function frontApp(
  pebble: Pebble,
  front: AcmeFront,
  names: string[],
  extra: Partial<FastifyAcmeOptions> = {},
): Promise<FastifyInstance> {
  return startApp({
    port: pebble.tlsPort,
    acme: {
      names,
      directory: front.directoryUrl,
      termsOfServiceAgreed: true,
      caRoots: [front.caBundle],
      cacheDir: await mkdtemp(join(tmpdir(), 'facme-ari-')),
      retryMinMs: 500,
      retryMaxMs: 2000,
      ...extra,
    },
  })
}

describe('ARI with 20 s certificates', () => {
  let pebble: Pebble
  let front: AcmeFront
  before(async () => {
    pebble = await startPebble({ certificateValidityPeriod: 20 })
    front = await startAcmeFront({ upstreamPort: pebble.listenPort, upstreamCa: pebble.caBundle })
  })
  after(async () => {
    await front?.stop()
    await pebble?.stop()
  })

  test('renewals start inside the served window and name the certificate they replace (N >= 20)', async (t) => {
    const names = Array.from({ length: 10 }, (_, i) => `w${i}.ari.test`)
    const starts: Array<{ name: string; at: number }> = []
    const app = await frontApp(pebble, front, names, { profile: 'shortlived' })
    t.after(() => app.close())
    app.acme.on('order-started', (e) => starts.push({ name: e.name, at: Date.now() }))
    // Initial issuance and at least 2 renewals per name.
    const issued = new Map<string, number>()
    await new Promise<void>((resolve) => {
      app.acme.on('certificate-issued', (e) => {
        issued.set(e.name, (issued.get(e.name) ?? 0) + 1)
        if (names.every((n) => (issued.get(n) ?? 0) >= 3)) resolve()
      })
    })
    // Every renewal order: its `replaces` is a certificate the front issued for that name, and the order started
    // inside that certificate's window (the front's default: 2/3 .. 3/4 of the lifetime).
    let checked = 0
    let inside = 0
    const lines: string[] = []
    for (const order of front.orders.filter((o) => o.replaces !== undefined)) {
      const name = order.identifiers[0]!.value
      if (!names.includes(name)) continue
      const old = front.certificates.find((c) => c.certId === order.replaces)
      assert.ok(old, `replaces ${order.replaces} is a certificate the front issued`)
      assert.equal(ariCertId(old.pem), order.replaces)
      const window = defaultAriWindow(old)
      // The start of this name's order after that certificate's issue.
      const start = starts.find((s) => s.name === name && s.at > old.notBefore.getTime() + 1000)
      assert.ok(start, `an order start for ${name}`)
      checked++
      const ok = start.at >= window.start.getTime() - 1000 && start.at <= window.end.getTime() + 1000
      if (ok) inside++
      else
        lines.push(
          `${name}: started ${new Date(start.at).toISOString()} outside ${window.start.toISOString()}..${window.end.toISOString()}`,
        )
      assert.equal(order.profile, 'shortlived')
    }
    console.log(
      `# ARI: ${inside} of ${checked} renewals started inside the window the CA served (1 s tolerance: certificate dates have second precision); every renewal's replaces = the old certificate's CertID; ${front.ariRequests.length} ARI polls`,
    )
    assert.ok(checked >= 20, `${checked} renewals`)
    assert.equal(inside, checked, lines.join('\n'))
    const status = app.acme.status(names[0]!)
    assert.equal(status?.nextAction?.source, 'ari')
    assert.ok(status?.renewalInfo?.window.start)
  })

  test('alreadyReplaced: one order again without replaces, the certificate obtained, no loop', async (t) => {
    const name = 'replaced.ari.test'
    const app = await frontApp(pebble, front, [name])
    t.after(() => app.close())
    await app.acme.waitForCertificate(name)
    front.rejectReplaces({ type: 'alreadyReplaced', times: 1 })
    const before = front.orders.length
    const renewed = await app.acme.issue(name)
    const orders = front.orders.slice(before).filter((o) => o.identifiers[0]?.value === name)
    console.log(
      `# ARI: alreadyReplaced -> ${orders.length} newOrders (${orders.map((o) => `${o.replaces ? 'replaces' : 'no replaces'} ${o.httpStatus}`).join(', ')}), certificate ${renewed.state}`,
    )
    assert.equal(renewed.state, 'valid')
    assert.equal(orders.length, 2)
    assert.equal(orders[0]?.problem, 'urn:ietf:params:acme:error:alreadyReplaced')
    assert.ok(orders[0]?.replaces)
    assert.equal(orders[1]?.replaces, undefined)
  })

  test('an unknown profile is never sent; a profile the CA refuses is FACME_INVALID_PROFILE', async (t) => {
    const name = 'profile.ari.test'
    const logLines: string[] = []
    const app = await startApp({
      port: pebble.tlsPort,
      logLines,
      acme: {
        names: [name],
        directory: front.directoryUrl,
        termsOfServiceAgreed: true,
        caRoots: [front.caBundle],
        cacheDir: await mkdtemp(join(tmpdir(), 'facme-ari-')),
        profile: 'tlsserver',
        issueOnStart: false,
      },
    })
    // Reported once the server listens, before any order.
    while (!logLines.some((l) => l.includes('FACME_UNKNOWN_PROFILE'))) await new Promise((r) => setTimeout(r, 20))
    const before = front.orders.length
    await assert.rejects(app.acme.issue(name), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'FACME_UNKNOWN_PROFILE')
      assert.match(err.message, /classic, shortlived/)
      return true
    })
    assert.equal(front.orders.length, before, 'nothing sent')
    await app.close()
    const other = await frontApp(pebble, front, ['profile2.ari.test'], { profile: 'shortlived', issueOnStart: false })
    t.after(() => other.close())
    front.inject({
      method: 'POST',
      path: /^\/order-plz/,
      status: 400,
      body: { type: 'urn:ietf:params:acme:error:invalidProfile', detail: 'not for you', status: 400 },
      times: 1,
    })
    await assert.rejects(other.acme.issue('profile2.ari.test'), { code: 'FACME_INVALID_PROFILE' })
  })
})

describe('ARI with 1-hour certificates', () => {
  test('the picked time survives a restart; a window moved into the past renews at the next poll', async (t) => {
    const pebble = await startPebble({ certificateValidityPeriod: 3600 })
    t.after(() => pebble.stop())
    // One poll a minute (the shortest Retry-After the plugin honours).
    const front = await startAcmeFront({
      upstreamPort: pebble.listenPort,
      upstreamCa: pebble.caBundle,
      ariRetryAfterSeconds: 60,
    })
    t.after(() => front.stop())
    const name = 'restart.ari.test'
    const cacheDir = await mkdtemp(join(tmpdir(), 'facme-ari-restart-'))
    const options = {
      names: [name],
      directory: front.directoryUrl,
      termsOfServiceAgreed: true as const,
      caRoots: [front.caBundle],
      cacheDir,
    }
    const app = await startApp({ port: pebble.tlsPort, acme: options })
    await app.acme.waitForCertificate(name)
    const until = async (a: FastifyInstance, what: () => boolean) => {
      while (!what()) await new Promise((r) => setTimeout(r, 50))
      return a.acme.status(name)!
    }
    const first = await until(app, () => app.acme.status(name)?.renewalInfo !== undefined)
    await app.close()
    const polls = front.ariRequests.length
    const again = await startApp({ port: pebble.tlsPort, acme: options })
    t.after(() => again.close())
    const restarted = again.acme.status(name)!
    console.log(
      `# ARI: picked ${first.renewalInfo?.selectedAt} in ${first.renewalInfo?.window.start}..${first.renewalInfo?.window.end}; after a restart: ${restarted.renewalInfo?.selectedAt} (${front.ariRequests.length - polls} polls at start)`,
    )
    assert.deepEqual(restarted.renewalInfo, first.renewalInfo)
    assert.equal(restarted.nextAction?.at, first.renewalInfo?.selectedAt)
    // The CA asks for an early renewal: the window moves into the past.
    const serial = restarted.serial!
    const moved = Date.now()
    front.renewNow(serial.toLowerCase().replace(/^0+/, ''))
    const renewed = await new Promise<{ serial: string }>((resolve) => again.acme.once('certificate-issued', resolve))
    const seconds = (Date.now() - moved) / 1000
    console.log(
      `# ARI: window moved into the past -> new certificate served ${seconds.toFixed(1)} s later (poll interval 60 s)`,
    )
    assert.notEqual(renewed.serial, serial)
    const replacing = front.orders.at(-1)
    assert.equal(
      replacing?.replaces,
      front.certificates.find((c) => c.serial === serial.toLowerCase().replace(/^0+/, ''))?.certId,
    )
  })
})
