// The server of the handshake-cost runs: Fastify on acmeServerFactory() with the fastify-acme plugin managing N names
// whose certificates are cached in a FileStorage store (issueOnStart: false: the CA is never contacted), i.e. the
// TLS path of proxy-preset without the proxying. A plain-HTTP control port answers:
//   GET /stats              RSS and heap after a full GC, resolver counters
//   GET /check              the plugin's background-check summary once it has finished, else null
//   GET /prewarm?count=W    builds the secure contexts of names n0..n(W-1) now (as their first handshakes would)
//   GET /peek?on=1|0        a TLS-ALPN-01 challenge pending for an unrelated name (every connection is peeked) or not
// Prints one JSON line on stderr when serving: how long loading the store took, measured inside the process.
//
// --load=plugin (default) loads through the plugin (manager.load(): storage read, seal check, status, resolver; the
// full check of each pair runs in the background after listening, reported by /stats as `check` when done);
// --load=storage reads the same FileStorage records and installs them lazily in the resolver with nothing else
// (the floor: what reading the files alone costs).
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseArgs } from 'node:util'
import { acmeServerFactory, FileStorage, fastifyAcme } from '@autotls/fastify-acme'
import { type CertificateRecord, directoryKey, wiringOf } from '@autotls/fastify-acme/internal'
import Fastify from 'fastify'

const { values } = parseArgs({
  options: {
    port: { type: 'string' },
    control: { type: 'string' },
    store: { type: 'string' },
    directory: { type: 'string' },
    names: { type: 'string' },
    suffix: { type: 'string' },
    load: { type: 'string', default: 'plugin' },
    logger: { type: 'string', default: 'info' },
  },
})
const count = Number(values.names)
const names = Array.from({ length: count }, (_, i) => `n${i}.${values.suffix}`)
const storage = new FileStorage(values.store!)

// Everything from here to listening counts as loading (module imports and Node's own start-up do not).
const started = performance.now()
// The plugin's summary of its background check, caught from its log line.
let check: unknown = null
const app = Fastify({
  logger:
    values.logger === 'false'
      ? false
      : {
          level: values.logger ?? 'info',
          stream: {
            write(line: string) {
              if (line.includes('cached certificates checked')) check = JSON.parse(line)
              process.stdout.write(line)
            },
          },
        },
  serverFactory: acmeServerFactory(),
  // Fastify's default (10 s) is shorter than loading ~4,000+ cached names through the plugin on this machine;
  // start-up time is what is measured here, so no limit.
  pluginTimeout: 0,
})
const wiring = wiringOf(app.server)!
const resolver = wiring.resolver
if (values.load === 'plugin') {
  await app.register(fastifyAcme, {
    names,
    directory: values.directory!,
    termsOfServiceAgreed: true,
    storage,
    issueOnStart: false,
  })
} else {
  const dir = directoryKey(values.directory!)
  // 256 reads in flight: all at once would run out of file descriptors (EMFILE) past ~20,000 names.
  for (let i = 0; i < names.length; i += 256) {
    await Promise.all(
      names.slice(i, i + 256).map(async (name) => {
        const raw = await storage.get(`${dir}/certificates/${name}.json`)
        if (!raw) return
        const record = JSON.parse(raw.toString('utf8')) as CertificateRecord
        resolver.setLazy(name, { key: record.keyPem, cert: record.chainPem })
      }),
    )
  }
}
app.get('/', async () => 'ok')
await app.listen({ host: '127.0.0.1', port: Number(values.port) })
const loadedMs = performance.now() - started

const gc = (globalThis as { gc?: () => void }).gc
let challengeSet = false
const control = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://control')
  const reply = (body: unknown): void => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(body))
  }
  if (url.pathname === '/stats') {
    gc?.()
    gc?.()
    const mem = process.memoryUsage()
    reply({
      rss: mem.rss,
      heapUsed: mem.heapUsed,
      external: mem.external,
      resolver: resolver.stats,
      size: resolver.size,
      check,
    })
  } else if (url.pathname === '/check') {
    // No GC here (unlike /stats): polled while the plugin's background check runs, which yields to a busy loop.
    reply({ check })
  } else if (url.pathname === '/prewarm') {
    const upTo = Math.min(Number(url.searchParams.get('count') ?? count), count)
    const t = performance.now()
    for (let i = 0; i < upTo; i++) resolver.lookup(names[i]!)
    reply({ built: upTo, ms: performance.now() - t })
  } else if (url.pathname === '/peek') {
    const on = url.searchParams.get('on') === '1'
    const pair = resolver.get(names[0]!)
    if (on && pair && !challengeSet) resolver.setChallenge('pending.peek.bench.test', pair)
    if (!on && challengeSet) resolver.deleteChallenge('pending.peek.bench.test')
    challengeSet = on && pair !== undefined
    reply({ peek: resolver.challengesPending, stats: wiring.responder.stats })
  } else {
    res.statusCode = 404
    res.end()
  }
})
control.listen(Number(values.control ?? 0), '127.0.0.1', () => {
  const port = (control.address() as AddressInfo).port
  // On stderr: stdout carries the logger's lines (to /dev/null in the benchmark).
  console.error(
    JSON.stringify({
      ready: true,
      control: port,
      loadedMs,
      sinceProcessStartMs: performance.now(),
      size: resolver.size,
    }),
  )
})
process.once('SIGTERM', () => {
  control.close()
  void app.close().then(() => process.exit(0))
})
