// Check 19, the soak (not part of the normal test run): `pnpm soak` (SOAK_MINUTES=10 by default, bounded).
// Pebble issues 1-minute certificates and rejects 5% of nonces; the plugin runs in its own process on Pebble's
// TLS-ALPN-01 port with three names and renews each about every 40 s; a steady client load (new connection per
// request, HTTP/1.1, all three names) runs the whole time. Reported: renewals, failed requests, and the app
// process's RSS and open file descriptors at the start (after a one-minute warm-up) and at the end.
// Exit code 0 when every request succeeded, every name renewed, and RSS / fd counts stayed flat.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startPebble } from '@autotls/pebble-harness'
import {
  fdCount,
  figure,
  httpsGet,
  killChild,
  message,
  ROOT,
  rssMb,
  sleep,
  spawnTs,
  tempDir,
} from '../reliability/helpers.js'

const MINUTES = Number(process.env['SOAK_MINUTES'] ?? 10)
const WARMUP_MS = Math.min(60_000, (MINUTES * 60_000) / 5)
const NAMES = ['a.soak.test', 'b.soak.test', 'c.soak.test']
const CLIENTS = 4
/** RSS may move with the allocator; a leak over the run would be far beyond this. */
const RSS_BOUND_MB = 40
const FD_BOUND = 10

async function main(): Promise<number> {
  const started = Date.now()
  const pebble = await startPebble({ certificateValidityPeriod: 60, nonceRejectPercent: 5 })
  const cache = await tempDir('soak')
  const app = spawnTs('test/reliability/fixtures/acme-app.ts')
  const events: Array<{ event: string; payload: { name: string; renewal?: boolean; error?: string } }> = []
  app.on('message', (m: { event?: string; payload?: { name: string } }) => {
    if (m.event) events.push(m as never)
  })
  const shutdown = async () => {
    await killChild(app)
    await pebble.stop()
    await cache.remove()
  }
  try {
    app.send({
      port: pebble.tlsPort,
      folder: join(cache.path, 'cache'),
      names: NAMES,
      directory: pebble.directoryUrl,
      caRoots: pebble.caBundle,
      retryMinMs: 1000,
      retryMaxMs: 5000,
    })
    await message(app, (m: { listening?: number }) => m.listening !== undefined)
    const pid = app.pid!
    // Every name served before the load starts.
    const root = await pebble.issuingRoot()
    const deadline = Date.now() + 60_000
    for (const name of NAMES) {
      for (;;) {
        const ok = await httpsGet(pebble.tlsPort, name, root).then(
          (r) => r.status === 200,
          () => false,
        )
        if (ok) break
        if (Date.now() > deadline) throw new Error(`${name} was never issued`)
        await sleep(250)
      }
    }
    let ok = 0
    let failed = 0
    const errors: string[] = []
    const serials = new Map<string, Set<string>>(NAMES.map((n) => [n, new Set()]))
    let running = true
    const clients = Array.from({ length: CLIENTS }, async (_, i) => {
      let n = i
      while (running) {
        const name = NAMES[n++ % NAMES.length]!
        try {
          const res = await httpsGet(pebble.tlsPort, name, root)
          if (res.status === 200) ok++
          else {
            failed++
            if (errors.length < 20) errors.push(`${name}: status ${res.status}`)
          }
          serials.get(name)!.add(res.cert.serialNumber)
        } catch (err) {
          failed++
          if (errors.length < 20) errors.push(`${name}: ${(err as Error).message}`)
        }
        await sleep(50)
      }
    })
    const samples: Array<{ at: number; rss: number; fds: number }> = []
    const end = started + MINUTES * 60_000
    while (Date.now() < end) {
      await sleep(10_000)
      const sample = { at: Math.round((Date.now() - started) / 1000), rss: await rssMb(pid), fds: await fdCount(pid) }
      samples.push(sample)
      const renewals = events.filter((e) => e.event === 'certificate-issued' && e.payload.renewal).length
      console.log(
        `[soak ${sample.at}s] requests ok ${ok} failed ${failed}, renewals ${renewals}, RSS ${sample.rss.toFixed(1)} MB, fds ${sample.fds}`,
      )
    }
    running = false
    await Promise.all(clients)
    const baseline = samples.find((s) => s.at * 1000 >= WARMUP_MS) ?? samples[0]!
    const last = samples.at(-1)!
    const renewals = events.filter((e) => e.event === 'certificate-issued' && e.payload.renewal)
    const perName = NAMES.map((n) => renewals.filter((e) => e.payload.name === n).length)
    const failedOrders = events.filter((e) => e.event === 'order-failed').length
    const rssGrowth = last.rss - baseline.rss
    const fdGrowth = last.fds - baseline.fds
    const result = {
      minutes: MINUTES,
      requests: { ok, failed, errors },
      renewals: renewals.length,
      renewalsPerName: perName,
      failedOrderAttempts: failedOrders,
      servedSerials: NAMES.map((n) => serials.get(n)!.size),
      rss: { start: baseline.rss, end: last.rss, max: Math.max(...samples.map((s) => s.rss)) },
      fds: { start: baseline.fds, end: last.fds, max: Math.max(...samples.map((s) => s.fds)) },
    }
    await writeFile(join(ROOT, 'test/soak/last-result.json'), `${JSON.stringify(result, null, 2)}\n`)
    figure(
      `check 19 (soak, ${MINUTES} min, 1-minute certificates, 5% nonce rejection, ${CLIENTS} clients): ${renewals.length} renewals ` +
        `(${perName.join('/')} per name, ${failedOrders} failed attempts retried), ${ok} requests ok, ${failed} failed; ` +
        `app RSS ${baseline.rss.toFixed(1)} -> ${last.rss.toFixed(1)} MB (max ${result.rss.max.toFixed(1)}), ` +
        `fds ${baseline.fds} -> ${last.fds} (max ${result.fds.max}), measured from minute ${(baseline.at / 60).toFixed(1)}`,
    )
    const problems: string[] = []
    if (failed > 0) problems.push(`${failed} failed requests: ${errors.join('; ')}`)
    if (perName.some((n) => n === 0)) problems.push('a name was never renewed')
    if (rssGrowth > RSS_BOUND_MB) problems.push(`RSS grew by ${rssGrowth.toFixed(1)} MB`)
    if (fdGrowth > FD_BOUND) problems.push(`fds grew by ${fdGrowth}`)
    for (const p of problems) console.error(`soak: FAILED ${p}`)
    if (problems.length === 0) console.log('soak: OK')
    return problems.length === 0 ? 0 : 1
  } finally {
    await shutdown()
  }
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error('soak: FAILED', err)
    process.exit(1)
  },
)
